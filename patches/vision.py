"""Vision-encoder attention for outer policies that rank tokens by it (HoliTom, FastVID, VisionZip, VTC-CLS).

Nothing is switched to eager attention. While the model encodes *videos* (``get_video_features`` — or
``get_image_features`` for InternVL, whose frames are image tiles — is wrapped with ``functools.wraps``, so 5.23
``generate()`` still sees its signature — pitfall P8), forward hooks keep the query and key projections of vision
blocks; the adapter turns them into the attention each LLM video token receives within its attention group (a frame
or temporal patch), averaged over heads: either the mean-query proxy FastVID uses for Qwen2.5-VL,
``softmax(mean_i(q_i) . k_j / sqrt(d))`` — O(n d) —, the full map averaged over queries,
``mean_i softmax(q_i . k_j / sqrt(d))``, as HoliTom and VisionZip define it — O(n^2 d), computed frame by frame —,
or the [CLS] row ``softmax(q_cls . k_j / sqrt(d))`` (VTC-CLS; towers without a [CLS] token use the mean query
instead). A policy picks with its ``vision_attention`` class attribute.

**Layers.** By default one block is scored: the one whose output the LLM reads (the *feature layer*). A policy whose
``vision_attention_layers(depth)`` returns ``k`` gets the sum over the feature layer and the ``k - 1`` blocks before
it (:func:`scored_layers`), each scored as above; the adapters add the per-patch scores of the layers and pool them
to LLM tokens once (sum first, then the model's pooling).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from tokpress.errors import ConfigError
from tokpress.patches.base import Adapter, VideoSpan
from tokpress.patches.wrapping import unwrap_call, wrap_call

logger = logging.getLogger("tokpress")


def mean_query_attention(q: torch.Tensor, k: torch.Tensor, groups: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention each key receives from its group's mean query, averaged over heads.

    Args:
        q, k: ``[n, H, d]`` (rotated where the model rotates them).
        groups: ``[n]`` attention group of each row (rows attend only within their group), non-decreasing.
        scale: the softmax scale.

    Returns:
        ``[n]`` float32; sums to 1 within each group.
    """
    q, k = q.float(), k.float()
    num = int(groups[-1]) + 1
    count = torch.zeros(num, device=q.device).index_add_(0, groups, torch.ones_like(groups, dtype=torch.float))
    q_mean = torch.zeros(num, *q.shape[1:], device=q.device).index_add_(0, groups, q) / count[:, None, None]
    return _group_softmax(q_mean, k, groups, scale)


