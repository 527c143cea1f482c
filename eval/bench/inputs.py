"""Model inputs for a video prompt built straight from a model config — no tokenizer or processor needed.

Used to benchmark full-size architectures with random weights (``tokpress bench --arch``): the token layout is
exactly what the family's processor produces for a video of ``frames`` frames of ``height`` x ``width`` pixels, the
text around it is random ids, and the pixels are random.

Per family (``frames`` are the frames the processor keeps, after its own sampling):

* Qwen2-VL / Qwen2.5-VL: ``<|vision_start|>`` + ``t*h*w/4`` video tokens + ``<|vision_end|>``, one block.
* Qwen3-VL / Qwen3-VL-MoE / Qwen3.5 / Qwen3.5-MoE (``Qwen3VLProcessor``): per temporal patch the timestamp text
  ``<{t:.1f} seconds>``, then ``<|vision_start|>`` + ``h*w/4`` video tokens + ``<|vision_end|>``. The timestamp is
  the mean time of the patch's two frames, the frames sampled at ``fps`` (default 2, the video processor's rate).
  The timestamp text is random text ids of the length the Qwen tokenizers give it (:func:`timestamp_tokens`): the
  positions (M-RoPE included) depend only on token counts, so the ids themselves do not matter for the layout.
* InternVL: per frame ``Frame{i}: <img>`` + 256 context tokens + ``</img>``, frames joined by ``\\n``; the pixels are
  ``pixel_values`` ``[frames, 3, 448, 448]`` (InternVL renames video pixels). ``<img>`` / ``</img>`` are
  ``image_token_id - 2`` / ``- 1`` (where InternVL tokenizers put them; the config has no ids for them), and
  ``\\n``, ``Frame``, ``:``, the space and each digit one fixed text id, the labels the right lengths
  (:func:`frame_label_tokens`): the InternVL adapter reads frames from that structure. Positions are 1-D.
* LLaVA-OneVision: ``frames*196 + 1`` contiguous ``<video>`` tokens. LLaVA-NeXT-Video: ``frames*144`` contiguous
  ``<video>`` tokens, ``pixel_values_videos`` ``[B, frames, 3, 336, 336]``.

Token counts of text pieces (timestamps, frame labels) follow the Qwen2 / Qwen3 byte-level BPE pre-tokenizer, which
splits every digit into its own token and keeps ``<``, ``>``, ``.``, ``:``, `` seconds``, ``Frame``, a space and a
newline whole; they were derived from that rule, not from the real vocabulary (no tokenizer ships with tokpress).
"""

from __future__ import annotations

import math

import torch

from tokpress.errors import ConfigError

QWEN2_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
#: Families using ``Qwen3VLProcessor``: timestamped per-frame blocks.
QWEN3_FAMILIES = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
LAYOUT_FAMILIES = QWEN2_FAMILIES + QWEN3_FAMILIES + ("llava_onevision", "internvl", "llava_next_video")

#: Frames per second the synthetic Qwen3-VL timestamps assume (the ``fps`` default of ``Qwen3VLVideoProcessor``).
SAMPLING_FPS = 2.0


def timestamp_tokens(seconds: float) -> int:
    """Tokens of the Qwen3-VL timestamp text ``f"<{seconds:.1f} seconds>"``.

    ``<``, one token per digit of the integer part, ``.``, the tenths digit, `` seconds`` and ``>``: e.g. 6 for
    ``<0.2 seconds>``, 7 for ``<12.2 seconds>``.
    """
    integer_digits = len(f"{seconds:.1f}") - 2
    return integer_digits + 5


def frame_label_tokens(index: int) -> int:
    """Tokens of InternVL's frame label ``f"Frame{index}: "``: ``Frame``, one per digit, ``:`` and the space."""
    return len(str(index)) + 3


def qwen3_timestamps(frames: int, temporal_patch: int, fps: float = SAMPLING_FPS) -> list[float]:
    """Seconds written before each temporal patch: frame ``i`` at ``i / fps``, the last frame repeated up to a
    multiple of ``temporal_patch`` (as the processor pads), each patch stamped with the mean of its first and last
    frame."""
    times = [i / fps for i in range(frames)]
    times += [times[-1]] * (-frames % temporal_patch)
    return [(times[i] + times[i + temporal_patch - 1]) / 2 for i in range(0, len(times), temporal_patch)]


