"""QuoTA's frame scorer: the LVLM judges each frame's relevance to the question (a pre-pass before the compressed
prompt), for ``framebudget``'s ``scorer="lvlm"`` (the ``quota`` preset).

After QuoTA (Luo et al., AAAI 2026, "Query-oriented Token Assignment via CoT Query Decouple for Long Video
Comprehension"; authors' code ``quota_pipeline.py`` and ``tools/qwen2vl_batch.py``). What the authors do:

1. **CoT query decoupling.** The main LVLM (LLaVA-Video-7B) is asked, text only, to turn the question into a list of
   physical objects to detect, in three steps (is detection needed? yes/no; the objects; the list filtered to
   physical entities), with three worked examples; it generates up to 4,096 tokens, and the list after "Step 3:"
   is parsed (none when step 1 says "no").
2. **Per-frame prompt.** With objects: "does the image contain any of <objects>? A. yes, B. no", answered with the
   option's letter; without: the question followed by "does the image contain sufficient information to answer
   it? A. yes, B. no".
3. **Scoring.** An auxiliary small LVLM (Qwen2-VL-2B-Instruct) sees each frame as an *image*, with that prompt, in
   batches of 64 frames (one forward each, no generation); the score is the softmax over the whole vocabulary of
   the last position's logits, read at the token "A" (yes): ``p = P("A" | frame, prompt)``.
4. **Weights.** ``(100 p) ** 2``, normalised to sum 1; a frame's budget is ``int(total * weight)``
   (``framebudget`` with ``scorer="lvlm"``, ``power=2``).

Here: :func:`score_frames` does 2-4 with any model tokpress supports and its processor (the model the user runs —
the pre-pass runs with tokpress's hooks off, :func:`uncompressed` — or a separate small scorer model);
:func:`decouple_query` does 1 (greedy, text only). :func:`frame_scores` hands a request's scores to the
``framebudget`` policy of a patched model. Deviations from the authors' code, with reasons:

* each scored unit is one *grid frame* of the video as the model tokenises it — on Qwen models a temporal patch of
  2 consecutive frames — fed as a short video rather than an image, so the scorer sees exactly the pixels whose
  tokens the budget governs (an image of one frame would score half a Qwen grid frame, and LLaVA-OneVision's image
  path tiles, which its video path does not);
* the prompts are this module's own wording of the authors' (:data:`ENTITY_PROMPT`, :data:`QUESTION_PROMPT`,
  :data:`DECOUPLE_PROMPT`: same structure, same A = yes / B = no letters); pass ``prompt=`` for any other text;
* decoupling generates at most ``max_new_tokens`` (default 160, not 4,096) and parses the list without ``eval``;
* ``readout="options"`` is an addition for models that cannot answer a yes/no question (the synth model): the
  user text is the task's own question and options, and a frame's score is the largest full-vocabulary
  probability of an option's first token at the answer position — how sure the model is, from this frame alone,
  of some answer (QuoTA's "sufficient information to answer" read from the answer itself);
* frames are batched ``batch_size`` at a time (default: all frames of the video in one forward; QuoTA: 64).

Cost: one extra forward over ``T`` short prompts of one grid frame each (vision encoder on every frame once more,
plus a prefill of ``T x (tokens per frame + prompt)``), plus the decoupling generation when used. ``tokpress eval``
adds it to each sample's TTFT (``prepass_ms``); ``tokpress bench`` to the compression stage.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from tokpress.errors import ConfigError, InputError

logger = logging.getLogger("tokpress")

#: per-frame prompt with the decoupled entities (``{entities}``: comma-separated)
ENTITY_PROMPT = (
    "Does this frame show any of these objects: {entities}?\nA. yes\nB. no\n"
    "Answer with the option's letter from the given choices directly."
)
#: per-frame prompt without entities (``{question}``: the user's question)
QUESTION_PROMPT = (
    "{question}\nIs what this frame shows enough to answer the question above?\nA. yes\nB. no\n"
    "Answer with the option's letter from the given choices directly."
)
#: text-only prompt turning ``{question}`` into a list of physical entities (QuoTA's three steps, reworded)
DECOUPLE_PROMPT = """{question}
Before answering, list what to look for in the video, in three steps.
Step 1: must specific physical things be found in the video to answer? Answer only yes or no.
Step 2: if yes, which things? Give their names as a Python list and nothing else.
Step 3: keep from the list of step 2 only concrete physical things (no colours, places, times or abstract ideas);
give them as a Python list and nothing else, or null if none is left.
For example, for "How many red cups are on the wooden shelf at the end? A. 1. B. 2. C. 3. D. 4." the answer is
Step 1: yes
Step 2: ["red cups", "wooden shelf", "end"]
Step 3: ["red cups", "wooden shelf"]
and for "Which country is the film in the video from? A. France. B. Japan. C. Italy. D. Chile." it is
Step 1: no"""
READOUTS = ("yes", "options")


def _engine(model: torch.nn.Module) -> Any:
    return model.__dict__.get("tokpress")


@contextlib.contextmanager
def uncompressed(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` without tokpress's hooks inside the block and reinstall them, unchanged, on exit (the engine,
    its config, policies and ``last`` stats are the same objects; a model never patched is left alone)."""
    engine = _engine(model)
    if engine is None:
        yield model
        return
    engine.remove()
    try:
        yield model
    finally:
        engine.install()


