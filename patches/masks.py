"""2-D padding masks: read whatever form ``generate()`` hands over, and derive compact text positions."""

from __future__ import annotations

import torch


def chunk_mask(attention_mask, batch: int, q: int, continuing: bool, device: torch.device) -> torch.Tensor:
    """The ``[B, q]`` long padding mask (1 = real token) of the ``q`` tokens of this forward.

    Accepts ``None`` (no padding), a 2-D mask whose last ``q`` columns belong to this forward, a 4-D mask
    (``[B, 1, q, kv]``, bool or additive float) or the dict of prebuilt masks static caches get (P6). A 4-D mask
    only carries padding for a fresh prompt; new tokens on an existing cache are never padding.
    """
    m = attention_mask
    if isinstance(m, dict):
        m = m.get("full_attention", next(iter(m.values()), None))
    if m is None or (m.dim() == 4 and continuing):
        return torch.ones(batch, q, dtype=torch.long, device=device)
    if m.dim() == 2:
        return m[:, -q:].to(device=device, dtype=torch.long)
    if m.dim() == 4:
        row = m[:, 0, -1, :q]
        ok = row if row.dtype == torch.bool else row == 0
        return ok.to(device=device, dtype=torch.long)
    raise ValueError(f"unexpected attention_mask of shape {tuple(m.shape)}")


def text_positions(mask: torch.Tensor) -> torch.Tensor:
    """Compact 1-D positions ``[B, P]`` of a 2-D mask, as ``generate()`` derives them (pads get 1)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)