def cls_attention(q: torch.Tensor, k: torch.Tensor, groups: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention each key receives from the first row of its group — the [CLS] token of a CLIP / InternViT frame or
    tile — averaged over heads (the CLS column itself included in the softmax, as the layer computes it).

    Same arguments and result as :func:`mean_query_attention`; O(n d). Only for towers whose every group starts with
    a [CLS] token; adapters of towers without one pass :func:`without_cls` of the score.
    """
    q, k = q.float(), k.float()
    counts = torch.bincount(groups)
    first = torch.cumsum(counts, 0) - counts  # [num] row of each group's first token
    return _group_softmax(q[first], k, groups, scale)


def _group_softmax(queries: torch.Tensor, k: torch.Tensor, groups: torch.Tensor, scale: float) -> torch.Tensor:
    """``[n]``: ``softmax_j(queries[g] . k_j * scale)`` over the keys ``j`` of each group ``g``, mean over heads.

    Args:
        queries: ``[num, H, d]`` float32, one query per group.
        k: ``[n, H, d]`` float32 keys; groups: ``[n]`` non-decreasing group of each key.
    """
    logits = (queries[groups] * k).sum(-1) * scale  # [n, H]
    top = torch.full((queries.shape[0], logits.shape[1]), float("-inf"), device=k.device)
    top = top.scatter_reduce(0, groups[:, None].expand_as(logits), logits, "amax")
    e = (logits - top[groups]).exp()
    total = torch.zeros_like(top).index_add_(0, groups, e)
    return (e / total[groups]).mean(-1)


def mean_attention(q: torch.Tensor, k: torch.Tensor, groups: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention each key receives, averaged over every query of its group and over heads (the full map).

    Same arguments and result as :func:`mean_query_attention`; O(n_g^2 d) per group, computed group by group (a
    loop over frames / temporal patches) so memory stays at one group's ``[H, n_g, n_g]`` map.
    """
    q, k = q.float(), k.float()
    bounds = torch.cumsum(torch.bincount(groups), 0).tolist()
    out, start = torch.empty(q.shape[0], device=q.device), 0
    for end in bounds:
        logits = torch.einsum("qhd,khd->hqk", q[start:end], k[start:end]) * scale
        out[start:end] = logits.softmax(-1).mean(dim=(0, 1))
        start = end
    return out


#: how the vision attention each token receives is computed: ``mean_query`` (FastVID, O(n d)), ``full`` (the
#: average of the whole attention map over queries, as HoliTom and VisionZip define it, O(n^2 d)) or ``cls`` (the
#: [CLS] query's row, VTC-CLS, O(n d); the mean query on towers without a [CLS] token)
VISION_ATTENTION = {"mean_query": mean_query_attention, "full": mean_attention, "cls": cls_attention}

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def without_cls(score: ScoreFn) -> ScoreFn:
    """The score for a tower with no [CLS] token: :func:`mean_query_attention` in place of :func:`cls_attention`
    (the closest summary query such a tower has: the frame's mean query), any other score unchanged."""
    return mean_query_attention if score is cls_attention else score


def single_layer(depth: int) -> int:
    """The default layer span: the feature layer alone."""
    return 1


def scored_layers(feature: int, count: int) -> list[int]:
    """Indices of the ``count`` encoder blocks ending at block ``feature`` (ascending)."""
    return list(range(feature - count + 1, feature + 1))


class LayerSum:
    """Adds per-row scores over the scored blocks of one encoder call; the sum comes out at the last block.

    Blocks run in index order within one call; the first scored block starts a new sum. With one block the scores
    pass through unchanged (no addition), so the single-layer path is bit-identical to scoring that block alone.
    """

    def __init__(self, layers: list[int]) -> None:
        self.first, self.last = layers[0], layers[-1]
        self.total: torch.Tensor | None = None

    def add(self, layer: int, values: torch.Tensor) -> torch.Tensor | None:
        """Add block ``layer``'s ``values``; return the sum when ``layer`` is the last scored block, else ``None``."""
        if layer == self.first or self.total is None or self.total.shape != values.shape:
            self.total = values
        else:
            self.total = self.total + values
        if layer != self.last:
            return None
        out, self.total = self.total, None
        return out


class VisionAttention:
    """Collects the vision attention of each video the model encodes, for the outer stage to hand to its policy."""

    def __init__(
        self, adapter: Adapter, mode: str = "mean_query", layers: Callable[[int], int | None] | None = None
    ) -> None:
        """``layers``: the policy's ``vision_attention_layers`` (``None``: the feature layer alone)."""
        self.adapter = adapter
        self.score = VISION_ATTENTION[mode]
        self.layers = layers
        self.active = False
        self.collected: list[torch.Tensor] = []
        self._handles: list = []
        self._wrapper = None

    @property
    def encoder_name(self) -> str:
        """The base-model method that encodes the frames: ``get_video_features`` (``get_image_features`` for
        adapters whose frames are image tiles)."""
        return f"get_{self.adapter.frames_modality}_features"

    def install(self) -> None:
        capture = self.adapter.install_vision_capture
        args = (lambda: self.active, lambda t: self.collected.append(t), self.score)
        handles = capture(*args) if self.layers is None else capture(*args, span=self.span)
        self._wrapper = wrap_call(self.adapter.base, self.encoder_name, self._start, self._end)
        self._handles = handles

    def span(self, depth: int) -> int:
        """How many blocks, ending at the feature layer, to sum (:func:`layer_span`)."""
        return layer_span(self.layers, depth)

    def _start(self) -> None:
        self.active = True

    def _end(self) -> None:
        self.active = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        unwrap_call(self.adapter.base, self.encoder_name, self._wrapper)
        self.collected.clear()

    def take(
        self, spans: list[list[VideoSpan]], placeholders: torch.Tensor | None = None
    ) -> list[list[torch.Tensor | None]] | None:
        """Split what was collected since the last call into ``[sample][video]`` ``[N]`` tensors
        (:func:`split_per_video`)."""
        collected, self.collected = self.collected, []
        return split_per_video(collected, spans, placeholders, self.adapter.frames_modality == "image")


def layer_span(layers: Callable[[int], int | None] | None, depth: int) -> int:
    """``layers(depth)`` (a policy's ``vision_attention_layers``; ``None`` -> 1) for an encoder of ``depth`` blocks
    up to and including the feature layer; :class:`ConfigError` when it is not an int in ``1 .. depth``."""
    count = layers(depth) if layers is not None else None
    count = 1 if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= depth:
        raise ConfigError(
            f"the outer policy asked for vision attention summed over {count!r} encoder layers, but this vision "
            f"encoder has {depth} layers up to the one the LLM reads; choose a start layer in 0..{depth - 1}"
        )
    return count


def check_layers(adapter: Adapter, layers: Callable[[int], int | None] | None) -> None:
    """Raise :class:`ConfigError` before anything is installed when ``layers`` (a policy's
    ``vision_attention_layers``) asks for more encoder layers than ``adapter``'s encoder has up to its feature layer
    (adapters without ``vision_attention_depth`` score one layer and are not checked)."""
    depth = getattr(adapter, "vision_attention_depth", None)
    if layers is not None and depth is not None:
        layer_span(layers, depth())


def split_per_video(
    collected: list[torch.Tensor],
    spans: list[list[VideoSpan]],
    placeholders: torch.Tensor | None = None,
    by_position: bool = False,
) -> list[list[torch.Tensor]] | None:
    """Per-token values of the videos the encoder saw, in encoding order, as ``[sample][video]`` ``[N]`` tensors.

    ``generate()`` with ``num_beams`` / ``num_return_sequences`` k encodes each video once and repeats every
    sample k times afterwards; the values are then repeated the same way. ``None`` (with a warning) when the
    values do not cover the batch's videos.

    Args:
        collected: per encoder call, its tokens' values, concatenated in order.
        spans: per sample, its videos.
        placeholders: ``[B, q]`` placeholder mask of the chunk, used with ``by_position``.
        by_position: the values cover every placeholder of the batch, images too, in order (frames encoded as
            image tiles, ``frames_modality == "image"``); each video's are then read at its positions.
    """
    if by_position:
        sizes = [[int(n)] for n in placeholders.sum(1).tolist()]
    else:
        sizes = [[span.grid.numel for span in found] for found in spans]
    scores = torch.cat(collected) if collected else None
    total = sum(map(sum, sizes))
    got = 0 if scores is None else scores.numel()
    repeat = total // got if got and total % got == 0 else 0
    if repeat < 1 or len(sizes) % repeat or sum(map(sum, sizes[::repeat])) != got:
        logger.warning(
            "tokpress: vision-encoder values unavailable for this forward (%d values for %d tokens)", got, total
        )
        return None
    base = sizes[::repeat]
    parts = iter(torch.split(scores, [n for sample in base for n in sample]))
    per_sample = [[next(parts) for _ in sample] for sample in base]
    out = [per_sample[b // repeat] for b in range(len(sizes))]
    if by_position:
        out = [_at_positions(out[b][0], placeholders[b], found) for b, found in enumerate(spans)]
    return out


def _at_positions(scores: torch.Tensor, placeholders: torch.Tensor, found: list[VideoSpan]) -> list[torch.Tensor]:
    """Each video's ``[N]`` scores out of one sample's ``scores`` ``[n_placeholders]``, read at its positions."""
    rank = (placeholders.cumsum(0) - 1).to(scores.device)  # index of each position among the placeholders
    return [scores[rank[span.index(scores.device)[: span.grid.numel]]] for span in found]
