"""Real Hugging Face processors for the tiny models of :mod:`tokpress.eval.tiny.families`, built in code and offline.

:func:`tiny_processor` returns the family's actual ``transformers`` processor class (``Qwen2VLProcessor``,
``Qwen2_5_VLProcessor`` or ``LlavaOnevisionProcessor``) assembled from

* a character-level tokenizer made with the ``tokenizers`` library and wrapped in ``PreTrainedTokenizerFast``. Its
  256-token vocabulary matches :data:`tokpress.eval.tiny.families.VOCAB`::

      0 <pad>   1 <|im_start|>   2 <|im_end|> (eos)   3 <unk>   4.. "\\n" and printable ASCII   ..249 reserved
      250 <|image_pad|> (Qwen) / <image> (LLaVA-OV)   251 <|video_pad|> (Qwen) / <video> (LLaVA-OV)
      252 <|vision_start|>   253 <|vision_end|>   254 <|endoftext|>   255 reserved

* the family's image and video processors, sized for the tiny vision towers. Qwen's smart resize rounds frame
  sides to multiples of 28 and bounds the area to [28x28, 112x112] pixels, so 112x112 frames stay 112x112: an 8x8
  grid of 14-pixel patches per temporal patch of 2 frames, 4x4 = 16 merged LLM tokens; larger frames shrink to fit.
  LLaVA-OneVision resizes every frame to 56x56 (8x8 SigLIP patches, pooled to 4x4 = 16 tokens per frame, plus one
  newline per video). Frames are never resampled in time (``do_sample_frames=False``);
* a minimal ChatML chat template in the family's style, so ``processor.apply_chat_template`` renders the video
  placeholder (``<|vision_start|><|video_pad|><|vision_end|>`` for Qwen, ``<video>`` for LLaVA-OneVision) as the
  released checkpoints do.

Nothing is downloaded or read from disk. Example::

    processor = tiny_processor("qwen2_vl")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt")  # frames: uint8 [T, H, W, 3]
"""

from __future__ import annotations

from typing import Any

from tokpress.eval.tiny.families import (
    FAMILIES,
    IMAGE_ID,
    MODULE_FAMILIES,
    PAD_ID,
    VIDEO_ID,
    VISION_END_ID,
    VISION_START_ID,
    VOCAB,
    family_module,
)

#: Largest frame the Qwen processors keep at full size: 112x112 pixels = a 4x4 grid of merged 28x28 tokens.
QWEN_MAX_PIXELS = 112 * 112
#: Smallest frame area the Qwen processors upscale to (one merged 28x28 token per side pair of patches).
QWEN_MIN_PIXELS = 28 * 28
#: LLaVA-OneVision frame side: the tiny SigLIP's ``image_size``.
LLAVA_SIDE = 56
#: SigLIP patches per LLaVA-OneVision frame before pooling: (56 / 7) ** 2.
LLAVA_NUM_IMAGE_TOKENS = (LLAVA_SIDE // 7) ** 2

IM_START_ID, IM_END_ID, UNK_ID, ENDOFTEXT_ID = 1, 2, 3, 254

_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}<video>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% endif %}"
    "<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vocab(family: str) -> tuple[dict[str, int], list[str]]:
    """The 256-entry vocabulary of ``family`` and its special tokens."""
    qwen = family != "llava_onevision"
    specials = {
        "<pad>": PAD_ID,
        "<|im_start|>": IM_START_ID,
        "<|im_end|>": IM_END_ID,
        "<unk>": UNK_ID,
        "<|image_pad|>" if qwen else "<image>": IMAGE_ID,
        "<|video_pad|>" if qwen else "<video>": VIDEO_ID,
        "<|vision_start|>": VISION_START_ID,
        "<|vision_end|>": VISION_END_ID,
        "<|endoftext|>": ENDOFTEXT_ID,
    }
    chars = ["\n", *map(chr, range(32, 127))]
    vocab = dict(specials)
    vocab.update({c: UNK_ID + 1 + i for i, c in enumerate(chars)})
    taken = set(vocab.values())
    vocab.update({f"<|reserved_{i}|>": i for i in range(VOCAB) if i not in taken})
    if len(vocab) != VOCAB or sorted(vocab.values()) != list(range(VOCAB)):
        raise AssertionError("tiny vocabulary must fill ids 0..255 exactly once")
    return vocab, list(specials)


def tiny_tokenizer(family: str):
    """A character-level ``PreTrainedTokenizerFast`` whose 256 ids match the tiny models (see module docstring)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab, specials = _vocab(family)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])
    return fast_tokenizer(backend)


def fast_tokenizer(backend: Any) -> Any:
    """``backend`` (a ``tokenizers.Tokenizer`` over the tiny ids) as a left-padding ``PreTrainedTokenizerFast``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        padding_side="left",
        model_max_length=4096,
    )


def _qwen_processor(family: str, tokenizer: Any):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    sizes: dict[str, Any] = dict(
        size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    image_processor = Qwen2VLImageProcessor(**sizes)
    video_processor = Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=False, do_sample_frames=False)
    cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_QWEN_TEMPLATE,
    )


def _llava_onevision_processor(tokenizer: Any):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    size = {"height": LLAVA_SIDE, "width": LLAVA_SIDE}
    image_processor = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[LLAVA_SIDE, LLAVA_SIDE]])
    video_processor = LlavaOnevisionVideoProcessor(size=size, do_sample_frames=False)
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=LLAVA_NUM_IMAGE_TOKENS,
        vision_feature_select_strategy="full",
        chat_template=_LLAVA_TEMPLATE,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_9",
    )


def tiny_processor(family: str):
    """The real ``transformers`` processor of ``family`` (one of
    :data:`~tokpress.eval.tiny.families.FAMILIES`), offline.

    Returns:
        ``Qwen2VLProcessor`` / ``Qwen2_5_VLProcessor`` / ``LlavaOnevisionProcessor`` with a tiny tokenizer, image
        and video processors sized for ``tiny_model(family)`` and a minimal chat template.
    """
    if family in MODULE_FAMILIES:
        return family_module(family).processor()
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {FAMILIES + MODULE_FAMILIES}")
    tokenizer = tiny_tokenizer(family)
    if family == "llava_onevision":
        return _llava_onevision_processor(tokenizer)
    return _qwen_processor(family, tokenizer)


__all__ = ["tiny_processor", "tiny_tokenizer"]