def _as_nested(scores: Any) -> list[list[torch.Tensor]]:
    """``[sample][video]`` float tensors from a single ``[T]`` (one sample, one video) or a nested sequence."""
    if isinstance(scores, (torch.Tensor, np.ndarray)) or (
        isinstance(scores, Sequence) and len(scores) > 0 and all(isinstance(x, (int, float)) for x in scores)
    ):
        return [[torch.as_tensor(scores, dtype=torch.float32).flatten()]]
    try:
        return [[torch.as_tensor(v, dtype=torch.float32).flatten() for v in sample] for sample in scores]
    except (TypeError, ValueError):
        raise InputError(
            "frame scores must be a [T] tensor (one prompt, one video) or scores[sample][video] = [T]"
        ) from None


@contextlib.contextmanager
def frame_scores(model: torch.nn.Module, scores: Any) -> Iterator[torch.nn.Module]:
    """Within the block, the ``framebudget`` policy of the patched ``model`` budgets frames by ``scores``.

    Args:
        model: a model patched with ``outer="framebudget"`` (e.g. ``tokpress.apply(model, "quota", ...)``).
        scores: ``[T]`` (one prompt with one video) or ``scores[sample][video] = [T]``, one per grid frame
            (:func:`score_frames` returns them so); a batch row that repeats a prompt needs its own entry.
    """
    from tokpress.policies.outer.framebudget import FrameBudgetPolicy

    engine = _engine(model)
    policy = getattr(engine, "outer", None)
    if not isinstance(policy, FrameBudgetPolicy):
        raise ConfigError(
            "tokpress.frame_scores needs a model patched with outer='framebudget' "
            "(e.g. tokpress.apply(model, 'quota', retain_ratio=0.25))"
        )
    previous = policy.request_scores
    policy.request_scores = _as_nested(scores)
    try:
        yield model
    finally:
        policy.request_scores = previous


def parse_entities(text: str) -> list[str]:
    """The entities of a decoupling answer: the list after "Step 3:" (``[]`` when step 1 says no, step 3 is null
    or missing, or the list does not parse)."""
    lower = text.lower()
    step1 = re.search(r"step\s*1\s*:\s*(yes|no)", lower)
    if step1 is None or step1.group(1) != "yes":
        return []
    step3 = re.search(r"step\s*3\s*:\s*(\[[^\]]*\])", text, flags=re.IGNORECASE)
    if step3 is None:
        return []
    try:
        items = ast.literal_eval(step3.group(1))
    except (ValueError, SyntaxError):
        return []
    return [str(x).strip() for x in items if str(x).strip()] if isinstance(items, (list, tuple)) else []


