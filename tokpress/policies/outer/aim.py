"""``aim`` (outer stage) — AIM (Zhong et al., ICCV 2025, "AIM: Adaptive Inference of Multi-Modal LLMs via Token
Merging and Pruning"), the merge before the LLM.

Algorithm (per frame, never across frames): iterative bipartite soft matching (ToMe) on the LLM-input visual tokens.
A round splits the frame's current tokens alternately into A (even positions) and B (odd positions), gives every
A-token its most cosine-similar B-token (float32), and merges the ``r`` A-tokens with the most similar matches into
their B-token; the merged token's features are the mean of the B-token and the A-tokens merged into it. The
survivors are laid out as the authors' code lays them out — the unmerged A-tokens in decreasing order of their best
similarity, then the B-tokens in order — and the next round splits that layout again. The authors run two rounds,
``r = N / 2`` then ``N / 4``: 25 % kept.

Budget mapping: the video's ``budget`` is split evenly over its ``T`` frames with :func:`tokpress.ops.apportion`
(every frame keeps ``floor`` or ``ceil`` of ``budget / T``; the first ``budget mod T`` frames keep one more; a frame
whose share is 0 is dropped). A frame of ``n`` tokens reaches its share ``t`` in as many rounds as it takes, each
removing at most half of the tokens (``r = min(n - t, floor(n / 2))``, the authors' cap): 196 -> 98 -> 49 at
``retain_ratio = 0.25`` is the authors' default, and their commented-out deeper presets (``r = N/8, N/16, ...``)
are the further halvings. Every merged token keeps the index of the token that survives (a B-token, or an A-token
nothing was merged from) with the merged features (``Plan.features``) and the number of original tokens it stands
for (``Plan.sizes``); ``retain_ratio = 1`` merges nothing.

Size weighting: the authors merge with ``scatter_reduce(..., reduce="mean")`` (``include_self``), i.e. the plain mean
of the B-token and the A-tokens merged into it in that round, whatever each already stands for (ToMe weights by
size). tokpress follows the authors by default; ``size_weighted=True`` gives ToMe's size-weighted mean instead.

Deviations from the reference code (LaVi-Lab/AIM, ``llava/model/token_merge.py``, ``llava_arch.py``):

- Order: the merged tokens enter the LLM at their own original positions (tokpress keeps raster order and original
  positions for every outer policy); the reference feeds them in its round layout. The layout still decides the
  A/B split of the next round, as in the reference.
- Ties: the reference's ``argsort`` leaves the order of equal similarities unspecified; tokpress sorts stably (the
  earlier A-token merges first).
- Precision: features are carried in float32 across rounds and cast back once; the reference merges in the model's
  dtype each round.
- Budget: the reference runs a fixed number of rounds; tokpress runs the rounds that reach the stage's budget, with
  a partial last round when the budget is not a halving of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.ops import apportion
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class AIMOuterConfig(PolicyConfig):
    size_weighted: bool = False
    """Weight each merge by the original tokens the merged tokens stand for (ToMe); False: the authors' plain mean."""

    def validate(self) -> None:
        self.check(
            isinstance(self.size_weighted, bool),
            f"size_weighted must be True or False (False is the authors' plain mean), got {self.size_weighted!r}",
        )


