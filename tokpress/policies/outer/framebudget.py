"""``framebudget`` — query-aware per-frame token budgets filled by any outer policy (QuoTA-style).

After QuoTA (Luo et al., AAAI 2026, "Query-oriented Token Assignment via CoT Query Decouple for Long Video
Comprehension"; also B-VLLM and KFFocus allocate tokens unevenly across frames by relevance). A composable layer,
not a monolithic method:

1. **Score** each frame's relevance to the question. ``scorer="similarity"`` (default, the cheap proxy): in the LLM's
   input embedding space, each question token's best cosine match among the frame's tokens, averaged over the
   question tokens (a late-interaction similarity; ``VideoTokens.question`` holds the embedded text after the video).
   ``scorer="lvlm"``: QuoTA's own scorer — the probability ``p`` with which an LVLM judges each frame relevant to the
   question, computed per request by :func:`tokpress.score_frames` (one batched forward over the frames before the
   compressed prompt, :mod:`tokpress.frame_relevance`) and handed in with ``with tokpress.frame_scores(model, p):``
   (or fixed in ``frame_scores``).
   ``scorer="given"``: the caller's scores in ``frame_scores`` (fixed at apply time, or per request through
   ``tokpress.frame_scores``), turned into weights by the softmax below.
   ``scorer="uniform"``: equal scores (the fill policy with an even spread; an ablation).
2. **Budget** each frame: weights ``softmax(score / temperature)`` (the similarity proxy's cosines need a
   temperature); for ``scorer="lvlm"`` QuoTA's own ``(100 p) ** 2`` normalised, i.e. ``p ** power / sum p ** power``
   with ``power=2`` (all ``p == 0``: equal weights). The weights are capped at the frame's token count with the
   excess handed to the other frames in proportion (QuoTA's ``scale_weights``, iterated until no frame exceeds its
   cap; QuoTA's default bilinear fill skips the cap and can up-sample a frame), then rounded by largest remainder so
   the budgets sum to exactly the stage's ``budget`` (QuoTA floors, so its total can fall short).
3. **Fill** each frame's budget with the outer policy ``fill``: a policy that ranks tokens by a score over the whole
   video (``token_scores``: ``evs``) keeps its top tokens of each frame; any other (``uniform``, ``visionzip``,
   ``divprune``, ``random``, ...) is run on each frame alone with that frame's budget (a frame with budget 0 is
   dropped). QuoTA fills by bilinear interpolation / adaptive pooling / linspace of each frame's grid; ``uniform``
   is its linspace form.

Budget mapping: ``retain_ratio`` is the video's token ratio, as for every outer policy (QuoTA's ``enhance_total x
enhance_tokens``). Deviations: QuoTA's frame scores come from an auxiliary LVLM asked a CoT-decoupled question per
frame (``scorer="lvlm"``, whose deviations are listed in :mod:`tokpress.frame_relevance`); the default proxy needs no
extra pass. The preset ``quota`` is ``framebudget`` with ``scorer="lvlm"`` and the ``uniform`` (linspace) fill.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from tokpress.errors import InputError
from tokpress.ops import top_per_frame
from tokpress.policies.base import Grid, OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import get_policy, register_policy

SCORERS = ("similarity", "given", "lvlm", "uniform")


@dataclass(frozen=True)
class FrameBudgetConfig(PolicyConfig):
    """Options of ``framebudget``."""

    #: the outer policy that fills each frame's budget
    fill: str = "uniform"
    #: ``"similarity"`` (question-frame similarity in the LLM's embedding space), ``"lvlm"`` (QuoTA: an LVLM's
    #: relevance probabilities, per request), ``"given"`` or ``"uniform"``
    scorer: str = "similarity"
    #: softmax temperature turning scores into budget weights (> 0; not used by ``"lvlm"``)
    temperature: float = 0.05
    #: ``scorer="lvlm"``: weights ``p ** power`` (QuoTA: ``(100 p) ** 2``, so 2)
    power: float = 2.0
    #: ``scorer="given"`` / ``"lvlm"``: per sample, per video, one score per frame (higher = more relevant); a
    #: request's scores set with ``tokpress.frame_scores`` take precedence
    frame_scores: Any = ()
    #: options of the fill policy
    fill_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        self.check(self.scorer in SCORERS, f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        self.check(
            isinstance(self.temperature, (int, float)) and self.temperature > 0,
            f"temperature must be a number > 0, got {self.temperature!r}",
        )
        self.check(
            isinstance(self.power, (int, float)) and self.power > 0,
            f"power must be a number > 0 (QuoTA squares its probabilities: 2), got {self.power!r}",
        )
        self.check(self.fill != "framebudget", "fill must be another outer policy, e.g. fill='uniform'")
        get_policy("outer", self.fill)  # ConfigError naming the valid ones
        self.check(
            self.scorer != "given" or len(self.frame_scores) > 0,
            "scorer='given' needs frame_scores=[[scores of video 0], ...] per sample",
        )

    def __hash__(self) -> int:  # fill_options is a dict
        return hash((self.fill, self.scorer, self.temperature, self.power))


def capped_weights(weights: torch.Tensor, caps: torch.Tensor, total: int) -> torch.Tensor:
    """Real-valued shares ``[G]`` of ``total`` in proportion to ``weights``, none above its cap; the excess of a
    capped group goes to the others in proportion to their weights (water-filling). Needs ``total <= caps.sum()``."""
    w = weights.double().clamp_min(0)
    w = torch.where(w.sum() > 0, w, torch.ones_like(w))
    caps = caps.double()
    share = torch.zeros_like(w)
    free = torch.ones_like(w, dtype=torch.bool)
    left = float(total)
    for _ in range(w.numel()):
        ideal = torch.where(free, left * w / w[free].sum(), share)
        over = free & (ideal >= caps)
        if not bool(over.any()):
            return torch.where(free, ideal, share)
        share = torch.where(over, caps, share)
        left -= float(caps[over].sum())
        free &= ~over
        if not bool(free.any()) or w[free].sum() <= 0:
            break
    return share


def integer_budgets(shares: torch.Tensor, caps: torch.Tensor, total: int) -> torch.Tensor:
    """Round real shares ``[G]`` to integers summing to ``total`` (largest remainder, ties to the lower index), each
    at most its cap."""
    base = shares.floor().long().clamp(max=caps)
    left = total - int(base.sum())
    room = base < caps
    remainder = torch.where(room, shares - shares.floor(), torch.full_like(shares, -1.0))
    order = torch.sort(remainder, descending=True, stable=True).indices[:left]
    base[order] += 1
    return base


def similarity_scores(frames: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
    """``[T]``: for each frame ``[P, D]`` of ``frames`` ``[T, P, D]``, each question token's highest cosine with the
    frame's tokens, averaged over the ``q`` question tokens (``question`` ``[q, D]``; zeros when ``q == 0``)."""
    if question.shape[0] == 0:
        return torch.zeros(frames.shape[0], device=frames.device)
    f = frames.float()
    q = F.normalize(question.float().to(frames.device), dim=-1)
    norms = torch.linalg.vector_norm(f, dim=-1).clamp_min(1e-12)  # [T, P]: divide the dots, no normalised copy
    return (torch.einsum("tpd,qd->tqp", f, q) / norms[:, None, :]).amax(-1).mean(-1)


