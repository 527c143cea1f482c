"""Data parallelism for ``tokpress eval``: shard the samples over processes, gather the records on the main one.

Launch as any ``torch.distributed`` / accelerate program::

    accelerate launch --num_processes 8 -m tokpress.cli eval ...          # 8 GPUs, one model copy each
    torchrun --nproc_per_node 2 -m tokpress.cli eval ...                  # CPU processes (gloo), or GPUs

Process ``r`` of ``w`` evaluates samples ``r, r + w, r + 2w, ...`` (interleaved, so every process sees every task
family when the benchmark lists them in turn) on its own device, streams its records to its own file
(``samples.rank<r>.jsonl``; a resumed run must use the same number of processes), and sends them to the main
process, which puts them in the order a single process would have produced and writes the one report. Per-sample
records are those a single-process run produces, timings aside (each process measures its own); the summaries are
computed once, on all records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tokpress.eval.accuracy.config import EvalConfig
    from tokpress.eval.accuracy.data import EvalSample
    from tokpress.eval.accuracy.runner import EvalWorkload

logger = logging.getLogger("tokpress")

T = TypeVar("T")

#: environment variables set by ``torchrun`` / ``accelerate launch`` for every process
WORLD_ENV = ("WORLD_SIZE", "RANK")


@dataclass(frozen=True)
class Group:
    """This process's place among the processes of a launch (``rank`` 0 of 1 when not launched)."""

    rank: int = 0
    world: int = 1
    device: str | None = None  # the device accelerate assigns this process, when launched
    state: Any = None  # accelerate's PartialState, when launched

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True when this process was started by ``torchrun`` / ``accelerate launch`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def current_group(cpu: bool = False) -> Group:
    """The process group of this launch; initialises ``torch.distributed`` through accelerate when launched."""
    if not launched():
        return Group()
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    device = state.device
    name = "cpu" if device.type == "cpu" else str(device)  # accelerate says cpu:0; tokpress's --device says cpu
    return Group(state.process_index, state.num_processes, name, state)


def shard(items: Sequence[T], group: Group) -> list[T]:
    """Items ``rank, rank + world, ...`` of ``items``: this process's share."""
    return list(items[group.rank :: group.world])


def gather(records: list[dict[str, Any]], group: Group) -> list[dict[str, Any]]:
    """Every process's records, concatenated in rank order, on every process (``records`` when not launched)."""
    if not group.distributed:
        return records
    from accelerate.utils import gather_object

    return list(gather_object(records))


def single_process_order(
    records: list[dict[str, Any]], plan: Sequence[tuple[str, float]], sample_ids: Sequence[str], batch: int
) -> list[dict[str, Any]]:
    """``records`` sorted as one process emits them: batch by batch of ``batch`` samples, each batch run by every
    ``(method, ratio)`` of ``plan`` in turn, samples in order within a run.

    Raises:
        ValueError: a record is missing or duplicated (a process failed to report, or two reported one sample).
    """
    position = {sid: i for i, sid in enumerate(sample_ids)}
    run = {(m, float(r)): j for j, (m, r) in enumerate(plan)}

    def key(rec: dict[str, Any]) -> tuple[int, int, int]:
        i = position[rec["sample_id"]]
        return i // batch, run[(rec["method"], float(rec["ratio"]))], i

    ordered = sorted(records, key=key)
    seen = {key(r) for r in ordered}
    if len(seen) != len(ordered) or len(ordered) != len(sample_ids) * len(plan):
        raise ValueError(
            f"gathered {len(ordered)} records ({len(seen)} distinct) for {len(sample_ids)} samples x {len(plan)} "
            "runs: a process did not report all its samples"
        )
    return ordered


def wait(group: Group) -> None:
    """Barrier: every process reaches this point before any goes on (no-op when not launched)."""
    if group.distributed:
        group.state.wait_for_everyone()


def eval_group(config: EvalConfig) -> Group:
    """This process's :class:`~tokpress.eval.accuracy.parallel.Group`; when launched with several processes and no
    ``config.device``, the device accelerate assigns it (``cuda:<local rank>`` or ``cpu``) becomes the device."""
    import torch

    # accelerate forms a CPU (gloo) group only when told to: a CUDA-less machine, or --device cpu
    group = current_group(cpu=config.device == "cpu" or not torch.cuda.is_available())
    if group.distributed and config.device_map is not None:
        from tokpress.eval.methods import option_error

        raise option_error(
            "device_map",
            f"device_map 'auto' spreads one model over every GPU; with {group.world} processes each would: run one "
            "process with --device-map auto, or several without it",
        )
    if group.distributed and config.device is None and group.device != "cpu":
        config.device = group.device  # cuda:<local rank>; on CPU the default already is the device
    return group


def run_shard(
    config: EvalConfig,
    work: EvalWorkload,
    samples: list[EvalSample],
    group: Group,
    progress: Callable[[str, int], None] | None,
    out: str | Path | None,
    resume: bool,
) -> list[dict[str, Any]]:
    """Run this process's shard (streamed to ``samples.rank<r>.jsonl``), gather every shard's records, and on the
    main process return them in single-process order with the summaries ([] on the others)."""
    from tokpress.eval.accuracy.config import eval_plan
    from tokpress.eval.accuracy.runner import run_eval, with_summaries
    from tokpress.eval.accuracy.stream import STREAM_FILE

    stream = None if out is None else Path(out) / STREAM_FILE.replace(".jsonl", f".rank{group.rank}.jsonl")
    mine = run_eval(
        config, work, progress, stream=stream, resume=resume, samples=shard(samples, group), summaries=False
    )
    gathered = gather(mine, group)
    if not group.main:
        return []
    ordered = single_process_order(gathered, eval_plan(config), [s.sample_id for s in samples], config.batch)
    logger.info("tokpress eval: gathered %d records from %d processes", len(ordered), group.world)
    return with_summaries(ordered, config)
