"""``tome`` — training-free token merging inside the vision encoder (ToMe, Bolya et al., ICLR 2023).

Algorithm: after encoder layer ``k`` each frame's tokens are split into A (even positions) and B (odd positions);
every A-token's best match is the B-token of highest cosine similarity of the metric (by default the keys of
layer ``k``'s attention averaged over heads, as ToMe uses); the A-tokens with the most similar matches are merged
into them as size-weighted averages. Later layers run on the merged tokens with proportional attention (``log
size`` added to the logits of each key). At the layer whose output the model uses, every merged token is copied
back to all the patches it absorbed, so the encoder's output grid is the original one.

Budget mapping: ``vision_ratio`` r keeps ``round(r * N)`` tokens per frame (at least 1) in every layer after ``k``
(``N`` = patches per frame; 729 -> 365 at r = 0.5, 729 -> 182 at r = 0.25).

Deviations from ToMe: ToMe merges a fixed ``r`` tokens in every block, between attention and MLP; here the whole
reduction happens at the output of one layer (``vision_layer``), in as many bipartite rounds as it takes (a round
removes at most half the tokens), so that every later layer processes exactly the promised count; the metric of a
second round is the size-weighted average of the first round's metric. Matching is per frame (one row per frame
in the encoder batch), never across frames. Survivors keep their relative order (position embeddings are added
before the encoder, so order carries no meaning inside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.policies.base import PolicyConfig
from tokpress.policies.vision.merge import bipartite_slots, compose, merge_schedule, merge_weighted

METRICS = ("keys", "hidden")


@dataclass(frozen=True)
class ToMeVisionConfig(PolicyConfig):
    """Options of the ``tome`` vision policy."""

    #: what tokens are matched by: ``"keys"`` (merge layer's attention keys averaged over heads, ToMe's choice) or
    #: ``"hidden"`` (the merge layer's output)
    metric: str = "keys"

    def validate(self) -> None:
        self.check(self.metric in METRICS, f"metric must be one of {METRICS}, got {self.metric!r}")


@dataclass
class Merged:
    """The encoder tokens after a vision-stage merge.

    Attributes:
        hidden: ``[F, m, D]`` merged tokens.
        size: ``[F, m]`` float32, original patches per token (each row sums to ``N``).
        source: ``[F, N]`` long, the token each original patch went to (for :func:`~.merge.unmerge`).
    """

    hidden: torch.Tensor
    size: torch.Tensor
    source: torch.Tensor


class ToMeVision:
    """Bipartite soft matching of each frame's tokens down to a target count (see the module docstring)."""

    name = "tome"
    config_cls = ToMeVisionConfig
    #: runs inside the encoder, after one of its layers
    where = "inside"

    def __init__(self, config: ToMeVisionConfig) -> None:
        self.config = config

    @property
    def needs_keys(self) -> bool:
        """Whether the hooks must capture the merge layer's key projection."""
        return self.config.metric == "keys"

    def merge(self, hidden: torch.Tensor, metric: torch.Tensor, target: int) -> Merged:
        """Merge each frame's ``n`` tokens down to ``target``.

        Args:
            hidden: ``[F, n, D]`` encoder hidden states after the merge layer.
            metric: ``[F, n, d]`` matching metric: keys averaged over heads, or ``hidden`` itself (the same object:
                later rounds then match the merged hidden states).
            target: tokens per frame to keep, ``1 <= target <= n``.
        """
        frames, n, _ = hidden.shape
        size = torch.ones(frames, n, device=hidden.device)
        source = torch.arange(n, device=hidden.device).expand(frames, n)
        for r in merge_schedule(n, target):
            slot = bipartite_slots(metric, r)
            out = metric.shape[1] - r
            merged, merged_size = merge_weighted(hidden, size, slot, out)
            metric = merged if metric is hidden else merge_weighted(metric, size, slot, out)[0]
            hidden, size, source = merged, merged_size, compose(source, slot)
        return Merged(hidden, size, source)
