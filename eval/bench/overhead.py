"""Selection overhead at real sizes: every policy's ``plan`` call timed alone, on model-free synthetic inputs.

The engine hands an outer policy a :class:`~tokpress.policies.base.VideoTokens` (``[N, D]`` projected tokens in
raster order, the grid, a per-frame vision attention ``[N]`` float32 for policies that ask for it, the family) and a
budget; an inner policy gets :class:`~tokpress.policies.base.InnerTokens` (``[n, D]`` hidden states, ordinals,
attention ``[n]`` float32, sizes, the video slots). :func:`synthetic_video` builds the same from seeded random data
with the structure the methods look for: scenes of near-repeating frames (small noise, one moving object), textured
regions inside a frame, and a peaked attention. Inner policies are timed on all ``N`` video tokens at the same ratio
(their cost when used alone, the largest ``n`` they can be given).

Each (shape, policy) is called once untimed (warm-up), then ``repeats`` rounds time every pair once, in a shuffled
order per round, so a burst of load on a shared machine hits all rows alike; a record holds the median and the
minimum. The ``gather`` row is ``features[keep]`` of the same budget: the work the engine does for any plan, the
oracle's whole selection cost. On CUDA the clock synchronises before each reading (:class:`Clock`).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tokpress.config import budget as keep_count
from tokpress.errors import ConfigError
from tokpress.eval.bench.timing import Clock
from tokpress.policies.base import Grid, InnerTokens, Projections, VideoSlot, VideoTokens
from tokpress.registry import get_policy, policy_names

#: the issue's two sizes: LLaVA-OneVision-like 32 x 14 x 14 and Qwen-like 64 x 16 x 16 tokens, 3584 channels
DEFAULT_SHAPES: tuple[tuple[int, int, int, int], ...] = ((32, 14, 14, 3584), (64, 16, 16, 3584))
#: policies that need inputs this benchmark cannot make (a recorded selection)
SKIPPED = ("fixed",)
#: the decoder depth inner policies pick their default layer for (Qwen2-7B's 28 layers)
NUM_LAYERS = 28
#: question tokens after the video in the synthetic inputs (query-aware policies read them)
QUESTION_TOKENS = 16


@dataclass(frozen=True)
class Case:
    """One timed call: ``method`` at ``stage`` (``"outer"``, ``"inner"`` or ``"gather"``)."""

    method: str
    stage: str
    run: Callable[[], object]


def parse_shape(shape: str | Sequence[int]) -> tuple[int, int, int, int]:
    """``(frames, height, width, dim)`` from a 4-sequence or a ``"TxHxWxD"`` string (``"32x14x14x3584"``)."""
    parts = shape.lower().split("x") if isinstance(shape, str) else list(shape)
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ConfigError(f"overhead shape must be frames x height x width x dim, e.g. 32x14x14x3584; got {shape!r}")
    return dims  # type: ignore[return-value]


def synthetic_video(
    frames: int, height: int, width: int, dim: int, device="cpu", dtype=torch.float32, seed: int = 0
) -> VideoTokens:
    """A video-like ``VideoTokens``: ``features [T*H*W, dim]`` in ``dtype``, ``attention [T*H*W]`` float32.

    Frames come in scenes of 2-12 frames; a scene is a textured background (8 region prototypes plus per-token
    detail) repeated with 5 % noise per frame, with a 3 x 3 object moving one column per frame. The per-frame
    attention is a softmax of peaked logits (sums to 1 in each frame).
    """
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(frames, height, width)
    p = grid.per_frame
    video = torch.empty(frames, height, width, dim)
    t = 0
    while t < frames:
        length = min(int(torch.randint(2, 13, (1,), generator=gen)), frames - t)
        protos = torch.randn(8, dim, generator=gen)
        region = torch.randint(0, 8, (height, width), generator=gen)
        background = protos[region] + 0.5 * torch.randn(height, width, dim, generator=gen)
        obj = 2 * torch.randn(dim, generator=gen)
        top, left = int(torch.randint(0, max(1, height - 3), (1,), generator=gen)), 0
        for i in range(length):
            frame = background + 0.05 * torch.randn(height, width, dim, generator=gen)
            col = (left + i) % max(1, width - 2)
            frame[top : top + 3, col : col + 3] = obj
            video[t + i] = frame
        t += length
    logits = 3 * torch.randn(frames, p, generator=gen).clamp_min(0)
    attention = logits.softmax(-1).flatten()
    features = video.reshape(grid.numel, dim).to(device=device, dtype=dtype)
    question = torch.randn(QUESTION_TOKENS, dim, generator=gen).to(device=device, dtype=dtype)
    return VideoTokens(features, grid, attention=attention.to(device), family="", question=question)


def inner_tokens(video: VideoTokens, layer: int, projections: bool = False) -> InnerTokens:
    """All of ``video``'s tokens as an inner stage sees them at ``layer``: attention ``[N]`` sums to 1; with
    ``projections``, random score-layer projections of a real model's shape (``head_dim`` 128, 7 query heads per
    key head) over 4 prompt tokens, the video and :data:`QUESTION_TOKENS` question tokens."""
    n, device = video.grid.numel, video.features.device
    gen = torch.Generator().manual_seed(1)
    attention = (3 * torch.randn(n, generator=gen).clamp_min(0)).softmax(-1).to(device)
    return InnerTokens(
        video.features,
        torch.arange(n, device=device),
        attention,
        layer,
        videos=(VideoSlot(0, video.grid),),
        sizes=torch.ones(n, device=device),
        projections=random_projections(n, video.features.shape[1], gen, device) if projections else None,
    )


def random_projections(n: int, dim: int, gen: torch.Generator, device) -> Projections:
    """Projections of 4 prompt tokens, ``n`` candidates and the question, sized as a model of width ``dim``."""
    head_dim = 128
    heads = max(1, dim // head_dim)
    kv = max(1, heads // 7) if heads % max(1, heads // 7) == 0 else 1
    s = 4 + n + QUESTION_TOKENS
    return Projections(
        queries=torch.randn(s, heads, head_dim, generator=gen).to(device),
        query_index=torch.arange(s, device=device),
        question=torch.arange(s, device=device) >= 4 + n,
        keys=torch.randn(kv, s, head_dim, generator=gen).to(device),
        key_valid=torch.ones(s, dtype=torch.bool, device=device),
        candidates=torch.arange(4, 4 + n, device=device),
        scaling=head_dim**-0.5,
    )


def _stages(method: str) -> list[str]:
    stages = [s for s in ("outer", "inner") if method in policy_names(s)]  # type: ignore[arg-type]
    if not stages and method != "gather":
        known = sorted(set(policy_names("outer")) | set(policy_names("inner")))
        raise ConfigError(f"overhead: unknown policy {method!r}; choose among gather, {', '.join(known)}")
    return stages


def cases(methods: Sequence[str], video: VideoTokens, ratio: float) -> list[Case]:
    """The timed calls for ``methods`` on ``video`` (a name that is an outer and an inner policy gives both)."""
    k = keep_count(ratio, video.grid.numel)
    out = []
    for method in methods:
        if method == "gather":
            keep = torch.randperm(video.grid.numel, generator=torch.Generator().manual_seed(2))[:k].sort().values
            keep = keep.to(video.features.device)
            out.append(Case(method, "gather", lambda v=video, i=keep: v.features[i]))
        for stage in _stages(method):
            cls = get_policy(stage, method)  # type: ignore[arg-type]
            policy = cls(cls.config_cls())
            if stage == "outer":
                out.append(Case(method, stage, lambda pol=policy, v=video: pol.plan(v, k)))
            else:
                tokens = inner_tokens(
                    video, cls.default_layer(NUM_LAYERS), projections=cls.attention_queries == "projections"
                )
                out.append(Case(method, stage, lambda pol=policy, t=tokens: pol.plan(_fresh(t), k)))
    return out


def _fresh(tokens: InnerTokens) -> InnerTokens:
    """``tokens`` with an empty decode memory (a decode policy then times its first step)."""
    tokens.memory = {}
    return tokens


def default_methods() -> list[str]:
    names = set(policy_names("outer")) | set(policy_names("inner"))
    return ["gather", *sorted(names - set(SKIPPED))]


def run_overhead(
    methods: Sequence[str] | None = None,
    shapes: Sequence[str | Sequence[int]] = DEFAULT_SHAPES,
    ratio: float = 0.25,
    repeats: int = 5,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> list[dict]:
    """Time each policy's ``plan`` alone at each shape; one record per (shape, method, stage).

    Args:
        methods: policy names (default: every registered policy but ``fixed``, and the ``gather`` baseline).
        shapes: ``(frames, height, width, dim)`` tuples or ``"TxHxWxD"`` strings.
        ratio: the retain ratio (budget ``round(ratio * N)``).
        repeats: timed rounds (each method once per round, shuffled).
        device: default CUDA when available, else CPU.
        dtype: feature dtype; default bfloat16 on CUDA, float32 on CPU.

    Returns:
        records with ``method, stage, frames, height, width, dim, tokens, ratio, budget, device, dtype, repeats,
        median_ms, min_ms, times_ms``.
    """
    if not 0 < ratio <= 1:
        raise ConfigError(f"overhead ratio must be in (0, 1], got {ratio!r}")
    if repeats < 1:
        raise ConfigError(f"overhead repeats must be >= 1, got {repeats!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    methods = list(methods) if methods else default_methods()
    clock = Clock(device)
    rows: list[tuple[tuple[int, ...], Case]] = []
    for shape in shapes:
        dims = parse_shape(shape)
        video = synthetic_video(*dims, device=device, dtype=dtype, seed=seed)
        rows += [(dims, case) for case in cases(methods, video, ratio)]
    times: list[list[float]] = [[] for _ in rows]
    for _, case in rows:  # warm-up: first-call costs (allocations, kernel selection) stay out of the numbers
        case.run()
    order = list(range(len(rows)))
    shuffler = random.Random(seed)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for i in order:
            start = clock.now()
            rows[i][1].run()
            times[i].append(1000 * (clock.now() - start))
    return [_record(dims, case, ratio, ms, device, dtype) for (dims, case), ms in zip(rows, times)]


def _record(dims, case: Case, ratio: float, ms: list[float], device, dtype) -> dict:
    t, h, w, d = dims
    return {
        "method": case.method,
        "stage": case.stage,
        "frames": t,
        "height": h,
        "width": w,
        "dim": d,
        "tokens": t * h * w,
        "ratio": ratio,
        "budget": keep_count(ratio, t * h * w),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": len(ms),
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "times_ms": ms,
    }


def overhead_table(records: Sequence[dict]) -> str:
    """Markdown: one row per (method, stage), per shape the median and min milliseconds."""
    shapes = list(dict.fromkeys((r["frames"], r["height"], r["width"], r["dim"]) for r in records))
    rows = list(dict.fromkeys((r["method"], r["stage"]) for r in records))
    by = {(r["method"], r["stage"], (r["frames"], r["height"], r["width"], r["dim"])): r for r in records}
    head = ["method", "stage"] + [f"{t}x{h}x{w}x{d} median / min ms" for t, h, w, d in shapes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, stage in rows:
        cells = [method, stage]
        for s in shapes:
            r = by.get((method, stage, s))
            cells.append("—" if r is None else f"{r['median_ms']:.1f} / {r['min_ms']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if records:
        r0 = records[0]
        lines.append("")
        lines.append(
            f"ratio {r0['ratio']}, {r0['device']} {r0['dtype']}, {r0['repeats']} interleaved rounds; "
            "times are each policy's plan() alone (no model); gather = features[keep], the oracle's cost."
        )
    return "\n".join(lines)
