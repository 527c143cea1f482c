"""The last query's attention over all keys at one decoder layer, without eager attention (O(L d)).

Forward hooks on that layer's query / key projections (or on ``q_norm`` / ``k_norm`` where the family has them)
keep the projections the layer computes anyway; the scores are then ``softmax(q_last . k^T * scaling)`` with the
rotary embedding applied as the model applies it. Works under SDPA, eager and flash-attention alike.
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, heads, L, d]`` by ``cos``/``sin`` ``[B, L, r]`` (the models' ``rotate_half`` form).

    With partial rotary embeddings (``r < d``, Qwen3.5) the first ``r`` channels rotate and the rest pass through.
    """
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat([apply_rope(x[..., :r], cos, sin), x[..., r:]], -1)
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class ProjectionCapture:
    """Keeps the queries (the last row, or all rows with ``all_queries``) and the keys a layer's attention
    computes, while ``active``."""

    def __init__(self, attention: nn.Module, all_queries: bool = False) -> None:
        self.attention = attention
        self.head_dim: int = attention.head_dim
        self.scaling: float = attention.scaling
        self.all_queries = all_queries
        self.active = False
        self.q: torch.Tensor | None = None  # [B, q, H, d] (q = 1 unless all_queries)
        self.k: torch.Tensor | None = None  # [B, KV, q, d]

    def modules(self) -> tuple[nn.Module, nn.Module]:
        a = self.attention
        q_norm, k_norm = getattr(a, "q_norm", None), getattr(a, "k_norm", None)
        return (a.q_proj if q_norm is None else q_norm), (a.k_proj if k_norm is None else k_norm)

    def install(self) -> list:
        q_mod, k_mod = self.modules()
        return [q_mod.register_forward_hook(self._on_q), k_mod.register_forward_hook(self._on_k)]

    def _on_q(self, module, args, out) -> None:
        if self.active:
            rows = out if self.all_queries else out[:, -1:]
            self.q = rows.reshape(out.shape[0], rows.shape[1], -1, self.head_dim)

    def _on_k(self, module, args, out) -> None:
        if self.active:
            self.k = out.reshape(out.shape[0], out.shape[1], -1, self.head_dim).transpose(1, 2)  # [B, KV, L, d]

    def clear(self) -> None:
        self.active, self.q, self.k = False, None, None


def last_query_attention(
    q_last: torch.Tensor,
    keys: torch.Tensor,
    key_mask: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Attention of the last query over every key, averaged over heads, in float32.

    Args:
        q_last: ``[B, H, d]`` rotated query of the last position.
        keys: ``[B, KV, S, d]`` rotated keys (H is a multiple of KV: grouped-query attention).
        key_mask: ``[B, S]`` True where the key may be attended.
        scaling: the layer's softmax scale.

    Returns:
        ``[B, S]`` probabilities (rows sum to 1 over the allowed keys).
    """
    b, h, d = q_last.shape
    kv = keys.shape[1]
    q = q_last.float().view(b, kv, h // kv, d)
    logits = torch.einsum("bkgd,bksd->bkgs", q, keys.float()) * scaling
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return logits.softmax(-1).mean(dim=(1, 2))


def question_attention(
    queries: torch.Tensor,
    query_valid: torch.Tensor,
    query_index: torch.Tensor,
    keys: torch.Tensor,
    key_mask: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Attention of several queries per sample over every key, maximised over heads and queries (PruneVid).

    Args:
        queries: ``[B, Q, H, d]`` rotated queries (padded to the longest sample).
        query_valid: ``[B, Q]`` True for real queries.
        query_index: ``[B, Q]`` key index of each query's own position (causality: keys after it are hidden).
        keys: ``[B, KV, S, d]`` rotated keys.
        key_mask: ``[B, S]`` True where the key may be attended.
        scaling: the layer's softmax scale.

    Returns:
        ``[B, S]`` float32; 0 for samples without a valid query.
    """
    b, nq, h, d = queries.shape
    kv, s = keys.shape[1], keys.shape[2]
    q = queries.float().permute(0, 2, 1, 3).reshape(b, kv, h // kv, nq, d)
    logits = torch.einsum("bkgqd,bksd->bkgqs", q, keys.float()) * scaling
    allowed = key_mask[:, None, :] & (torch.arange(s, device=keys.device)[None, None, :] <= query_index[:, :, None])
    probs = logits.masked_fill(~allowed[:, None, None], float("-inf")).softmax(-1).nan_to_num(0.0)
    probs = probs.masked_fill(~query_valid[:, None, None, :, None], 0.0)
    return probs.amax(dim=(1, 2, 3))
