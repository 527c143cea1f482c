"""Tensor operations shared by policies: selection, similarity."""

from tokpress.ops.select import evenly_spaced, topk_sorted
from tokpress.ops.similarity import cosine_adjacent, cosine_matrix

__all__ = ["cosine_adjacent", "cosine_matrix", "evenly_spaced", "topk_sorted"]
