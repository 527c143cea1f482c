"""Training batches of the synth video-QA generator for :mod:`tokpress.eval.synth.train`.

A batch is a pure function of its :class:`BatchSpec` (step, seed, the videos' tasks and train offsets, the token-drop
settings), so it can be built in worker processes or inline with identical results. :func:`build_batch` renders the
videos, encodes every question as the eval prompt (or as packed chat turns), and attaches the dense targets the
training-only heads of :mod:`tokpress.eval.synth.heads` read: per-token labels (:func:`token_labels`), the evidence
tokens of each answer (:func:`evidence_tokens`) and the colour a position question asks about (:func:`asked_color`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tokpress.config import budget
from tokpress.eval.synth.model import build_processor
from tokpress.eval.synth.tasks import LAYOUT_COLORS, TASKS, SynthConfig, make_split


@dataclass(frozen=True)
class BatchSpec:
    """What batch ``step`` holds: one ``(task, train offset, easy)`` per video, and how to drop tokens."""

    step: int
    seed: int
    videos: tuple[tuple[str, int, bool], ...]
    drop: float  # probability that a row drops video tokens (0 before ``drop_start``)
    min_keep: float
    drop_patterns: tuple[str, ...]
    pack: bool = False  # all questions of a video in one multi-turn row (first turn = the eval prompt)


_PROCESSOR: Any = None


def _processor() -> Any:
    """A per-process processor (built once; workers build their own)."""
    global _PROCESSOR
    if _PROCESSOR is None:
        _PROCESSOR = build_processor()
    return _PROCESSOR


def encode_rows(
    processor: Any, frames: np.ndarray, samples: Sequence[Any], *, pack: bool = False
) -> tuple[dict[str, torch.Tensor], list[tuple[list[int], list[tuple[int, int]]]]]:
    """The video's processor tensors and its rows: ``(token ids, [(answer start, answer stop), ...])`` each.

    A row's prompt is tokenised exactly as ``processor(text=[chat prompt], videos=[frames])`` tokenises it (the
    ``<|video_pad|>`` placeholder expanded to the video's token count); the answer is the option word plus the
    tokenizer's end-of-turn token, as :func:`tokpress.eval.accuracy.data.encode_answers` encodes it for scoring.
    One row per sample, or with ``pack`` one row per video: the first sample's prompt and answer, then each
    further question as a text-only user turn of the chat template followed by its answer (every answer is a
    target; the first turn is exactly the single-question eval prompt).
    """
    from tokpress.eval.accuracy.data import chat_prompt, encode_answers, format_prompt

    video = processor.video_processor(videos=[frames], return_tensors="pt")
    grid = video["video_grid_thw"]
    n_tokens = int(grid.prod()) // processor.video_processor.merge_size**2
    pad, tokenizer = processor.video_token, processor.tokenizer
    rows: list[tuple[list[int], list[tuple[int, int]]]] = []
    for i, s in enumerate(samples):
        if pack and i:
            turn = [{"role": "user", "content": [{"type": "text", "text": format_prompt(s.question, s.options)}]}]
            text = "\n" + processor.apply_chat_template(turn, add_generation_prompt=True)
        else:
            text = chat_prompt(processor, format_prompt(s.question, s.options, "word")).replace(pad, pad * n_tokens)
        prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        (answer,) = encode_answers(tokenizer, [s.answer_word], True)
        if pack and i:
            ids, spans = rows[0]
            start = len(ids) + len(prompt)
            rows[0] = (ids + prompt + answer, [*spans, (start, start + len(answer))])
        else:
            rows.append((prompt + answer, [(len(prompt), len(prompt) + len(answer))]))
    return {"pixel_values_videos": video["pixel_values_videos"], "video_grid_thw": grid}, rows


def _keep_video(rng: np.random.Generator, spec: BatchSpec, grid: tuple[int, int, int]) -> np.ndarray | None:
    """Indices (sorted) of the video tokens a row keeps, or None to keep all."""
    if spec.drop <= 0 or rng.random() >= spec.drop:
        return None
    t, h, w = grid
    n = t * h * w
    ratio = float(rng.uniform(spec.min_keep, 1.0))
    pattern = spec.drop_patterns[int(rng.integers(len(spec.drop_patterns)))]
    if pattern == "frames":
        frames = np.sort(rng.choice(t, size=budget(ratio, t), replace=False))
        keep = (frames[:, None] * h * w + np.arange(h * w)[None]).ravel()
    elif pattern == "cells":
        cells = np.sort(rng.choice(h * w, size=budget(ratio, h * w), replace=False))
        keep = (np.arange(t)[:, None] * h * w + cells[None]).ravel()
    else:
        keep = np.sort(rng.choice(n, size=budget(ratio, n), replace=False))
    return keep


def build_batch(spec: BatchSpec, config: SynthConfig | None = None) -> dict[str, torch.Tensor]:
    """Render and encode batch ``spec`` (runs in a worker process or inline; a pure function of ``spec``).

    Returns CPU tensors: ``pixel_values_videos`` [V * patches, 1176], ``video_grid_thw`` [V, 3],
    ``second_per_grid_ts`` [V], ``input_ids`` [R, L] (right-padded with 0), ``lengths`` [R], ``answer_start`` [R]
    (of the row's first answer), ``answer_mask`` [R, L] (answer tokens: the targets) and ``answer_first`` [R, L]
    (each answer's first token), ``row_video`` [R], ``row_task`` [R] (index into :data:`TASKS`), ``keep`` [R, L]
    (True: the row keeps this token; False: padding or a dropped video token), ``labels`` [V, N, 6]
    (:func:`token_labels`), ``answer_query`` [R, A] (position of the token that predicts each answer; -1: none)
    and ``answer_evidence`` [R, A, N] (:func:`evidence_tokens` of each answer's question). With ``spec.pack`` a
    video's questions are shuffled and packed into one row.
    """
    from tokpress.eval.tiny.families import PAD_ID, VIDEO_ID

    processor = _processor()
    base = config or SynthConfig()
    easy_config = dataclasses.replace(base, distractors=0, texture=False)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, spec.step, 7]))
    pixels, grids, rows, labels = [], [], [], []
    for v, (task, offset, easy) in enumerate(spec.videos):
        samples = make_split(
            "train", 1, easy_config if easy else base, tasks=[task], offset=offset, all_questions=True
        )
        if spec.pack:
            samples = [samples[int(i)] for i in rng.permutation(len(samples))]
        video, encoded = encode_rows(processor, samples[0].frames, samples, pack=spec.pack)
        pixels.append(video["pixel_values_videos"])
        grids.append(video["video_grid_thw"][0])
        labels.append(token_labels(samples[0].layout))
        targets = [(evidence_tokens(s, labels[-1]), asked_color(s)) for s in samples]  # per question, in row order
        for i, (ids, spans) in enumerate(encoded):
            rows.append((ids, spans, v, TASKS.index(task), targets if spec.pack else [targets[i]]))
    width = max(len(ids) for ids, *_ in rows)
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    answer_first = torch.zeros((len(rows), width), dtype=torch.bool)
    n_answers = max(len(spans) for _, spans, *_ in rows)
    answer_query = torch.full((len(rows), n_answers), -1, dtype=torch.long)
    answer_asked = torch.full((len(rows), n_answers), -1, dtype=torch.long)
    answer_evidence = torch.zeros((len(rows), n_answers, labels[0].shape[0]), dtype=torch.bool)
    for r, (ids, spans, v, _, targets) in enumerate(rows):
        for a, ((start, _), (ev, asked)) in enumerate(zip(spans, targets)):
            answer_query[r, a], answer_evidence[r, a], answer_asked[r, a] = start - 1, ev, asked
        row = torch.tensor(ids, dtype=torch.long)
        input_ids[r, : len(ids)] = row
        keep[r, : len(ids)] = True
        for start, stop in spans:
            answer_mask[r, start:stop] = True
            answer_first[r, start] = True
        grid = tuple(int(x) for x in grids[v])
        merged = (grid[0], grid[1] // 2, grid[2] // 2)
        kept = _keep_video(rng, spec, merged)
        if kept is not None:
            where = (row == VIDEO_ID).nonzero().squeeze(1)
            dropped = torch.ones(len(where), dtype=torch.bool)
            dropped[torch.from_numpy(kept)] = False
            keep[r, where[dropped]] = False
    return {
        "pixel_values_videos": torch.cat(pixels),
        "video_grid_thw": torch.stack(grids),
        "second_per_grid_ts": torch.full((len(grids),), _seconds_per_grid(processor), dtype=torch.float32),
        "input_ids": input_ids,
        "lengths": torch.tensor([len(ids) for ids, *_ in rows]),
        "answer_start": torch.tensor([spans[0][0] for _, spans, *_ in rows]),
        "answer_query": answer_query,
        "answer_evidence": answer_evidence,
        "answer_asked": answer_asked,
        "answer_mask": answer_mask,
        "answer_first": answer_first,
        "row_video": torch.tensor([r[2] for r in rows]),
        "row_task": torch.tensor([r[3] for r in rows]),
        "keep": keep,
        "labels": torch.stack(labels),
    }


def asked_color(sample: Any) -> int:
    """The :data:`~tokpress.eval.synth.tasks.LAYOUT_COLORS` code of a position question's color, else -1."""
    return LAYOUT_COLORS.index(sample.metadata["variant"]) if sample.task == "position" else -1


def evidence_tokens(sample: Any, labels: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: the video tokens that hold the answer to ``sample``'s question (from the scene's ground truth).

    ``color_extremes``: the square in the asked phase (first / last); ``direction``: the moving square everywhere;
    ``flash_count``: the lamp while it is on; ``needle``: the tokens that differ from slot 0 (the needle);
    ``position``: the square while it has the asked colour.
    """
    meta, color, slot = sample.metadata, labels[:, 0], labels[:, 2]
    task = sample.task
    if task == "color_extremes":
        s0, s1 = meta["phase_slots"][0 if meta["variant"] == "start" else 2]
        row, col = meta["cell"]
        return (labels[:, 3] == row) & (labels[:, 4] == col) & (slot >= s0) & (slot < s1)
    if task == "direction":
        return color == LAYOUT_COLORS.index(meta["color"])
    if task == "flash_count":
        return color == LAYOUT_COLORS.index("lamp-on")
    if task == "needle":
        return labels[:, 5] == 1
    return color == LAYOUT_COLORS.index(meta["variant"])  # position: the variant is the asked colour


#: Columns of :func:`token_labels` and the classes of each.
LABELS: tuple[str, ...] = ("color", "shape", "slot", "row", "col", "changed")


def token_labels(layout: np.ndarray) -> torch.Tensor:
    """Per-video-token targets of a synth video, in Qwen's token order (slot, row, col).

    Args:
        layout: ``[T, grid, grid, 2]`` :attr:`~tokpress.eval.synth.tasks.Sample.layout` (colour code, shape code).

    Returns:
        ``[T / 2 * grid * grid, 6]`` long: colour code, shape code (of the slot's first frame: a one-frame needle
        is painted there), slot, row, col, and ``changed`` (1 where the cell holds something other than at slot 0).
    """
    cells = torch.from_numpy(np.ascontiguousarray(layout[0::2])).long()  # [S, G, G, 2]
    slots, grid = cells.shape[0], cells.shape[1]
    s, r, c = torch.meshgrid(torch.arange(slots), torch.arange(grid), torch.arange(grid), indexing="ij")
    changed = (cells[..., 0] > 0) & (cells != cells[:1]).any(-1)
    out = torch.stack([cells[..., 0], cells[..., 1], s, r, c, changed.long()], dim=-1)
    return out.reshape(-1, len(LABELS))


def _seconds_per_grid(processor: Any) -> float:
    """``second_per_grid_ts`` the Qwen2.5-VL processor reports for a synth video (``SYNTH_FPS`` metadata: 1.0 s)."""
    if not hasattr(processor, "_synth_spg"):
        from tokpress.eval.accuracy.data import chat_prompt
        from tokpress.eval.synth.tasks import SYNTH_FPS
        from tokpress.eval.video import video_metadata_kwargs

        frames = np.zeros((2, 28, 28, 3), np.uint8)
        meta = video_metadata_kwargs(processor, len(frames), SYNTH_FPS)
        out = processor(text=[chat_prompt(processor, "?")], videos=[frames], return_tensors="pt", **meta)
        processor._synth_spg = float(out["second_per_grid_ts"][0])
    return processor._synth_spg


def _worker_init(_: int | None = None) -> None:
    torch.set_num_threads(1)


class _Specs(torch.utils.data.Dataset):
    """A block of batch specs as a map-style dataset (one item = one whole batch)."""

    def __init__(self, specs: Sequence[BatchSpec], config: SynthConfig) -> None:
        self.specs, self.config = list(specs), config

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return build_batch(self.specs[i], self.config)


def iterate_batches(specs: Sequence[BatchSpec], config: SynthConfig, workers: int, prefetch: int) -> Iterator:
    """Batches of ``specs`` in order, built by ``workers`` processes (0: inline)."""
    if workers <= 0:
        for spec in specs:
            yield build_batch(spec, config)
        return
    loader = torch.utils.data.DataLoader(
        _Specs(specs, config),
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(specs)),
        prefetch_factor=prefetch,
        worker_init_fn=_worker_init,
    )
    yield from loader
