"""Forward-mode dual tensors: how a merging plan is carried over to other per-token tensors.

Merging policies compute their replacement features as a linear map of the input features whose weights depend on
the input only through discrete choices (which tokens are kept, which cluster a token joins, how many tokens a
group holds). Run on a *dual* tensor (``torch.autograd.forward_ad``) whose tangent is another per-token tensor ``a``
``[N, D']``, the tangent of the features is then exactly that map applied to ``a``: a merged token gets the merged
``a``, weighted the same way. The engine uses it for Qwen3-VL's deepstack features.

Selection ops (similarities, distances, clustering) run on :func:`primal`: they carry no tangent, so the weights
they produce count as constants, and they cost nothing extra.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD


def primal(x: torch.Tensor) -> torch.Tensor:
    """``x`` without its forward-mode tangent (``x`` itself when it has none)."""
    return fwAD.unpack_dual(x).primal
