"""Qwen2-VL and Qwen2.5-VL.

Video tokens: ``T/2 x H/28 x W/28`` per video (temporal patch 2, 2x2 spatial merge), raster order, between
``<|vision_start|>`` and ``<|vision_end|>``. Positions: M-RoPE rows (t, h, w), optionally preceded by a text row
(the 4-row form ``generate()`` builds). Each video's grid is read from its h and w rows, which works in every
transformers version (5.23 ``generate()`` no longer passes ``video_grid_thw`` to ``forward``).

Vision stage (``vision="rlt"``): the ViT takes a variable-length patch sequence, so whole 2x2 patch groups (one LLM
token each) are dropped before its first block (:mod:`tokpress.patches.vision_drop`); the same site serves
Qwen2.5-VL (window order), Qwen3-VL (deepstack mergers) and Qwen3.5.
"""

from __future__ import annotations

from functools import partial

import torch

from tokpress.patches.attention import rotate_half
from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.patches.vision import LayerSum, scored_layers, single_layer, without_cls
from tokpress.patches.vision_drop import PatchSequenceSite
from tokpress.policies.base import Grid


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    rope_rows = 3
    vision_encoder_attr = "visual"

    def install_vision_capture(self, active, sink, score, span=single_layer) -> list:
        return qwen_vision_capture(self, active, sink, score, span)

    def vision_attention_depth(self) -> int:
        return qwen_vision_depth(self)

    def vision_stage_site(self) -> PatchSequenceSite:
        return qwen_vision_stage_site(self)

    def find_videos(self, is_video: torch.Tensor, rope: torch.Tensor | None) -> list[VideoSpan]:
        spans = runs(is_video)
        if not spans:
            return []
        if rope is None or rope.shape[0] != 3:
            raise self.layout_error(
                "Qwen-VL needs its 3-D M-RoPE positions; pass `mm_token_type_ids` "
                "(the processor returns it) so the model builds them"
            )
        out = []
        for start, length in spans:
            h, w = rope[1, start : start + length], rope[2, start : start + length]
            height = int(h.max() - h.min()) + 1
            width = int(w.max() - w.min()) + 1
            frames, rest = divmod(length, height * width)
            if rest:
                raise self.layout_error(f"{length} video tokens do not fill a {height}x{width} grid")
            out.append(VideoSpan(start, Grid(frames, height, width)))
        return out


def _vision_window_order(visual, grid_thw: torch.Tensor) -> torch.Tensor | None:
    """Qwen2.5-VL reorders the vision sequence into attention windows (per 2x2 merge unit); ``None`` for Qwen2-VL."""
    if not hasattr(visual, "fullatt_block_indexes"):
        return None
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(
        grid_thw,
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    return window_index


def qwen_vision_stage_site(adapter: Adapter) -> PatchSequenceSite:
    """The Qwen ViT as a drop-before-the-encoder site: its blocks, its final merger and any deepstack mergers
    (Qwen3-VL), 2x2 patch groups per LLM token, Qwen2.5-VL's window order."""
    visual = adapter.base.visual
    mergers = (visual.merger, *getattr(visual, "deepstack_merger_list", ()))
    return PatchSequenceSite(
        visual=visual,
        blocks=visual.blocks,
        mergers=tuple(mergers),
        unit=visual.spatial_merge_size**2,
        order=lambda grid: _vision_window_order(visual, grid),
    )


def qwen_vision_depth(adapter: Adapter) -> int:
    """Vision blocks up to and including the one whose output the patch merger reads (the last)."""
    return len(adapter.base.visual.blocks)


def qwen_scored_blocks(visual, count: int) -> list[int]:
    """The blocks whose attention is summed: the last ``count`` blocks, less Qwen2.5-VL's window-attention blocks
    before the last (their queries see only their window, so they have no frame-wide summary query and their
    per-window softmax would not compare across the windows of a frame). The last block is always scored."""
    last = len(visual.blocks) - 1
    full = getattr(visual, "fullatt_block_indexes", None)
    return [i for i in scored_layers(last, count) if full is None or i in full or i == last]


def qwen_vision_capture(adapter: Adapter, active, sink, score, span=single_layer) -> list:
    """Hooks on the scored vision blocks (the last by default; ``span(depth)`` blocks ending at it, see
    :func:`qwen_scored_blocks`): per LLM video token, the attention its 2x2 patches receive within their temporal
    patch (``score``, the mean query for ``cls``: the Qwen ViT has no [CLS] token; summed over the scored blocks and
    over the 4 merged patches), in the LLM's raster order. Each block scores within the groups its own
    ``cu_seqlens`` bound (a temporal patch, re-counted over the kept rows under ``vision="rlt"``)."""
    visual = adapter.base.visual
    score = without_cls(score)
    layers = qwen_scored_blocks(visual, span(qwen_vision_depth(adapter)))
    total = LayerSum(layers)
    state: dict = {}

    def on_visual(module, args, kwargs):
        if active():
            state["grid"] = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)

    def on_attention(i, module, args, kwargs):
        if active():
            state[i] = kwargs["cu_seqlens"], kwargs.get("position_embeddings")

    def on_qkv(i, attn, module, args, out):
        if not active():
            return
        cu, rope = state.pop(i)
        q, k = out.reshape(out.shape[0], 3, attn.num_heads, -1)[:, :2].float().unbind(1)
        if rope is not None:
            cos, sin = (t.float()[:, None] for t in rope)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        groups = torch.repeat_interleave(
            torch.arange(cu.numel() - 1, device=q.device), (cu[1:] - cu[:-1]).to(q.device)
        )
        scores = total.add(i, score(q, k, groups, attn.scaling))
        if scores is None:
            return
        merged = scores.view(-1, visual.spatial_merge_size**2).sum(-1)
        spread = getattr(adapter, "vision_units", None)  # a vision stage ran the blocks on kept units only
        merged = merged if spread is None else spread(merged)
        order = _vision_window_order(visual, state["grid"])
        sink(merged if order is None else merged[torch.argsort(order.to(merged.device))])

    handles = [visual.register_forward_pre_hook(on_visual, with_kwargs=True)]
    for i in layers:
        attn = visual.blocks[i].attn
        handles.append(attn.register_forward_pre_hook(partial(on_attention, i), with_kwargs=True))
        handles.append(attn.qkv.register_forward_hook(partial(on_qkv, i, attn)))
    return handles
