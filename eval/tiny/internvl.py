"""Tiny InternVL (``InternVLForConditionalGeneration``, the InternVL3 / 3.5 ``-hf`` layout): config, inputs and
processor, offline.

The vision tower is a 2-layer InternViT at 56 px with 7-px patches: an 8 x 8 patch grid plus the CLS token, which
the ``"default"`` feature strategy drops. Pixel shuffle with ``downsample_ratio`` 0.5 folds each 2 x 2 block of
patches into one token, so a tile (an image tile or a video frame) is 4 x 4 = 16 LLM tokens
(``image_seq_length``). The text model is a Qwen2 of :data:`tokpress.eval.tiny.families._TEXT`.

The processor writes an image as ``<img>`` + 16 x tiles ``<IMG_CONTEXT>`` + ``</img>`` and a video as its frames,
each a one-tile block behind a text label, joined by newlines::

    Frame1: <img><IMG_CONTEXT>*16</img>\\nFrame2: <img><IMG_CONTEXT>*16</img>\\n...

Every tile's pixels go into one ``pixel_values`` ``[tiles, 3, 56, 56]`` tensor in the order the tiles appear in
the batch; the model sees only ``input_ids`` and ``pixel_values``. Shared ids: ``<IMG_CONTEXT>`` 250 (the
placeholder of image *and* video tokens), ``<video>`` 251 (expanded by the processor, never seen by the model),
``<img>`` 252, ``</img>`` 253; every other character is one token of the character-level vocabulary of
:mod:`tokpress.eval.tiny.processor`. Frames are never protected (:data:`EXTRA` = 0); positions are 1-D.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch

from tokpress.eval.tiny.families import _TEXT, IMAGE_ID, VIDEO_ID, VISION_END_ID, VISION_START_ID, VideoSpec, left_pad

#: Tile side in pixels (the InternViT ``image_size``) and InternViT patch size.
SIDE, PATCH = 56, 7
#: LLM tokens per tile side after the 0.5 pixel shuffle: 8 patches -> 4 tokens.
FRAME_SIDE = (SIDE // PATCH) // 2
#: LLM tokens per tile (image tile or video frame): the processor's and the config's ``image_seq_length``.
FRAME_TOKENS = FRAME_SIDE * FRAME_SIDE
#: Protected video tokens per video: none.
EXTRA = 0
#: The token strings of the shared placeholder ids, as the InternVL tokenizer names them.
SPECIAL_NAMES = {
    IMAGE_ID: "<IMG_CONTEXT>",
    VIDEO_ID: "<video>",
    VISION_START_ID: "<img>",
    VISION_END_ID: "</img>",
}

_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def config():
    """The tiny ``InternVLConfig``: InternViT 56 px / patch 7 (2 layers), pixel shuffle 0.5, Qwen2 text model."""
    from transformers import InternVLConfig

    vision = dict(
        model_type="internvl_vision",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=SIDE,
        patch_size=PATCH,
    )
    text = dict(_TEXT, model_type="qwen2", rope_theta=1000.0)
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_ID,
        image_seq_length=FRAME_TOKENS,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


@functools.cache
def _vocab() -> dict[str, int]:
    """The 256-entry character-level vocabulary of :mod:`tokpress.eval.tiny.processor` with InternVL's names."""
    from tokpress.eval.tiny.processor import _vocab as shared_vocab

    vocab, _ = shared_vocab("qwen2_vl")
    renamed = {SPECIAL_NAMES.get(i, tok): i for tok, i in vocab.items()}
    if sorted(renamed.values()) != sorted(vocab.values()):
        raise AssertionError("renaming the placeholders must keep every id")
    return renamed


def text_ids(text: str) -> list[int]:
    """Token ids of plain ``text`` (one token per character, as the tiny tokenizer splits it)."""
    vocab = _vocab()
    return [vocab[c] for c in text]


def tile_block(tiles: int = 1) -> list[int]:
    """``<img>`` + ``16 * tiles`` ``<IMG_CONTEXT>`` + ``</img>``: one image of ``tiles`` tiles, or one frame."""
    return [VISION_START_ID, *[IMAGE_ID] * (FRAME_TOKENS * tiles), VISION_END_ID]


def video_ids(frames: int) -> list[int]:
    """A video as the processor writes it: ``"\\n".join("Frame{i}: " + one-tile block)``."""
    ids: list[int] = []
    for i in range(frames):
        ids += text_ids(("\n" if i else "") + f"Frame{i + 1}: ") + tile_block()
    return ids