@register_policy("framebudget", stage="outer")
class FrameBudgetPolicy(OuterPolicy):
    config_cls = FrameBudgetConfig
    needs_question = True

    def __init__(self, config: FrameBudgetConfig) -> None:
        super().__init__(config)
        fill_cls = get_policy("outer", config.fill)
        self.fill = fill_cls(fill_cls.config_cls(**config.fill_options))
        self.needs_vision_attention = self.fill.needs_vision_attention
        self.vision_attention = self.fill.vision_attention
        self.vision_attention_layers = self.fill.vision_attention_layers
        #: this request's ``[sample][video]`` frame scores (``tokpress.frame_scores`` sets and restores it)
        self.request_scores: Any = None

    def _given_scores(self, video: VideoTokens, frames: int) -> torch.Tensor:
        """``[T]`` float32 scores of ``video`` from the request (``tokpress.frame_scores``) or ``frame_scores``."""
        given = self.request_scores if self.request_scores is not None else self.config.frame_scores
        if len(given) == 0:
            raise InputError(
                f"framebudget scorer={self.config.scorer!r} has no frame scores for this request: wrap the call in "
                "`with tokpress.frame_scores(model, tokpress.score_frames(model, processor, frames, question)):`"
            )
        try:
            scores = torch.as_tensor(given[video.sample][video.video], dtype=torch.float32).flatten().cpu()
        except IndexError:
            raise InputError(
                f"frame scores given for {len(given)} sample(s), but sample {video.sample} video {video.video} "
                "is compressed: give scores[sample][video] for every video of the batch (repeat a sample's scores "
                "for each row that repeats it)"
            ) from None
        if scores.numel() != frames:
            raise InputError(
                f"frame scores of sample {video.sample} video {video.video}: {scores.numel()} scores for {frames} "
                "frames (Qwen models: one per temporal patch of 2 frames; score_frames groups them)"
            )
        return scores

    def frame_budgets(self, video: VideoTokens, budget: int) -> torch.Tensor:
        """``[T]`` long tokens per frame, summing to ``budget``, each at most the frame's token count."""
        g = video.grid
        frames = video.features.view(g.frames, g.per_frame, -1)
        if self.config.scorer == "similarity":  # no question (a call outside the engine): equal scores
            question = video.question if video.question is not None else video.features[:0]
            scores = similarity_scores(frames, question)
        elif self.config.scorer in ("given", "lvlm"):
            scores = self._given_scores(video, g.frames)
        else:
            scores = torch.zeros(g.frames)
        if self.config.scorer == "lvlm":  # QuoTA: (100 p) ** 2, normalised (capped_weights normalises)
            weights = scores.double().clamp_min(0) ** self.config.power
        else:
            weights = torch.softmax(scores.float().cpu() / self.config.temperature, 0)
        caps = torch.full((g.frames,), g.per_frame, dtype=torch.long)
        return integer_budgets(capped_weights(weights, caps, budget), caps, budget)

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        budgets = self.frame_budgets(video, budget)
        scores = getattr(self.fill, "token_scores", None)
        if scores is not None:
            return Plan(top_per_frame(scores(video).view(g.frames, g.per_frame), budgets.to(video.features.device)))
        return self._fill_each_frame(video, budgets)

    def _fill_each_frame(self, video: VideoTokens, budgets: torch.Tensor) -> Plan:
        """Run the fill policy on each frame alone (``Grid(1, H, W)``) with its budget; offsets back to the video."""
        g = video.grid
        keep, plans = [], []
        for t, b in enumerate(budgets.tolist()):
            if b == 0:
                continue
            part = slice(t * g.per_frame, (t + 1) * g.per_frame)
            frame = replace(
                video,
                features=video.features[part],
                grid=Grid(1, g.height, g.width),
                attention=None if video.attention is None else video.attention[part],
                vision_kept=None if video.vision_kept is None else video.vision_kept[part],
            )
            plan = self.fill.plan(frame, b)
            keep.append(plan.keep + t * g.per_frame)
            plans.append(plan)
        out = torch.cat(keep)
        if all(p.features is None and p.sizes is None for p in plans):
            return Plan(out)  # a selecting fill: no feature copies
        feats = [video.features[i] if p.features is None else p.features for i, p in zip(keep, plans)]
        sizes = [torch.ones(p.keep.numel(), device=out.device) if p.sizes is None else p.sizes for p in plans]
        return Plan(out, torch.cat(feats), torch.cat(sizes))
