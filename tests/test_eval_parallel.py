"""Data-parallel ``tokpress eval``: sharding and reordering on crafted records, and a 2-process run (torchrun, CPU,
gloo) against a 1-process run of the same samples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tokpress.eval.accuracy.parallel import Group, shard, single_process_order


def test_shard_interleaves_and_covers_every_item_once():
    items = list(range(7))
    parts = [shard(items, Group(rank=r, world=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(items, Group()) == items


def _records(sample_ids, plan):
    return [{"sample_id": s, "method": m, "ratio": r} for m, r in plan for s in sample_ids]


def test_single_process_order_rebuilds_batches_then_runs_then_samples():
    ids, plan = ["a", "b", "c"], [("none", 1.0), ("fastv", 0.5)]
    gathered = _records(["a", "c"], plan) + _records(["b"], plan)  # rank 0 had a and c, rank 1 had b
    got = [(r["sample_id"], r["method"]) for r in single_process_order(gathered, plan, ids, batch=2)]
    # batch 0 = (a, b): none on both, then fastv on both; batch 1 = (c,)
    assert got == [("a", "none"), ("b", "none"), ("a", "fastv"), ("b", "fastv"), ("c", "none"), ("c", "fastv")]


@pytest.mark.parametrize("broken", ["missing", "duplicate"])
def test_single_process_order_refuses_an_incomplete_gather(broken):
    ids, plan = ["a", "b"], [("none", 1.0)]
    records = _records(ids, plan)
    records = records[:1] if broken == "missing" else records + records[:1]
    with pytest.raises(ValueError, match="did not report"):
        single_process_order(records, plan, ids, batch=1)


TIMING = ("_ms", "ttft", "speedup")  # measured by each process: not comparable


def _without_timings(records):
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in records]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
def test_two_processes_write_the_report_of_one(tmp_path):
    """Same per-sample records (timings aside), same summaries, one report, one stream file per rank."""
    args = ["eval", "--model", "tiny", "--methods", "uniform,fastv", "--ratios", "0.5", "--limit", "5"]
    args += ["--n-boot", "200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKPRESS_DEBUG": "1"}  # same threads: same float reductions
    one = subprocess.run(
        [sys.executable, "-m", "tokpress.cli", *args, "--out", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _free_port()]
    two = subprocess.run(
        [*launcher, "-m", "tokpress.cli", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert len(a["samples"]) == 15  # 5 samples x (none, uniform, fastv)
    assert _without_timings(a["samples"]) == _without_timings(b["samples"])
    assert _without_timings(a["summary"]) == _without_timings(b["summary"])
    assert a["config"] == b["config"]
    assert sorted(p.name for p in (tmp_path / "two").glob("samples*.jsonl")) == [
        "samples.rank0.jsonl",
        "samples.rank1.jsonl",
    ]
    assert two.stdout.count("wrote ") == 1  # only the main process reports
