"""The synth model's architecture and processor: a small real ``Qwen2_5_VLForConditionalGeneration``.

:func:`synth_model_config` builds the ``Qwen2_5_VLConfig`` (vision tower 2 blocks x 96 wide, 4 heads, window
112 px = one frame, block 1 full attention; text model 4 layers x 192, 4 heads of 48, MLP 768; about 3.1 M
parameters); :func:`build_processor` the ``Qwen2_5_VLProcessor`` (112x112 frames -> 4x4 merged tokens per
2-frame slot, ChatML template) with :func:`synth_tokenizer`.

**Word-level tokenizer.** The 256 ids and special tokens of :mod:`tokpress.eval.tiny.processor` (``<|im_end|>``
= 2 is eos, pad = 0, ``<|video_pad|>`` = 251, ...) and its printable characters stay where they are; every word
of the synth questions, options, prompt templates and chat roles (:func:`synth_words`) takes one of the reserved
ids. Text is lower-cased and split into words (letters, digits, ``'`` and ``-``: ``top-left`` is one word) and
single punctuation characters; whitespace separates and is dropped; an unknown word becomes ``<unk>``. A prompt
is then ~35 text tokens instead of ~190 characters and every option is one token, so the answer's decision is the
first (and only) word token. ``save_pretrained`` writes it as ``tokenizer.json`` and ``AutoProcessor`` reloads it
as a ``PreTrainedTokenizerFast``; nothing of tokpress is needed to use the checkpoint.

**RoPE.** Tiny head dims need small RoPE bases, or the height/width sections of M-RoPE (its lowest frequencies)
rotate by almost nothing across a 4x4 grid: text ``rope_theta=5`` with ``mrope_section=[6, 9, 9]`` (sums to
head_dim / 2), vision ``rope_theta=100``. **tokens_per_second = 1** with the synth videos' frame rate of
``SYNTH_FPS = 2`` passed as video metadata (``tokpress eval`` and ``tokpress bench`` do; so does any loader that
decodes the exported mp4 files): ``second_per_grid_ts = 2 / 2 = 1`` s and the 8 temporal grids get M-RoPE ids
0..7 on every supported transformers version. Frames passed *without* metadata make the processor assume 24 fps
(``second_per_grid_ts = 1/12``): the ids then collapse to 0 (5.17 truncates ``second_per_grid_ts`` to an int;
5.23 floors ``t / 12``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import torch

from tokpress.errors import ConfigError

FAMILY = "qwen2_5_vl"
#: Words and punctuation of the word-level tokenizer (after lower-casing).
WORD_PATTERN = r"[a-z0-9'-]+|[^\sa-z0-9'-]"


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of the model (defaults: the ~3.1 M-parameter synth model)."""

    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 768
    vision_hidden: int = 96
    vision_depth: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 384
    rope_theta: float = 5.0
    vision_rope_theta: float = 100.0
    tokens_per_second: int = 1


#: A few-thousand-parameter size for smoke tests.
MICRO = ModelSize(
    text_hidden=32,
    text_layers=2,
    text_heads=2,
    text_intermediate=64,
    vision_hidden=32,
    vision_depth=2,
    vision_heads=2,
    vision_intermediate=64,
)


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal / height / width frequency counts summing to ``head_dim // 2`` (48 -> [6, 9, 9])."""
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def synth_model_config(size: ModelSize = ModelSize()) -> Any:
    """The ``Qwen2_5_VLConfig`` of the synth model (the special token ids of :mod:`tokpress.eval.tiny.processor`)."""
    from transformers import Qwen2_5_VLConfig

    from tokpress.eval.tiny.families import PAD_ID, VISION_TOKEN_IDS, VOCAB
    from tokpress.eval.tiny.processor import IM_END_ID, IM_START_ID

    if size.text_hidden % size.text_heads or (size.text_hidden // size.text_heads) % 2:
        raise ConfigError("text_hidden / text_heads must be an even head dim")
    if size.vision_hidden % size.vision_heads or (size.vision_hidden // size.vision_heads) % 4:
        raise ConfigError("vision_hidden / vision_heads must be a head dim divisible by 4 (axial RoPE)")
    head_dim = size.text_hidden // size.text_heads
    text = dict(
        vocab_size=VOCAB,
        hidden_size=size.text_hidden,
        intermediate_size=size.text_intermediate,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_heads,
        max_position_embeddings=1024,
        pad_token_id=PAD_ID,
        bos_token_id=IM_START_ID,
        eos_token_id=IM_END_ID,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": size.rope_theta,
            "mrope_section": _mrope_section(head_dim),
        },
    )
    vision = dict(
        depth=size.vision_depth,
        hidden_size=size.vision_hidden,
        num_heads=size.vision_heads,
        intermediate_size=size.vision_intermediate,
        in_channels=3,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=[size.vision_depth - 1],
        out_hidden_size=size.text_hidden,
        tokens_per_second=size.tokens_per_second,
        rope_parameters={"rope_type": "axial", "rope_theta": size.vision_rope_theta},
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        **VISION_TOKEN_IDS,
        tie_word_embeddings=False,
    )


def build_model(size: ModelSize = ModelSize(), *, seed: int = 0, attn: str = "sdpa") -> Any:
    """A freshly initialised ``Qwen2_5_VLForConditionalGeneration`` (fp32, train mode), seeded."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(synth_model_config(size), attn_implementation=attn)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = model.config.text_config.eos_token_id, 0, None
    return model.train()


def build_processor() -> Any:
    """The model's processor: ``Qwen2_5_VLProcessor`` of ``tiny_processor("qwen2_5_vl")`` (112x112 frames, ChatML
    template) with the word-level :func:`synth_tokenizer`."""
    from tokpress.eval.tiny.processor import tiny_processor

    processor = tiny_processor(FAMILY)
    processor.tokenizer = synth_tokenizer()
    return processor


@functools.cache
def synth_words() -> tuple[str, ...]:
    """Every word of the synth prompts (sorted): questions of every task, options, prompt templates, chat roles."""
    from tokpress.eval.accuracy.data import LETTER_PROMPT, WORD_PROMPT
    from tokpress.eval.synth.tasks import COLORS, TASKS, make_questions, question_vocabulary

    texts = [WORD_PROMPT, LETTER_PROMPT, "system user assistant", *question_vocabulary()]
    texts += [f"Where is the square when it is {c}?" for c in COLORS]
    for task in TASKS:
        for seed in range(8):
            texts += [s.question for s in make_questions(task, seed)]
    words = {w for text in texts for w in re.findall(WORD_PATTERN, text.lower()) if len(w) > 1 or w.isalnum()}
    return tuple(sorted(words))


def synth_tokenizer() -> Any:
    """The word-level ``PreTrainedTokenizerFast`` of the synth model (see the module doc)."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

    from tokpress.eval.tiny.processor import UNK_ID, _vocab, fast_tokenizer

    vocab, specials = _vocab(FAMILY)
    chars = {tok for tok, i in vocab.items() if UNK_ID < i and len(tok) == 1}
    free = sorted(i for tok, i in vocab.items() if tok.startswith("<|reserved_"))
    words = [w for w in synth_words() if w not in chars]
    if len(words) > len(free):
        raise ConfigError(f"{len(words)} synth words do not fit the {len(free)} reserved ids")
    by_id = {i: tok for tok, i in vocab.items()}
    for word, i in zip(words, free):
        by_id[i] = word
    backend = Tokenizer(models.WordLevel({tok: i for i, tok in by_id.items()}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])
    return fast_tokenizer(backend)
