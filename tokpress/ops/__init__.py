"""Tensor operations shared by policies: selection, similarity."""

from tokpress.ops.cluster import dpc_knn, knn_density
from tokpress.ops.dual import primal
from tokpress.ops.graph import connected_components
from tokpress.ops.merge import group_mean, group_size
from tokpress.ops.select import apportion, evenly_spaced, top_per_frame, topk_sorted
from tokpress.ops.similarity import cosine_adjacent, cosine_matrix, cosine_pairs, rows_reduce_alike

__all__ = [
    "apportion",
    "connected_components",
    "cosine_adjacent",
    "cosine_matrix",
    "cosine_pairs",
    "dpc_knn",
    "evenly_spaced",
    "group_mean",
    "group_size",
    "knn_density",
    "primal",
    "rows_reduce_alike",
    "top_per_frame",
    "topk_sorted",
]