@torch.no_grad()
def decouple_query(model: torch.nn.Module, processor: Any, question: str, max_new_tokens: int = 160) -> list[str]:
    """QuoTA's CoT query decoupling: the entities the model says to look for (greedy, text only, hooks off)."""
    messages = [{"role": "user", "content": [{"type": "text", "text": DECOUPLE_PROMPT.format(question=question)}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor.tokenizer([text], return_tensors="pt").to(next(model.parameters()).device)
    tok = processor.tokenizer
    with uncompressed(model):
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return parse_entities(answer)


def relevance_prompt(question: str, entities: Sequence[str] | None = None) -> str:
    """The per-frame user text: :data:`ENTITY_PROMPT` with the entities, else :data:`QUESTION_PROMPT`."""
    if entities:
        return ENTITY_PROMPT.format(entities=", ".join(entities))
    return QUESTION_PROMPT.format(question=question)


def frames_per_unit(processor: Any) -> int:
    """Video frames per grid frame of the processor's tokenisation (Qwen's ``temporal_patch_size``, else 1)."""
    video = getattr(processor, "video_processor", None)
    return int(getattr(video, "temporal_patch_size", None) or 1)


def _token_ids(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """The first token id of each text (no special tokens)."""
    ids = []
    for text in texts:
        encoded = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not encoded:
            raise InputError(f"{text!r} encodes to no tokens")
        ids.append(int(encoded[0]))
    return ids


def _units(frames: Any, group: int) -> list[np.ndarray]:
    """``[T', group, H, W, 3]`` consecutive groups of the ``[N, H, W, 3]`` frames (``N`` a multiple of ``group``)."""
    video = np.asarray(frames)
    if video.ndim != 4:
        raise InputError(f"frames must be [N, H, W, 3] (uint8), got shape {video.shape}")
    if len(video) % group:
        raise InputError(
            f"{len(video)} frames do not split into grid frames of {group}: pass a multiple of {group} "
            "(the processor would pad the last temporal patch)"
        )
    return [video[i : i + group] for i in range(0, len(video), group)]


def _processor_inputs(processor: Any, text: str, clips: list[np.ndarray], fps: float | None, device, dtype) -> dict:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    extra: dict[str, Any] = {}
    if fps is not None:
        from tokpress.eval.video import video_metadata_kwargs

        extra = video_metadata_kwargs(processor, len(clips[0]), fps, len(clips))
    batch = processor(
        text=[prompt] * len(clips), videos=list(clips), return_tensors="pt", do_sample_frames=False, **extra
    )
    inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for key in ("pixel_values_videos", "pixel_values"):
        if key in inputs:
            inputs[key] = inputs[key].to(dtype)
    return inputs


@torch.no_grad()
def score_frames(
    model: torch.nn.Module,
    processor: Any,
    frames: Any,
    question: str,
    *,
    entities: Sequence[str] | None = None,
    readout: str = "yes",
    options: Sequence[str] | None = None,
    prompt: str | None = None,
    answer_token: str = "A",
    frames_per_score: int | None = None,
    fps: float | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """QuoTA's relevance ``[T']`` (float32 in [0, 1], on the CPU) of each grid frame of ``frames`` to ``question``.

    Args:
        model / processor: a video LLM tokpress supports and its processor (the user's model, or a separate
            small scorer); a patched model runs with its hooks off.
        frames: ``[N, H, W, 3]`` uint8, the frames the compressed prompt's video is made of; ``N`` a multiple of
            ``frames_per_score``.
        question: the user's question.
        entities: decoupled entities (:func:`decouple_query`); with them the prompt asks whether the frame shows
            any of them, without them whether it suffices to answer ``question``.
        readout: ``"yes"`` (QuoTA): the full-vocabulary probability of ``answer_token`` ("A" = yes) at the answer
            position; ``"options"``: the largest such probability among the first tokens of ``options``.
        prompt: the whole user text after the frame (default: :func:`relevance_prompt`; with
            ``readout="options"`` pass the task's own question-and-options prompt).
        frames_per_score: frames per scored unit (default: the processor's temporal patch, 2 on Qwen, else 1), so
            there is one score per frame of the compressed video's grid.
        fps: frame rate of ``frames``, for processors that use it (Qwen2.5-VL / Qwen3-VL metadata).
        batch_size: units per forward (default: all in one).
    """
    if readout not in READOUTS:
        raise ConfigError(f"readout must be one of {READOUTS}, got {readout!r}")
    if readout == "options" and not options:
        raise ConfigError("readout='options' needs options=[the answer options]")
    group = frames_per_score or frames_per_unit(processor)
    clips = _units(frames, group)
    text = prompt if prompt is not None else relevance_prompt(question, entities)
    targets = _token_ids(processor.tokenizer, options if readout == "options" else [answer_token])
    param = next(model.parameters())
    step = batch_size or len(clips)
    out = []
    with uncompressed(model):
        for start in range(0, len(clips), step):
            inputs = _processor_inputs(processor, text, clips[start : start + step], fps, param.device, param.dtype)
            logits = model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            probs = torch.softmax(logits, -1)[:, targets]  # [units, targets]
            out.append(probs.max(-1).values.cpu())
    return torch.cat(out)
