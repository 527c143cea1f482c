"""``fixed`` — keep an index set given up front (outer and inner).

Used to replay a recorded selection (``model.tokpress.last.kept``) and as the zero-cost *oracle* of the benchmark.

Options:
    keep: outer — ``keep[sample][video]`` is a sequence of token indices into that video's grid; inner —
        ``keep[sample]`` is a sequence of ordinals (indices among the sample's original video tokens), or with
        ``layers`` one such list per stage, ``keep[stage][sample]``.
    layers, ratios: inner only — replay a multi-stage policy: one stage per layer, each with its ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tokpress.errors import InputError
from tokpress.policies.base import InnerPolicy, InnerTokens, OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class FixedConfig(PolicyConfig):
    keep: Any = ()
    """Per-sample (outer: per-sample, per-video; inner multi-stage: per-stage, per-sample) index sequences."""
    features: Any = ()
    """Optional replacement features, nested like ``keep`` (a ``[k, D]`` tensor or ``None`` per entry): replays a
    merging policy exactly (``model.tokpress.last.plans`` with ``model.tokpress.record_plans = True``)."""
    sides: Any = ()
    """Optional recorded side rows (``Plan.sides``: Qwen3-VL's deepstack rows of merged tokens), nested like
    ``features`` (a list of ``[k, D']`` tensors or ``None`` per entry)."""
    layers: tuple[int, ...] = ()
    """Inner only: the decoder layer of each stage to replay (default: one stage at ``inner_layer``)."""
    ratios: tuple[float, ...] = ()
    """Inner only: the ratio of each stage in ``layers``."""

    def validate(self) -> None:
        self.check(len(self.keep) > 0, "fixed policy needs keep=[...] index sequences, one per sample")
        self.check(len(self.layers) == len(self.ratios), "fixed: give one ratio per layer (layers=..., ratios=...)")
        self.check(
            not self.layers or len(self.keep) == len(self.layers),
            f"fixed: keep must hold one per-sample list per stage ({len(self.layers)} stages)",
        )


def _as_index(value, n: int, budget: int, where: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted indices of ``value``, checked against ``n`` and ``budget``, and the permutation that sorted them
    (to put features given in ``value``'s order in the same order)."""
    idx, order = torch.as_tensor(value, dtype=torch.long).flatten().sort()
    if idx.numel() != budget:
        raise InputError(
            f"fixed keep for {where} has {idx.numel()} indices but the ratio promises {budget}; "
            "set the stage ratio to len(keep) / n"
        )
    if idx.numel() and (idx[0] < 0 or idx[-1] >= n or (idx[1:] == idx[:-1]).any()):
        raise InputError(f"fixed keep for {where} must hold distinct indices in [0, {n})")
    return idx.to(device), order.to(device)


def _reorder(features, order: torch.Tensor, budget: int, where: str):
    """``features`` (``[k, D]`` rows in the order the indices were given, or ``None``) in sorted-index order."""
    if features is None:
        return None
    if features.shape[0] != budget:
        raise InputError(f"fixed features for {where} have {features.shape[0]} rows for {budget} kept tokens")
    return features[order.to(features.device)]


def _reorder_all(tensors, order: torch.Tensor, budget: int, where: str):
    """:func:`_reorder` applied to each of a list of tensors (``None`` stays ``None``)."""
    return None if tensors is None else [_reorder(t, order, budget, where) for t in tensors]


@register_policy("fixed", stage="outer")
class FixedOuterPolicy(OuterPolicy):
    config_cls = FixedConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        where = f"sample {video.sample} video {video.video}"
        try:
            value = self.config.keep[video.sample][video.video]
        except (IndexError, KeyError):
            raise InputError(f"fixed keep has no entry for {where}") from None
        features = self.config.features[video.sample][video.video] if self.config.features else None
        sides = self.config.sides[video.sample][video.video] if self.config.sides else None
        keep, order = _as_index(value, video.grid.numel, budget, where, video.features.device)
        return Plan(keep, _reorder(features, order, budget, where), sides=_reorder_all(sides, order, budget, where))


@register_policy("fixed", stage="inner")
class FixedInnerPolicy(InnerPolicy):
    config_cls = FixedConfig

    @classmethod
    def schedule(cls, config: FixedConfig, num_layers: int, layer: int, ratio: float) -> list[tuple[int, float]]:
        return list(zip(config.layers, config.ratios)) if config.layers else [(layer, ratio)]

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        where = f"sample {tokens.sample}"
        keep, features, sides = self.config.keep, self.config.features, self.config.sides
        if self.config.layers:
            stage = list(self.config.layers).index(tokens.layer)
            keep, features = keep[stage], features[stage] if features else ()
            sides = sides[stage] if sides else ()
        try:
            wanted = torch.as_tensor(keep[tokens.sample], dtype=torch.long, device=tokens.ordinals.device)
        except (IndexError, KeyError):
            raise InputError(f"fixed keep has no entry for {where}") from None
        hit = torch.isin(tokens.ordinals, wanted).nonzero().squeeze(1)
        if hit.numel() != wanted.numel():
            raise InputError(f"fixed keep for {where} names ordinals that are not among the tokens entering the layer")
        replace = features[tokens.sample] if features else None
        keep, _ = _as_index(hit, tokens.ordinals.numel(), budget, where, tokens.ordinals.device)
        # features follow `wanted`'s order: row of each kept token = where its ordinal sits in `wanted`
        ranked, perm = wanted.sort()
        order = perm[torch.searchsorted(ranked, tokens.ordinals[keep])]
        side = sides[tokens.sample] if sides else None
        return Plan(keep, _reorder(replace, order, budget, where), sides=_reorder_all(side, order, budget, where))
