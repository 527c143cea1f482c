"""Deepstack (Qwen3-VL): vision features added to the hidden states of the first decoder layers, kept in step with
the tokens tokpress keeps.

Qwen3-VL's language model adds ``deepstack_visual_embeds[i]`` (``[n_visual, D]``, one row per visual position of
``visual_pos_masks`` in row-major order) to the output of decoder layer ``i`` for the first ``len(...)`` layers. Once
tokpress drops or merges visual tokens, those rows no longer line up with the sequence, so the engine takes the two
arguments out of the language model's call and adds the features itself, from a forward hook on each of those
layers, to the tokens of the current layout:

* a kept token keeps its own rows;
* a merged token gets the rows of the tokens merged into it, weighted as the policy weighted their features
  (:func:`merged_side_features`);
* an inner stage at a layer that deepstack still writes to gathers (and merges) the pending rows the same way.

The addition mirrors the model's (``hidden[mask] = hidden[mask] + rows`` on a copy, in the hidden dtype), so
with nothing dropped the result is bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD

from tokpress.patches.layout import gather_seq
from tokpress.policies.base import Plan

#: the language model's keyword arguments that carry deepstack
MASK_KWARG, EMBEDS_KWARG = "visual_pos_masks", "deepstack_visual_embeds"


@dataclass
class Deepstack:
    """Deepstack rows of the tokens of the current layout.

    Attributes:
        rows: ``[B, L]`` row of each position in every ``feats[i]``; ``-1`` for positions without deepstack.
        feats: per deepstack layer ``i``, ``[R, D]`` rows (the model's rows, then rows of merged tokens).
    """

    rows: torch.Tensor
    feats: list[torch.Tensor]

    @classmethod
    def from_kwargs(cls, mask: torch.Tensor, embeds: list[torch.Tensor]) -> Deepstack:
        """From ``visual_pos_masks`` ``[B, L]`` and ``deepstack_visual_embeds`` (rows in row-major mask order)."""
        mask = mask.bool()
        rows = (mask.flatten().long().cumsum(0) - 1).view(mask.shape).masked_fill(~mask, -1)
        return cls(rows, list(embeds))

    def select(self, index: torch.Tensor, filler: torch.Tensor) -> Deepstack:
        """The rows after gathering positions ``index`` ``[B, L']`` (fillers from ``pack`` marked by ``filler``)."""
        return Deepstack(gather_seq(self.rows, index).masked_fill(filler.to(self.rows.device), -1), self.feats)

    def write(self, sample: int, positions: torch.Tensor, merged: list[torch.Tensor]) -> None:
        """Point ``positions`` ``[k]`` of ``sample`` (current layout) at new rows ``merged[i]`` ``[k, D]``."""
        start = self.feats[0].shape[0]
        self.feats = [torch.cat([f, m.to(f.device, f.dtype)]) for f, m in zip(self.feats, merged)]
        self.rows = self.rows.clone()
        self.rows[sample, positions.to(self.rows.device)] = torch.arange(
            start, start + positions.numel(), device=self.rows.device
        )

    def add_to(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden`` ``[B, L, D]`` plus layer ``layer``'s rows at the positions that have them."""
        mask = (self.rows >= 0).to(hidden.device)
        rows = self.rows.to(hidden.device)[mask]
        hidden = hidden.clone()
        hidden[mask] = hidden[mask] + self.feats[layer].to(hidden.device, hidden.dtype)[rows]
        return hidden

    def pending(self, layer: int) -> bool:
        """Whether deepstack still writes to the output of ``layer`` or a later layer."""
        return layer < len(self.feats)

    def rows_of(self, sample: int, positions: torch.Tensor) -> list[torch.Tensor]:
        """Per deepstack layer, the ``[k, D]`` rows of ``positions`` of ``sample`` (zeros where a row is missing)."""
        rows = self.rows[sample, positions.to(self.rows.device)]
        have = (rows >= 0)[:, None]
        return [f[rows.clamp_min(0)].masked_fill(~have.to(f.device), 0) for f in self.feats]


def merged_side_features(
    plan_of: Callable[[torch.Tensor], Plan], x: torch.Tensor, plan: Plan, sides: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The replacement of each side tensor under the merge that ``plan`` applied to ``x``.

    Args:
        plan_of: runs the policy on features like ``x`` (same budget, same everything else).
        x: ``[N, D]`` the features the policy planned on.
        plan: the plan it returned (with ``features``).
        sides: ``[N, D']`` tensors with one row per token (here: deepstack rows).

    Returns:
        per side, ``[k, D']``: the policy's merge applied to that side (see :mod:`tokpress.ops.dual`).

    Raises:
        RuntimeError: the policy planned differently on the dual input, or its features do not depend on ``x``.
    """
    out = []
    for side in sides:
        with fwAD.dual_level():
            again = plan_of(fwAD.make_dual(x, side.to(x.device, x.dtype)))
            tangent = fwAD.unpack_dual(again.features).tangent
        if not torch.equal(again.keep, plan.keep) or tangent is None:
            raise RuntimeError("tokpress: a merging policy could not be replayed on the deepstack features")
        out.append(tangent)
    return out
