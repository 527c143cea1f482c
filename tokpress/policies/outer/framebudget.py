"""``framebudget`` — query-aware per-frame token budgets filled by any outer policy (QuoTA-style).

After QuoTA (Luo et al., AAAI 2026, "Query-oriented Token Assignment via CoT Query Decouple for Long Video
Comprehension"; also B-VLLM and KFFocus allocate tokens unevenly across frames by relevance). A composable layer,
not a monolithic method:

1. **Score** each frame's relevance to the question. ``scorer="similarity"`` (default, the cheap proxy): in the LLM's
   input embedding space, each question token's best cosine match among the frame's tokens, averaged over the
   question tokens (a late-interaction similarity; ``VideoTokens.question`` holds the embedded text after the video).
   ``scorer="given"``: the scores in ``frame_scores`` — e.g. QuoTA's own, the probability with which an LVLM judges
   each frame relevant to the question (computed by the caller: one model pass per frame before the compressed
   prompt, a cost this policy cannot see).
   ``scorer="uniform"``: equal scores (the fill policy with an even spread; an ablation).
2. **Budget** each frame: weights ``softmax(score / temperature)`` (QuoTA normalises its raw LVLM scores; the
   similarity proxy's cosines need a temperature), capped at the frame's token count with the excess handed to the
   other frames in proportion (QuoTA's ``scale_weights``, iterated until no frame exceeds its cap), then rounded by
   largest remainder so the budgets sum to exactly the stage's ``budget`` (QuoTA floors, so its total can fall short).
3. **Fill** each frame's budget with the outer policy ``fill``: a policy that ranks tokens by a score over the whole
   video (``token_scores``: ``evs``) keeps its top tokens of each frame; any other (``uniform``, ``visionzip``,
   ``divprune``, ``random``, ...) is run on each frame alone with that frame's budget (a frame with budget 0 is
   dropped). QuoTA fills by bilinear interpolation / adaptive pooling / linspace of each frame's grid; ``uniform``
   is its linspace form.

Budget mapping: ``retain_ratio`` is the video's token ratio, as for every outer policy. Deviations: QuoTA's frame
scores come from an auxiliary LVLM asked a CoT-decoupled question per frame; the default proxy needs no extra pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from tokpress.policies.base import Grid, OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import get_policy, register_policy

SCORERS = ("similarity", "given", "uniform")


@dataclass(frozen=True)
class FrameBudgetConfig(PolicyConfig):
    """Options of ``framebudget``."""

    #: the outer policy that fills each frame's budget
    fill: str = "uniform"
    #: ``"similarity"`` (question-frame similarity in the LLM's embedding space), ``"given"`` or ``"uniform"``
    scorer: str = "similarity"
    #: softmax temperature turning scores into budget weights (> 0)
    temperature: float = 0.05
    #: ``scorer="given"``: per sample, per video, one score per frame (higher = more relevant)
    frame_scores: Any = ()
    #: options of the fill policy
    fill_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        self.check(self.scorer in SCORERS, f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        self.check(
            isinstance(self.temperature, (int, float)) and self.temperature > 0,
            f"temperature must be a number > 0, got {self.temperature!r}",
        )
        self.check(self.fill != "framebudget", "fill must be another outer policy, e.g. fill='uniform'")
        get_policy("outer", self.fill)  # ConfigError naming the valid ones
        self.check(
            self.scorer != "given" or len(self.frame_scores) > 0,
            "scorer='given' needs frame_scores=[[scores of video 0], ...] per sample",
        )

    def __hash__(self) -> int:  # fill_options is a dict
        return hash((self.fill, self.scorer, self.temperature))


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
    f = F.normalize(frames.float(), dim=-1)
    q = F.normalize(question.float().to(frames.device), dim=-1)
    return torch.einsum("tpd,qd->tqp", f, q).amax(-1).mean(-1)


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

    def frame_budgets(self, video: VideoTokens, budget: int) -> torch.Tensor:
        """``[T]`` long tokens per frame, summing to ``budget``, each at most the frame's token count."""
        g = video.grid
        frames = video.features.view(g.frames, g.per_frame, -1)
        if self.config.scorer == "similarity":  # no question (a call outside the engine): equal scores
            question = video.question if video.question is not None else video.features[:0]
            scores = similarity_scores(frames, question)
        elif self.config.scorer == "given":
            scores = torch.as_tensor(self.config.frame_scores[video.sample][video.video], dtype=torch.float32)
            if scores.numel() != g.frames:
                raise ValueError(f"frame_scores of video {video.video}: {scores.numel()} scores for {g.frames} frames")
        else:
            scores = torch.zeros(g.frames)
        weights = torch.softmax(scores.float().cpu() / self.config.temperature, 0)
        caps = torch.full((g.frames,), g.per_frame, dtype=torch.long)
        return integer_budgets(capped_weights(weights, caps, budget), caps, budget)

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        budgets = self.frame_budgets(video, budget)
        scores = getattr(self.fill, "token_scores", None)
        if scores is not None:
            return Plan(_top_per_frame(scores(video).view(g.frames, g.per_frame), budgets.to(video.features.device)))
        return self._fill_each_frame(video, budgets)

    def _fill_each_frame(self, video: VideoTokens, budgets: torch.Tensor) -> Plan:
        """Run the fill policy on each frame alone (``Grid(1, H, W)``) with its budget; offsets back to the video."""
        g = video.grid
        keep, feats, sizes, merging = [], [], [], False
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
            merging |= plan.features is not None or plan.sizes is not None
            feats.append(video.features[part][plan.keep] if plan.features is None else plan.features)
            sizes.append(torch.ones(b, device=plan.keep.device) if plan.sizes is None else plan.sizes)
        out = torch.cat(keep)
        if not merging:
            return Plan(out)
        return Plan(out, torch.cat(feats), torch.cat(sizes))


def _top_per_frame(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """Sorted flat indices of each frame's ``budgets[t]`` highest ``scores`` ``[T, P]`` (ties to the lower index)."""
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices  # [T, P]
    rank = torch.arange(scores.shape[1], device=scores.device)[None]
    chosen = order[rank < budgets[:, None]]
    frame = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(order)[rank < budgets[:, None]]
    return (frame * scores.shape[1] + chosen).sort().values