def make_inputs(
    prompts: list[tuple[int, int]] | None = None,
    video: VideoSpec | list[VideoSpec] = VideoSpec(),
    *,
    with_image: bool = False,
    with_video: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A left-padded batch laid out as ``InternVLProcessor`` lays it out.

    Args:
        prompts: per sample ``(text_before, text_after)`` random-token counts around the video; default one
            ``(5, 7)``.
        video: one spec for all samples or one per sample; only ``frames`` matters (tiles are 56 x 56), and the
            samples may differ in it.
        with_image: put one single-tile image (``<img>`` + 16 ``<IMG_CONTEXT>`` + ``</img>`` + ``"\\n"``, as the
            chat template writes it) before each video, to check that images are left alone.
        with_video: if False, no video.
        seed: seeds the text ids and pixels.
        dtype: dtype of ``pixel_values``.

    Returns:
        ``input_ids`` / ``attention_mask`` ``[B, L]`` and, with any tile, ``pixel_values`` ``[tiles, 3, 56, 56]``
        (every tile of the batch, in the order the tiles appear).
    """
    prompts = prompts or [(5, 7)]
    specs = video if isinstance(video, list) else [video] * len(prompts)
    gen = torch.Generator().manual_seed(seed)
    rows, tiles = [], 0
    for (before, after), spec in zip(prompts, specs):
        ids = torch.randint(4, 200, (before,), generator=gen).tolist()
        if with_image:
            ids += tile_block() + text_ids("\n")
            tiles += 1
        if with_video:
            ids += video_ids(spec.frames)
            tiles += spec.frames
        rows.append(ids + torch.randint(4, 200, (after,), generator=gen).tolist())
    input_ids, attention_mask = left_pad(rows)
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if tiles:
        out["pixel_values"] = torch.randn(tiles, 3, SIDE, SIDE, generator=gen).to(dtype)
    return out


def batch_inputs(**kwargs: Any) -> dict[str, torch.Tensor]:
    """The invariant matrix's batch: prompts ``(5, 7)`` and ``(2, 3)`` around an 8-frame and a 4-frame video
    (128 and 64 grid tokens: ragged kept counts)."""
    return make_inputs([(5, 7), (2, 3)], [VideoSpec(frames=8), VideoSpec(frames=4)], **kwargs)


def _tiles(input_ids: torch.Tensor) -> list[int]:
    """Per sample: its tiles (image tiles and frames), i.e. its ``<IMG_CONTEXT>`` tokens / 16."""
    return ((input_ids == IMAGE_ID).sum(1) // FRAME_TOKENS).tolist()


def sample_inputs(inputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sample ``b`` of a :func:`make_inputs` batch alone, without padding, with its own tiles' pixels."""
    keep = inputs["attention_mask"][b].bool()
    out = {k: inputs[k][b : b + 1][:, keep] for k in ("input_ids", "attention_mask")}
    if "pixel_values" in inputs:
        tiles = _tiles(inputs["input_ids"])
        start = sum(tiles[:b])
        out["pixel_values"] = inputs["pixel_values"][start : start + tiles[b]]
    return out


def grid_tokens(inputs: dict[str, torch.Tensor]) -> list[int]:
    """Per sample: its video grid tokens — 16 per block right behind a ``"FrameN: "`` label (images carry no label
    and are not counted)."""
    names = {i: tok for tok, i in _vocab().items()}
    mark = lambda i: names[i] if len(names[i]) == 1 else "\x01" if i == VISION_START_ID else "\x00"  # noqa: E731
    return [
        FRAME_TOKENS * len(re.findall(r"Frame\d+: \x01", "".join(map(mark, row))))
        for row in inputs["input_ids"].tolist()
    ]


def tiny_tokenizer():
    """The character-level tokenizer of :mod:`tokpress.eval.tiny.processor` with InternVL's special tokens
    (``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ``<video>`` named as the processor reads them)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = _vocab()
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    specials = [tok for tok in vocab if len(tok) > 1 and not tok.startswith("<|reserved_")]
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        padding_side="left",
        model_max_length=4096,
        extra_special_tokens={
            "start_image_token": SPECIAL_NAMES[VISION_START_ID],
            "end_image_token": SPECIAL_NAMES[VISION_END_ID],
            "context_image_token": SPECIAL_NAMES[IMAGE_ID],
            "video_token": SPECIAL_NAMES[VIDEO_ID],
        },
    )


def processor():
    """The real ``InternVLProcessor``, offline: the character-level tokenizer, a ``GotOcr2ImageProcessor`` that
    resizes every tile to 56 x 56 (images cropped to at most 4 tiles + a thumbnail, as the released processor crops
    to 12) and an ``InternVLVideoProcessor`` that resizes every frame to 56 x 56 and never resamples in time."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    size = {"height": SIDE, "width": SIDE}
    image_processor = GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=4)
    video_processor = InternVLVideoProcessor(size=size, do_sample_frames=False)
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer(),
        video_processor=video_processor,
        image_seq_length=FRAME_TOKENS,
        chat_template=_TEMPLATE,
    )
