"""Tiny LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``): config, inputs and processor, offline.

The vision tower is a 3-layer CLIP at 56 px with 7-px patches: an 8 x 8 patch grid plus the CLS token. As in the
released checkpoints, the features come from the second-to-last layer (``vision_feature_layer=-2``) with the CLS
token dropped (``"default"`` strategy), and each frame is average-pooled with stride 2 to 4 x 4 = 16 LLM tokens.
A video is one contiguous run of ``frames * 16`` ``<video>`` tokens (no newline, nothing protected), positions are
1-D. An image (anyres, one 56 x 56 tile) takes 64 base + 8 x (8 + 1 newline) = 136 ``<image>`` tokens.

``pixel_values_videos`` is one ``[videos, frames, 3, 56, 56]`` tensor, so every video of a batch has the same
number of frames; the invariant batch is ragged in its text instead (prompts ``(5, 7)`` and ``(2, 3)``).
"""

from __future__ import annotations

from typing import Any

import torch

from tokpress.eval.tiny.families import _TEXT, IMAGE_ID, VIDEO_ID, VideoSpec, left_pad

#: Frame side in pixels (the CLIP ``image_size``) and CLIP patch size.
SIDE, PATCH = 56, 7
#: ``spatial_pool_stride`` of the tiny model (the released value).
POOL_STRIDE = 2
#: LLM tokens per frame: the 8 x 8 patch grid average-pooled with stride 2.
FRAME_TOKENS = ((SIDE // PATCH) // POOL_STRIDE) ** 2
#: ``<image>`` tokens of one 56 x 56 image: base 8 x 8 + one anyres tile of 8 rows x (8 + 1 newline).
IMAGE_TOKENS = (SIDE // PATCH) ** 2 + (SIDE // PATCH) * (SIDE // PATCH + 1)
#: Protected video tokens per video: none (no newline token).
EXTRA = 0

_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'video' %}<video>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def config():
    """The tiny ``LlavaNextVideoConfig``: CLIP 56 px / patch 7 (3 layers), Llama text model of ``tiny._TEXT``."""
    from transformers import LlavaNextVideoConfig

    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=SIDE,
        patch_size=PATCH,
        projection_dim=32,
    )
    text = dict(_TEXT, model_type="llama", rope_theta=1000.0)
    return LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=[[SIDE, SIDE]],
        spatial_pool_mode="average",
        spatial_pool_stride=POOL_STRIDE,
        image_seq_length=IMAGE_TOKENS,
        video_seq_length=FRAME_TOKENS,
        tie_word_embeddings=False,
    )


def _frames(specs: list[VideoSpec]) -> int:
    counts = {spec.frames for spec in specs}
    if len(counts) != 1:
        raise ValueError(
            f"LLaVA-NeXT-Video batches one [videos, frames, ...] pixel tensor: give every video the same frame "
            f"count (got {sorted(counts)})"
        )
    return counts.pop()


def make_inputs(
    prompts: list[tuple[int, int]] | None = None,
    video: VideoSpec | list[VideoSpec] = VideoSpec(),
    *,
    with_image: bool = False,
    with_video: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A left-padded batch laid out as ``LlavaNextVideoProcessor`` lays it out.

    Args:
        prompts: per sample ``(text_before, text_after)`` token counts around the video; default one ``(5, 7)``.
        video: one spec for all samples or one per sample; only ``frames`` matters (frames are 56 x 56) and it
            must be the same for every video.
        with_image: put one 56 x 56 image (:data:`IMAGE_TOKENS` ``<image>`` tokens) before each video.
        with_video: if False, no video.
        seed: seeds the text ids and pixels.
        dtype: dtype of the pixel tensors.

    Returns:
        ``input_ids`` / ``attention_mask`` ``[B, L]``; with a video ``pixel_values_videos``
        ``[B, frames, 3, 56, 56]``; with an image ``pixel_values`` ``[B, 2, 3, 56, 56]`` (base view + one anyres
        tile) and ``image_sizes`` ``[B, 2]``.
    """
    prompts = prompts or [(5, 7)]
    specs = video if isinstance(video, list) else [video] * len(prompts)
    frames = _frames(specs)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for before, after in prompts:
        ids = torch.randint(3, 200, (before,), generator=gen).tolist()
        if with_image:
            ids += [IMAGE_ID] * IMAGE_TOKENS
        if with_video:
            ids += [VIDEO_ID] * (frames * FRAME_TOKENS)
        rows.append(ids + torch.randint(3, 200, (after,), generator=gen).tolist())
    input_ids, attention_mask = left_pad(rows)
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_video:
        out["pixel_values_videos"] = torch.randn(len(rows), frames, 3, SIDE, SIDE, generator=gen).to(dtype)
    if with_image:
        out["pixel_values"] = torch.randn(len(rows), 2, 3, SIDE, SIDE, generator=gen).to(dtype)
        out["image_sizes"] = torch.tensor([[SIDE, SIDE]] * len(rows))
    return out


def batch_inputs(**kwargs: Any) -> dict[str, torch.Tensor]:
    """The invariant matrix's batch: prompts ``(5, 7)`` and ``(2, 3)``, one 8-frame video each (128 tokens)."""
    return make_inputs([(5, 7), (2, 3)], VideoSpec(frames=8), **kwargs)


def sample_inputs(inputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sample ``b`` of a :func:`make_inputs` batch (one video / image per sample) alone, without padding."""
    keep = inputs["attention_mask"][b].bool()
    out = {k: inputs[k][b : b + 1][:, keep] for k in ("input_ids", "attention_mask")}
    for key in ("pixel_values_videos", "pixel_values", "image_sizes"):
        if key in inputs:
            out[key] = inputs[key][b : b + 1]
    return out


def grid_tokens(inputs: dict[str, torch.Tensor]) -> list[int]:
    """Per sample, its video grid tokens: every ``<video>`` token (nothing is protected)."""
    return (inputs["input_ids"] == VIDEO_ID).sum(1).tolist()


def processor():
    """The real ``LlavaNextVideoProcessor``, offline: the tiny character tokenizer (``<image>`` 250,
    ``<video>`` 251), image and video processors that resize and crop to 56 x 56, and a USER/ASSISTANT template
    in the checkpoints' style. Frames are never resampled in time."""
    from transformers import LlavaNextImageProcessor, LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor

    from tokpress.eval.tiny.processor import tiny_tokenizer

    sizes: dict[str, Any] = dict(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    return LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(**sizes, do_sample_frames=False),
        image_processor=LlavaNextImageProcessor(**sizes, image_grid_pinpoints=[[SIDE, SIDE]]),
        tokenizer=tiny_tokenizer("llava_onevision"),  # the LLaVA spelling of the placeholders
        chat_template=_TEMPLATE,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        video_token="<video>",
        image_token="<image>",
    )
