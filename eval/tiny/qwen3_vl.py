"""Tiny Qwen3-VL: the interface of :func:`tokpress.eval.tiny.families.family_module`, plus the layout shared with
Qwen3.5.

Qwen3-VL's processor writes one block per temporal patch of 2 frames: ``<{t:.1f} seconds>`` (text), then
``<|vision_start|>``, ``(h/32)(w/32)`` video tokens, ``<|vision_end|>``; the chat template wraps the whole video
in one more ``<|vision_start|> .. <|vision_end|>`` pair. :func:`make_inputs` lays ids out the same way, the
timestamps spelled with the ids the character-level tiny tokenizer gives them (``tiny_processor``), so a prompt
built here and one built by :func:`processor` have the same structure. Patch 16, 2x2 merge: a 128 x 128 frame pair
is one 4 x 4 block.

The tiny model has 2 vision blocks, both deepstack layers (``deepstack_visual_indexes = [0, 1]``), so decoder
layers 0 and 1 get deepstack features and an inner stage at layer 1 meets them.
"""

from __future__ import annotations

import torch

from tokpress.eval.tiny.families import (
    _TEXT,
    IMAGE_ID,
    VIDEO_ID,
    VISION_END_ID,
    VISION_START_ID,
    VISION_TOKEN_IDS,
    VideoSpec,
    left_pad,
)

EXTRA = 0
PATCH, MERGE, TEMPORAL = 16, 2, 2
UNIT = PATCH * MERGE  # pixels per LLM token side
#: frame sizes of the two samples of :func:`batch_inputs` (ragged: 64 and 16 video tokens)
BATCH_VIDEOS = [VideoSpec(frames=8, height=128, width=128), VideoSpec(frames=4, height=64, width=128)]


def vision_config() -> dict:
    return dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        in_channels=3,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
        out_hidden_size=_TEXT["hidden_size"],
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
    )


def text_config() -> dict:
    rope = {"rope_type": "default", "rope_theta": 1000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    return dict(_TEXT, head_dim=16, rope_parameters=rope)


#: the sparse MLP of the tiny MoE variants: 4 experts of width 32, 2 per token
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)


def config(model_type: str = "qwen3_vl"):
    from transformers import AutoConfig

    moe = MOE if model_type.endswith("_moe") else {}
    return AutoConfig.for_model(
        model_type,
        text_config=dict(text_config(), **moe),
        vision_config=vision_config(),
        **VISION_TOKEN_IDS,
        tie_word_embeddings=False,
    )


def char_ids(text: str) -> list[int]:
    """Ids of ``text`` in the character-level tiny tokenizer (``"\\n"`` 4, printable ASCII from 5)."""
    return [4 if c == "\n" else 5 + ord(c) - 32 for c in text]


def video_block_ids(spec: VideoSpec, fps: float = 2.0) -> list[int]:
    """The ids the processor writes for one video (inside the chat template's outer vision markers)."""
    per_block = (spec.height // UNIT) * (spec.width // UNIT)
    ids = []
    for block in range(spec.frames // TEMPORAL):
        stamp = (block * TEMPORAL + (TEMPORAL - 1) / 2) / fps  # mean time of the block's frames
        ids += char_ids(f"<{stamp:.1f} seconds>") + [VISION_START_ID, *[VIDEO_ID] * per_block, VISION_END_ID]
    return ids


def video_pixels(spec: VideoSpec, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    grid = (spec.frames // TEMPORAL, spec.height // PATCH, spec.width // PATCH)
    return torch.randn(grid[0] * grid[1] * grid[2], 3 * TEMPORAL * PATCH * PATCH, generator=gen), torch.tensor(grid)


def make_inputs(
    prompts: list[tuple[int, int]] | None = None,
    video: VideoSpec | list[VideoSpec] = BATCH_VIDEOS[0],
    *,
    with_image: bool = False,
    with_video: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    videos_per_sample: int = 1,
) -> dict[str, torch.Tensor]:
    """A left-padded batch: per sample ``text_before``, [an image,] ``videos_per_sample`` videos, ``text_after``."""
    prompts = prompts or [(5, 7)]
    specs = video if isinstance(video, list) else [video] * len(prompts)
    gen = torch.Generator().manual_seed(seed)
    rows, pixels, grids, img_pixels, img_grids = [], [], [], [], []
    for (before, after), spec in zip(prompts, specs):
        text = lambda n: torch.randint(3, 200, (n,), generator=gen).tolist()  # noqa: E731
        ids = text(before)
        if with_image:
            ids += [VISION_START_ID, *[IMAGE_ID] * 4, VISION_END_ID]
            img_pixels.append(torch.randn(16, 3 * TEMPORAL * PATCH * PATCH, generator=gen))
            img_grids.append(torch.tensor([1, 4, 4]))
        for v in range(videos_per_sample if with_video else 0):
            ids += [VISION_START_ID, *video_block_ids(spec), VISION_END_ID] + (
                text(3) if v + 1 < videos_per_sample else []
            )
            p, g = video_pixels(spec, gen)
            pixels.append(p)
            grids.append(g)
        rows.append(ids + text(after))
    input_ids, attention_mask = left_pad(rows)
    mm = torch.zeros_like(input_ids)
    mm[input_ids == IMAGE_ID] = 1
    mm[input_ids == VIDEO_ID] = 2
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm}
    if pixels:
        out["pixel_values_videos"] = torch.cat(pixels).to(dtype)
        out["video_grid_thw"] = torch.stack(grids)
    if with_image:
        out["pixel_values"] = torch.cat(img_pixels).to(dtype)
        out["image_grid_thw"] = torch.stack(img_grids)
    return out


def batch_inputs(**kwargs) -> dict[str, torch.Tensor]:
    return make_inputs(prompts=[(5, 7), (2, 3)], video=BATCH_VIDEOS, **kwargs)


def sample_inputs(inputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sample ``b`` (one video, no image) of a batch from :func:`make_inputs`, alone and without padding."""
    keep = inputs["attention_mask"][b].bool()
    out = {k: inputs[k][b : b + 1][:, keep] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    sizes = inputs["video_grid_thw"].prod(-1).tolist()
    start = sum(sizes[:b])
    out["pixel_values_videos"] = inputs["pixel_values_videos"][start : start + sizes[b]]
    out["video_grid_thw"] = inputs["video_grid_thw"][b : b + 1]
    return out


def grid_tokens(inputs: dict[str, torch.Tensor]) -> list[int]:
    return (inputs["input_ids"] == VIDEO_ID).sum(1).tolist()


def processor():
    """``Qwen3VLProcessor`` with the character-level tiny tokenizer, sized for the tiny vision tower (frames are
    resized to multiples of 32 pixels, at most 128 x 128, never resampled in time)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    from tokpress.eval.tiny.processor import _QWEN_TEMPLATE, tiny_tokenizer

    sizes = dict(patch_size=PATCH, temporal_patch_size=TEMPORAL, merge_size=MERGE)
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": UNIT * UNIT, "longest_edge": 128 * 128}, **sizes)
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": UNIT * UNIT, "longest_edge": 128 * 128 * 64},
        do_sample_frames=False,
        **sizes,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer("qwen2_vl"),
        video_processor=video_processor,
        chat_template=_QWEN_TEMPLATE,
    )
