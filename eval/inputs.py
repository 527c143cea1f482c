"""Model inputs for a video prompt built straight from a model config — no tokenizer or processor needed.

Used to benchmark full-size architectures with random weights (``tokpress bench --arch``): the token layout is
exactly what the family's processor produces for a video of ``frames`` frames of ``height`` x ``width`` pixels, the
text around it is random ids, and the pixels are random.
"""

from __future__ import annotations

import math

import torch

from tokpress.errors import ConfigError


def video_token_layout(config, frames: int, height: int, width: int) -> dict:
    """How the processor of ``config.model_type`` lays out one video: tokens, grid and pixel tensor shape."""
    vision = config.vision_config
    if config.model_type in ("qwen2_vl", "qwen2_5_vl"):
        patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
        unit = patch * merge
        height, width = max(unit, round(height / unit) * unit), max(unit, round(width / unit) * unit)
        frames = max(temporal, frames - frames % temporal)
        grid = (frames // temporal, height // patch, width // patch)
        tokens = grid[0] * grid[1] * grid[2] // merge**2
        return {"tokens": tokens, "grid": grid, "pixels": (math.prod(grid), 3 * temporal * patch * patch)}
    if config.model_type == "llava_onevision":
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        size = vision.image_size
        return {"tokens": frames * side * side + 1, "grid": (frames, side, side), "pixels": (frames, 3, size, size)}
    raise ConfigError(f"no synthetic input layout for model_type {config.model_type!r}")


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
) -> dict[str, torch.Tensor]:
    """A batch of identical video prompts ``[text][video placeholders][text]`` for ``config``."""
    layout = video_token_layout(config, frames, height, width)
    gen = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size
    special = {
        getattr(config, n, None)
        for n in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }

    def text(n: int) -> list[int]:
        ids = torch.randint(10, min(vocab, 10_000), (n + 8,), generator=gen).tolist()
        return [t for t in ids if t not in special][:n]

    video_id = config.video_token_id
    qwen = config.model_type != "llava_onevision"
    ids = text(text_before)
    ids += ([config.vision_start_token_id] if qwen else []) + [video_id] * layout["tokens"]
    ids += ([config.vision_end_token_id] if qwen else []) + text(text_after)
    input_ids = torch.tensor([ids] * batch, device=device)
    out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    pixels = torch.randn(*layout["pixels"], generator=gen).to(device=device, dtype=dtype)
    if qwen:
        out["pixel_values_videos"] = pixels.repeat(batch, 1)
        out["video_grid_thw"] = torch.tensor([layout["grid"]] * batch, device=device)
        out["mm_token_type_ids"] = (input_ids == video_id).long() * 2
        if config.model_type == "qwen2_5_vl":
            out["second_per_grid_ts"] = torch.ones(batch, device=device)
    else:
        out["pixel_values_videos"] = pixels[None].expand(batch, *pixels.shape).contiguous()
    return out