def _qwen_grid(vision, frames: int, height: int, width: int, pad_frames: bool) -> tuple[int, int, int]:
    patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    unit = patch * merge
    height, width = max(unit, round(height / unit) * unit), max(unit, round(width / unit) * unit)
    if pad_frames:  # Qwen3-VL: the last frame is repeated up to a multiple of the temporal patch
        if frames < temporal:
            raise ConfigError(f"the Qwen3-VL video processor needs at least {temporal} frames; got {frames}")
        t = math.ceil(frames / temporal)
    else:  # Qwen2-VL: whole temporal patches
        t = max(temporal, frames - frames % temporal) // temporal
    return t, height // patch, width // patch


def video_token_layout(config, frames: int, height: int, width: int, *, fps: float = SAMPLING_FPS) -> dict:
    """How the processor of ``config.model_type`` lays out one video.

    Returns:
        ``tokens`` (placeholder tokens of the video), ``grid`` (the patch grid ``(t, h, w)``), ``pixels`` (the
        pixel tensor shape of one sample), ``blocks`` (per-frame blocks: temporal patches for Qwen3-VL, frames for
        InternVL; 1 for a single contiguous block), ``block_tokens`` (placeholders per block) and ``texts`` (text
        tokens written before each block: timestamps, frame labels; empty for single-block layouts).

    Raises:
        ConfigError: a family outside :data:`LAYOUT_FAMILIES`, or fewer frames than a Qwen3-VL temporal patch.
    """
    family, vision = config.model_type, config.vision_config
    if family in QWEN2_FAMILIES + QWEN3_FAMILIES:
        qwen3 = family in QWEN3_FAMILIES
        grid = _qwen_grid(vision, frames, height, width, pad_frames=qwen3)
        per_block = grid[1] * grid[2] // vision.spatial_merge_size**2
        temporal, patch = vision.temporal_patch_size, vision.patch_size
        texts = [timestamp_tokens(s) for s in qwen3_timestamps(frames, temporal, fps)] if qwen3 else []
        return {
            "tokens": grid[0] * per_block,
            "grid": grid,
            "pixels": (math.prod(grid), 3 * temporal * patch * patch),
            "blocks": grid[0] if qwen3 else 1,
            "block_tokens": per_block if qwen3 else grid[0] * per_block,
            "texts": texts,
        }
    if family == "llava_onevision":  # 2x2 bilinear pooling rounds up (27 -> 14), one newline per video
        size, side = vision.image_size, vision.image_size // vision.patch_size
        tokens = frames * math.ceil(side / 2) ** 2 + 1
        grid, pixels = (frames, side, side), (frames, 3, size, size)
        return {"tokens": tokens, "grid": grid, "pixels": pixels, "blocks": 1, "block_tokens": tokens, "texts": []}
    if family == "internvl":
        size, patch = _square(vision.image_size), _square(vision.patch_size)
        per_frame = round((size // patch) ** 2 * config.downsample_ratio**2)
        return {
            "tokens": frames * per_frame,
            "grid": (frames, size // patch, size // patch),
            "pixels": (frames, 3, size, size),
            "blocks": frames,
            "block_tokens": per_frame,
            "texts": [frame_label_tokens(i + 1) for i in range(frames)],
        }
    if family == "llava_next_video":
        size, side = vision.image_size, vision.image_size // vision.patch_size
        per_frame = (side // config.spatial_pool_stride) ** 2
        tokens = frames * per_frame
        grid, pixels = (frames, side, side), (frames, 3, size, size)
        return {"tokens": tokens, "grid": grid, "pixels": pixels, "blocks": 1, "block_tokens": tokens, "texts": []}
    raise ConfigError(f"no synthetic input layout for model_type {family!r}; supported: {', '.join(LAYOUT_FAMILIES)}")


def _square(value) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ConfigError(f"non-square size {tuple(value)}: synthetic inputs need square frames")
        return int(value[0])
    return int(value)


def video_placeholder_id(config) -> int:
    """The token id the video's features replace: ``video_token_id``, InternVL's image context token."""
    return config.image_token_id if config.model_type == "internvl" else config.video_token_id


def _video_ids(config, layout: dict, text) -> list[int]:
    """The video's part of the prompt: placeholders, the family's special tokens and its text pieces."""
    video_id = video_placeholder_id(config)
    family = config.model_type
    if family in QWEN3_FAMILIES:
        start, end = config.vision_start_token_id, config.vision_end_token_id
        ids: list[int] = []
        for stamp in layout["texts"]:
            ids += text(stamp) + [start] + [video_id] * layout["block_tokens"] + [end]
        return ids
    if family in QWEN2_FAMILIES:
        return [config.vision_start_token_id] + [video_id] * layout["tokens"] + [config.vision_end_token_id]
    if family == "internvl":  # "Frame{i}: <img>" + context + "</img>", joined by "\n"
        return _internvl_video_ids(layout, video_id)
    return [video_id] * layout["tokens"]


def _internvl_video_ids(layout: dict, context_id: int) -> list[int]:
    """InternVL frames with the token structure its processor writes, so that the adapter tells them from images
    as it does on processor output: ``<img>`` / ``</img>`` get the ids InternVL tokenizers give them (added right
    before ``<IMG_CONTEXT>``: ``image_token_id - 2`` and ``- 1``), and ``"\\n"``, ``Frame``, ``:``, the space and
    each digit one fixed id (the labels of different frames differ, as the real ones do)."""
    img, end = context_id - 2, context_id - 1
    newline, frame, colon, space, *digits = [t for t in range(10, 30) if t not in (context_id, img, end)][:14]
    ids: list[int] = []
    for i in range(len(layout["texts"])):
        label = [frame, *(digits[int(c)] for c in str(i + 1)), colon, space]  # frame_label_tokens(i + 1) ids
        ids += ([newline] if i else []) + label + [img] + [context_id] * layout["block_tokens"] + [end]
    return ids


def synthetic_video_inputs(
    config,
    frames: int,
    height: int = 448,
    width: int = 448,
    *,
    batch: int = 1,
    text_before: int = 16,
    text_after: int = 32,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    seed: int = 0,
    fps: float = SAMPLING_FPS,
) -> dict[str, torch.Tensor]:
    """A batch of identical video prompts ``[text][video][text]`` for ``config`` (see the module docstring).

    Returns:
        ``input_ids`` and ``attention_mask`` ``[B, L]`` plus the family's vision inputs: Qwen
        ``pixel_values_videos`` ``[B * t*h*w, 3*tp*p*p]``, ``video_grid_thw`` ``[B, 3]`` (one row per video) and
        ``mm_token_type_ids`` ``[B, L]`` (2 on video tokens; Qwen2.5-VL also ``second_per_grid_ts`` ``[B]``);
        InternVL ``pixel_values`` ``[B * frames, 3, S, S]``; LLaVA ``pixel_values_videos`` ``[B, frames, 3, S, S]``.
    """
    layout = video_token_layout(config, frames, height, width, fps=fps)
    gen = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size
    special = {
        getattr(config, n, None)
        for n in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }

    def text(n: int) -> list[int]:
        ids = torch.randint(10, min(vocab, 10_000), (n + 8,), generator=gen).tolist()
        return [t for t in ids if t not in special][:n]

    ids = text(text_before) + _video_ids(config, layout, text) + text(text_after)
    input_ids = torch.tensor([ids] * batch, device=device)
    out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    pixels = torch.randn(*layout["pixels"], generator=gen).to(device=device, dtype=dtype)
    family = config.model_type
    if family in QWEN2_FAMILIES + QWEN3_FAMILIES:
        out["pixel_values_videos"] = pixels.repeat(batch, 1)
        out["video_grid_thw"] = torch.tensor([layout["grid"]] * batch, device=device)
        out["mm_token_type_ids"] = (input_ids == config.video_token_id).long() * 2
        if family == "qwen2_5_vl":
            out["second_per_grid_ts"] = torch.ones(batch, device=device)
    elif family == "internvl":
        out["pixel_values"] = pixels.repeat(batch, 1, 1, 1)
    else:
        out["pixel_values_videos"] = pixels[None].expand(batch, *pixels.shape).contiguous()
    return out
