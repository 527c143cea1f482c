"""Tiny random-weight video LLMs built from configs in code, and inputs laid out as their processors lay them out.

Nothing here downloads anything: the models are the real ``transformers`` classes with small sizes, so the
forward paths, caches and masks that tokpress hooks into are exactly those of the full-size checkpoints.
Used by the test-suite and by ``tokpress demo``.

Token ids of the shared 256-token vocabulary::

    <image> 250   <video>/<|video_pad|> 251   <|vision_start|> 252   <|vision_end|> 253   pad 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

IMAGE_ID, VIDEO_ID, VISION_START_ID, VISION_END_ID, PAD_ID = 250, 251, 252, 253, 0
#: The vision placeholder ids as ``config`` keyword arguments (every tiny / synth config uses them).
VISION_TOKEN_IDS = dict(
    image_token_id=IMAGE_ID,
    video_token_id=VIDEO_ID,
    vision_start_token_id=VISION_START_ID,
    vision_end_token_id=VISION_END_ID,
)
VOCAB = 256
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava_onevision")
#: Families whose tiny model lives in its own module ``tokpress.eval.tiny.<family>`` (see :func:`family_module`).
MODULE_FAMILIES = ("qwen3_vl", "qwen3_5", "internvl", "llava_next_video")
#: Every family with a tiny model.
ALL_FAMILIES = FAMILIES + MODULE_FAMILIES
#: Mixture-of-experts variants (``tokpress.eval.tiny.<family>`` too): the dense family's layout and adapter with
#: a sparse MLP; the invariant matrix runs a subset of methods on them.
MOE_FAMILIES = ("qwen3_vl_moe", "qwen3_5_moe")

_TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    pad_token_id=PAD_ID,
    bos_token_id=1,
    eos_token_id=2,
)


def _qwen_config(family: str):
    from transformers import AutoConfig

    vision = dict(depth=2, num_heads=2, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":  # ``hidden_size`` is the merger's output width here
        vision.update(embed_dim=32, mlp_ratio=2, hidden_size=_TEXT["hidden_size"])
    else:
        vision.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=_TEXT["hidden_size"],
            window_size=56,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        )
    text = dict(_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "mrope_section": [2, 3, 3]})
    return AutoConfig.for_model(
        family,
        text_config=text,
        vision_config=vision,
        **VISION_TOKEN_IDS,
        tie_word_embeddings=False,
    )


def _llava_onevision_config():
    from transformers import LlavaOnevisionConfig

    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=7,
    )
    text = dict(_TEXT, model_type="qwen2", rope_theta=1000.0)
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[56, 56]],
        tie_word_embeddings=False,
    )


def family_module(family: str):
    """The module ``tokpress.eval.tiny.<family>`` of a family in :data:`MODULE_FAMILIES`.

    Each such module provides, with the meaning the functions of this module have for the original families:

    * ``config()``: the tiny config;
    * ``make_inputs(prompts=None, video=VideoSpec(), *, with_image=False, with_video=True, seed=0,
      dtype=torch.float32)``: a left-padded batch laid out as the family's processor lays it out;
    * ``batch_inputs()``: the two-sample ragged batch of the invariant matrix;
    * ``sample_inputs(inputs, b)``: sample ``b`` of ``batch_inputs()``'s output alone, without padding;
    * ``grid_tokens(inputs)``: per sample, its video grid tokens (protected tokens excluded);
    * ``EXTRA``: protected video tokens per video (counted in ``Stats.video_tokens``, never dropped);
    * ``processor()``: the family's real ``transformers`` processor, built offline.
    """
    import importlib

    if family not in MODULE_FAMILIES + MOE_FAMILIES:
        raise ValueError(f"{family!r} has no tiny module; those that do: {MODULE_FAMILIES + MOE_FAMILIES}")
    return importlib.import_module(f"tokpress.eval.tiny.{family}")


def tiny_config(family: str):
    """The config of a tiny model of ``family`` (one of :data:`ALL_FAMILIES`)."""
    if family in MODULE_FAMILIES + MOE_FAMILIES:
        return family_module(family).config()
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {ALL_FAMILIES}")
    return _llava_onevision_config() if family == "llava_onevision" else _qwen_config(family)


def tiny_model(family: str, *, attn: str = "sdpa", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A random-weight ``*ForConditionalGeneration`` of ``family`` in eval mode."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    config = tiny_config(family)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation=attn, dtype=dtype)
    return model.eval()


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` ``[B, L]`` (left-padded with ``PAD_ID``) and ``attention_mask`` ``[B, L]`` of token-id rows."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention_mask[i, width - len(ids) :] = 1
    return input_ids, attention_mask


@dataclass(frozen=True)
class VideoSpec:
    """A synthetic video: ``frames`` RGB frames of ``height`` x ``width`` pixels."""

    frames: int = 8
    height: int = 112
    width: int = 112


def video_token_count(family: str, spec: VideoSpec) -> int:
    """Number of LLM tokens the processor expands one video into."""
    if family == "llava_onevision":
        side = math.ceil((56 // 7) / 2)
        return spec.frames * side * side + 1
    return (spec.frames // 2) * (spec.height // 28) * (spec.width // 28)


def _qwen_video_pixels(spec: VideoSpec, gen: torch.Generator):
    grid = (spec.frames // 2, spec.height // 14, spec.width // 14)
    pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14, generator=gen)
    return pixels, torch.tensor(grid)


def make_inputs(
    family: str,
    prompts: list[tuple[int, int]] | None = None,
    video: VideoSpec | list[VideoSpec] | None = None,
    *,
    with_image: bool = False,
    with_video: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Model inputs for a left-padded batch, laid out as the family's processor lays them out.

    Args:
        family: one of :data:`FAMILIES`.
        prompts: per sample ``(text_before, text_after)`` token counts around the video; default one sample ``(5, 7)``.
        video: one spec for all samples, or one per sample (Qwen only: LLaVA batches share a frame count); default
            :class:`VideoSpec()` (the family module's default for :data:`MODULE_FAMILIES`).
        with_image: put a 4-token image before the video (Qwen) to check that images are left alone.
        with_video: if False, a text-only prompt.
        seed: seeds text ids and pixels.
        dtype: dtype of the pixel tensors.

    Returns:
        ``input_ids`` [B, L], ``attention_mask`` [B, L] and the family's vision inputs.
    """
    if family in MODULE_FAMILIES + MOE_FAMILIES:
        video_kw = {} if video is None else {"video": video}
        return family_module(family).make_inputs(
            prompts, **video_kw, with_image=with_image, with_video=with_video, seed=seed, dtype=dtype
        )
    video = VideoSpec() if video is None else video
    prompts = prompts or [(5, 7)]
    specs = video if isinstance(video, list) else [video] * len(prompts)
    gen = torch.Generator().manual_seed(seed)
    rows, pixels, grids, img_pixels, img_grids = [], [], [], [], []
    for (before, after), spec in zip(prompts, specs):
        text = lambda n: torch.randint(3, 200, (n,), generator=gen).tolist()  # noqa: E731
        ids = text(before)
        if with_image:
            ids += [VISION_START_ID, *[IMAGE_ID] * 4, VISION_END_ID] if family != "llava_onevision" else []
            img_pixels.append(torch.randn(16, 3 * 2 * 14 * 14, generator=gen))
            img_grids.append(torch.tensor([1, 4, 4]))
        if with_video:
            n = video_token_count(family, spec)
            if family == "llava_onevision":
                ids += [*[VIDEO_ID] * n]
                pixels.append(torch.randn(spec.frames, 3, 56, 56, generator=gen))
            else:
                ids += [VISION_START_ID, *[VIDEO_ID] * n, VISION_END_ID]
                p, g = _qwen_video_pixels(spec, gen)
                pixels.append(p)
                grids.append(g)
        rows.append(ids + text(after))
    input_ids, attention_mask = left_pad(rows)
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if family == "llava_onevision":
        if with_video:
            out["pixel_values_videos"] = torch.stack(pixels).to(dtype)
        return out
    mm = torch.zeros_like(input_ids)
    mm[input_ids == IMAGE_ID] = 1
    mm[input_ids == VIDEO_ID] = 2
    out["mm_token_type_ids"] = mm
    if with_video:
        out["pixel_values_videos"] = torch.cat(pixels).to(dtype)
        out["video_grid_thw"] = torch.stack(grids)
        if family == "qwen2_5_vl":
            out["second_per_grid_ts"] = torch.ones(len(grids))
    if with_image:
        out["pixel_values"] = torch.cat(img_pixels).to(dtype)
        out["image_grid_thw"] = torch.stack(img_grids)
    return out


def moving_square_video(spec: VideoSpec = VideoSpec(), side: int = 32, seed: int = 0) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames: a red square sliding diagonally over a fixed noisy checkerboard."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: spec.height, : spec.width]
    checker = (((yy // 8) + (xx // 8)) % 2 * 80 + 60).astype(np.int16)
    background = checker[..., None] + rng.integers(-20, 21, (spec.height, spec.width, 3))
    background = np.clip(background, 0, 255).astype(np.uint8)
    frames = np.repeat(background[None], spec.frames, axis=0)
    for t in range(spec.frames):
        y = x = t * (min(spec.height, spec.width) - side) // max(spec.frames - 1, 1)
        frames[t, y : y + side, x : x + side] = (220, 30, 30)
    return frames