def merge_rounds(n: int, target: int) -> list[int]:
    """Tokens each round merges away to take ``n`` tokens to ``target``, at most ``floor(n / 2)`` per round.

    Example: ``merge_rounds(196, 49) -> [98, 49]`` (the authors' two rounds); ``merge_rounds(196, 20) -> [98, 49,
    24, 5]``; ``merge_rounds(n, n) -> []``.
    """
    if not 1 <= target <= n:
        raise ValueError(f"target must be in [1, {n}], got {target}")
    rounds = []
    while n > target:
        r = min(n - target, n // 2)
        rounds.append(r)
        n -= r
    return rounds


def merge_round(
    x: torch.Tensor, size: torch.Tensor, origin: torch.Tensor, r: int, size_weighted: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One bipartite round on a batch of frames, in the authors' layout.

    Args:
        x: ``[F, n, D]`` float32 features in the current layout (also the similarity metric).
        size: ``[F, n]`` float32 original tokens each token stands for.
        origin: ``[F, n]`` long, each token's original index within its frame.
        r: A-tokens to merge away, ``0 < r <= floor(n / 2)``.
        size_weighted: weight the mean by ``size`` (ToMe) instead of the plain mean (the authors).

    Returns:
        ``x``, ``size``, ``origin`` of the ``n - r`` survivors: the unmerged A-tokens in decreasing order of their
        best similarity, then every B-token in order.
    """
    frames, n, dim = x.shape
    if not 0 < r <= n // 2:
        raise ValueError(f"a round merges 1 .. floor(n / 2) of n = {n} tokens, got r = {r}")
    unit = torch.nn.functional.normalize(x, dim=-1)
    best, match = (unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)).max(dim=-1)  # [F, nA]
    edge = torch.sort(best, dim=-1, descending=True, stable=True).indices
    src, unm = edge[:, :r], edge[:, r:]
    dst = match.gather(1, src)  # [F, r] the B-token each merged A-token goes to
    xa, xb, sa, sb = x[:, ::2], x[:, 1::2], size[:, ::2], size[:, 1::2]
    wa, wb = (sa, sb) if size_weighted else (torch.ones_like(sa), torch.ones_like(sb))
    w_src = wa.gather(1, src)
    moved = xa.gather(1, src[..., None].expand(-1, -1, dim)) * w_src[..., None]
    total = (xb * wb[..., None]).scatter_add(1, dst[..., None].expand(-1, -1, dim), moved)
    weight = wb.scatter_add(1, dst, w_src)
    merged_b = total / weight[..., None]
    size_b = sb.scatter_add(1, dst, sa.gather(1, src))
    rest = xa.gather(1, unm[..., None].expand(-1, -1, dim))
    return (
        torch.cat([rest, merged_b], 1),
        torch.cat([sa.gather(1, unm), size_b], 1),
        torch.cat([origin[:, ::2].gather(1, unm), origin[:, 1::2]], 1),
    )


def merge_frames(
    x: torch.Tensor, target: int, size_weighted: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge every frame of ``x`` ``[F, n, D]`` down to ``target`` tokens.

    Returns:
        ``[F, target, D]`` float32 features, ``[F, target]`` sizes and ``[F, target]`` original in-frame indices of
        the surviving tokens (in the round layout).
    """
    frames, n, _ = x.shape
    x = x.float()
    size = torch.ones(frames, n, device=x.device)
    origin = torch.arange(n, device=x.device).expand(frames, n)
    for r in merge_rounds(n, target):
        x, size, origin = merge_round(x, size, origin, r, size_weighted)
    return x, size, origin


@register_policy("aim", stage="outer")
class AIMOuterPolicy(OuterPolicy):
    config_cls = AIMOuterConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        grid, feats = video.grid, video.features
        per = grid.per_frame
        if budget >= grid.numel:
            return Plan(torch.arange(grid.numel, device=feats.device))
        frames = feats.reshape(grid.frames, per, -1)
        shares = apportion(budget, torch.full((grid.frames,), per, dtype=torch.long))
        weighted = bool(getattr(self.config, "size_weighted", False))
        keep, out, sizes = [], [], []
        for target in shares.unique().tolist():  # at most two distinct shares
            if target == 0:
                continue
            ids = (shares == target).nonzero().squeeze(1).to(feats.device)
            x, size, origin = merge_frames(frames[ids], target, weighted)
            keep.append((ids[:, None] * per + origin).flatten())
            out.append(x.flatten(0, 1))
            sizes.append(size.flatten())
        index = torch.cat(keep)
        order = index.argsort()
        return Plan(index[order], torch.cat(out)[order].to(feats.dtype), torch.cat(sizes)[order])
