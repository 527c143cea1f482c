"""``visionzip`` — VisionZip (Yang et al., CVPR 2025, "VisionZip: Longer is Better but Not Necessary in Vision
Language Models"), in its per-frame video form (the LLaVA-OneVision / LLaVA-Video port HoliTom released).

Algorithm, for every frame independently:

1. **Dominant tokens**: the ``d`` tokens that receive the most vision-encoder attention
   (:attr:`VideoTokens.attention`; SigLIP has no CLS token, so "received" is the mean over heads and queries).
2. **Contextual tokens**: the other ``P - d`` tokens, in raster order, give ``c`` *targets* picked by a fixed
   stride (every ``(P - d) // c``-th one, starting with the first — not by score); every remaining token joins the
   target it is most cosine-similar to; the contextual token is ``target + mean(members)``. That is the reference's
   arithmetic: a *sum* of the target and its members' mean, not an average of all of them (a target nobody joins
   stays as it is). A contextual token sits at its target's position and stands for ``1 + members`` tokens;
   all returned features are float32.
3. The frame contributes its ``d`` dominant tokens (unchanged) and ``c`` contextual tokens.

Budget mapping: ``budget`` is spread over the frames as evenly as possible (each frame gets ``floor`` or ``ceil``
of ``budget / T``, the extra tokens to evenly spread frames, like ``uniform``). A frame with ``b`` tokens keeps
``d = int(b * dominant_ratio)`` dominant and ``c = b - d`` contextual tokens — the port's split of its
``SPATIAL_TOKENS`` budget with ``DOMINANT_RATIO = 54/64`` (the paper's 54 + 10 = 64 example; 30 -> 25 + 5). Since
``dominant_ratio < 1``, ``c >= 1``, so every token of a frame is kept or merged. At ``budget == N`` every frame
keeps all its tokens unchanged.

Deviations from the reference code, and why:

* Targets are matched by the cosine of the tokens' **features** (the projected video tokens tokpress sees); the
  reference matches by the vision layer's keys averaged over heads, which the plugin does not capture. The merged
  arithmetic is applied to the same features, as in the port.
* Below one token per frame (``budget < T``) the reference cannot run (it would need ``c = 0``); tokpress groups
  the frames into ``budget`` contiguous chunks (frame ``t`` in chunk ``floor(t * budget / T)``) and summarises each
  chunk into one contextual token (``d = 0``, ``c = 1``: the chunk's first token plus the mean of the others), so
  the count stays exact and every token is still accounted for.
* Ties in attention go to the lower index (stable sort), and in similarity to the earlier target; the reference's
  ``topk`` / ``argmax`` leave ties unspecified.
* Tokens keep their original positions (the engine's convention); the reference re-numbers them contiguously.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import cosine_matrix, group_mean, group_size
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class VisionZipConfig(PolicyConfig):
    """Options of :class:`VisionZipPolicy`."""

    #: share of each frame's budget given to dominant tokens (kept by attention); the rest are contextual
    dominant_ratio: float = 54 / 64

    def validate(self) -> None:
        r = self.dominant_ratio
        self.check(
            not isinstance(r, bool) and isinstance(r, (int, float)) and 0 <= r < 1,
            f"dominant_ratio must be a number in [0, 1), got {r!r} (54/64 is the paper's split; "
            "below 1 so that every frame keeps at least one contextual token)",
        )


def frame_budgets(frames: int, budget: int, device=None) -> torch.Tensor:
    """``[T]`` tokens per frame: ``floor`` or ``ceil`` of ``budget / T``, summing to ``budget``."""
    bounds = torch.div(torch.arange(frames + 1, device=device) * budget, frames, rounding_mode="floor")
    return bounds[1:] - bounds[:-1]


def visionzip_frames(
    x: torch.Tensor, attention: torch.Tensor, dominant: int, contextual: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VisionZip on ``F`` frames at once, all with the same split.

    Args:
        x: ``[F, P, D]`` token features.
        attention: ``[F, P]`` attention received by each token.
        dominant: dominant tokens per frame (``0 <= dominant < P``).
        contextual: contextual tokens per frame (``1 <= contextual <= P - dominant``).

    Returns:
        ``local [F, k]`` kept in-frame indices (dominant first, then the targets; unsorted), ``features [F, k, D]``
        float32 and ``sizes [F, k]`` float32, ``k = dominant + contextual``.
    """
    f, p, dim = x.shape
    order = torch.sort(attention.float(), dim=1, descending=True, stable=True).indices
    dom = order[:, :dominant]  # [F, d]
    is_dom = torch.zeros(f, p, dtype=torch.bool, device=x.device).scatter_(1, dom, True)
    n_rest = p - dominant
    # the non-dominant tokens in raster order: a stable sort puts the False (0) entries first, in index order
    rest = torch.sort(is_dom.to(torch.uint8), dim=1, stable=True).indices[:, :n_rest]  # [F, n_rest]
    step = max(1, n_rest // contextual)
    slots = torch.arange(contextual, device=x.device) * step  # target slots among the rest, all < n_rest
    targets = rest[:, slots]  # [F, c]
    x_rest = torch.gather(x, 1, rest[..., None].expand(-1, -1, dim))  # [F, n_rest, D]
    x_tgt = x_rest[:, slots]  # [F, c, D]
    assign = cosine_matrix(x_rest, x_tgt).argmax(-1)  # [F, n_rest]; argmax picks the earliest target on ties
    member = torch.ones(f, n_rest, device=x.device)
    member[:, slots] = 0  # a target does not join anyone: it is the base the members' mean is added to
    groups = (torch.arange(f, device=x.device)[:, None] * contextual + assign).flatten()
    mean = group_mean(x_rest.reshape(-1, dim), groups, f * contextual, member.flatten())  # zeros when no members
    ctx = x_tgt.float() + mean.view(f, contextual, dim)  # the reference's sum: target + mean(members)
    ctx_sizes = 1 + group_size(groups, f * contextual, member.flatten()).view(f, contextual)
    x_dom = torch.gather(x, 1, dom[..., None].expand(-1, -1, dim)).float()
    local = torch.cat([dom, targets], 1)
    features = torch.cat([x_dom, ctx], 1)
    sizes = torch.cat([torch.ones(f, dominant, device=x.device), ctx_sizes], 1)
    return local, features, sizes


def chunk_plan(x: torch.Tensor, budget: int) -> Plan:
    """``budget < T``: frames ``[T, P, D]`` grouped into ``budget`` contiguous chunks, each summarised into one
    contextual token (``d = 0``, ``c = 1``): the chunk's first token plus the mean of its other tokens."""
    t, p, dim = x.shape
    chunk = torch.div(torch.arange(t, device=x.device) * budget, t, rounding_mode="floor")  # [T], non-decreasing
    starts = torch.searchsorted(chunk, torch.arange(budget, device=x.device)) * p  # first token of each chunk
    groups = chunk.repeat_interleave(p)  # [T * P]
    member = torch.ones(t * p, device=x.device)
    member[starts] = 0
    flat = x.reshape(t * p, dim)
    features = flat[starts].float() + group_mean(flat, groups, budget, member)
    return Plan(starts, features, 1 + group_size(groups, budget, member))


@register_policy("visionzip", stage="outer")
class VisionZipPolicy(OuterPolicy):
    config_cls = VisionZipConfig
    needs_vision_attention = True
    vision_attention = "full"  # the paper averages the whole attention map over queries

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        t, p = g.frames, g.per_frame
        if video.attention is None:
            raise InputError(
                "visionzip needs the vision encoder's attention (VideoTokens.attention), but none was given; "
                "use a model family whose adapter captures vision attention, or another outer policy (e.g. 'uniform')"
            )
        if video.attention.shape != (g.numel,):
            raise InputError(f"visionzip: attention must have shape ({g.numel},), got {tuple(video.attention.shape)}")
        x = video.features.reshape(t, p, -1)
        att = video.attention.to(x.device).reshape(t, p)
        if budget < t:
            return chunk_plan(x, budget)
        counts = frame_budgets(t, budget, x.device)
        index, feats, sizes = [], [], []
        for b in counts.unique().tolist():  # at most two distinct per-frame budgets: each batch runs vectorised
            frame_ids = (counts == b).nonzero().squeeze(1)
            d = int(b * self.config.dominant_ratio)
            local, f, s = visionzip_frames(x[frame_ids], att[frame_ids], d, b - d)
            index.append((frame_ids[:, None] * p + local).flatten())
            feats.append(f.flatten(0, 1))
            sizes.append(s.flatten())
        index = torch.cat(index)
        order = index.argsort()
        return Plan(index[order], torch.cat(feats)[order], torch.cat(sizes)[order])
