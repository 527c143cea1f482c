"""``device_map="auto"`` in eval and bench: a checkpoint loads through accelerate's placement and scores as it does
on one device; refused where it cannot apply (models built in code, data-parallel processes)."""

from __future__ import annotations

import pytest

from tokpress.errors import ConfigError
from tokpress.eval.accuracy import parallel
from tokpress.eval.accuracy.config import EvalConfig
from tokpress.eval.accuracy.runner import run_eval
from tokpress.eval.accuracy.workload import make_eval_workload
from tokpress.eval.bench.runner import BenchConfig, run_bench
from tokpress.eval.bench.workloads import make_workload
from tokpress.eval.methods import shipped_model_installed

needs_shipped = pytest.mark.skipif(not shipped_model_installed(), reason="the shipped synth model is not installed")
TIMINGS = ("_ms", "ttft", "speedup")


def _scored(records):
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMINGS)} for r in records if r["kind"] == "sample"]


@pytest.fixture
def placements(monkeypatch):
    """The ``device_map`` of every ``from_pretrained`` call (the call itself goes through)."""
    from transformers import AutoModelForImageTextToText

    seen, real = [], AutoModelForImageTextToText.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", classmethod(spy))
    return seen


@needs_shipped
def test_eval_with_device_map_auto_scores_as_on_one_device(placements):
    base = dict(methods=("uniform",), ratios=(0.5,), n=2, n_boot=50)
    spread = make_eval_workload(EvalConfig(device_map="auto", **base))
    one = make_eval_workload(EvalConfig(**base))
    assert placements == ["auto", {"": "cpu"}]  # accelerate places the first (on CPU here: all on the CPU)
    got = _scored(run_eval(EvalConfig(device_map="auto", **base), spread))
    assert got == _scored(run_eval(EvalConfig(**base), one)) and len(got) == 4


@needs_shipped
def test_bench_with_device_map_auto_runs_a_checkpoint(placements):
    config = BenchConfig(methods=("uniform",), ratios=(0.5,), repeats=1, warmup=0, device_map="auto")
    config.validate()
    records = run_bench(config, make_workload(config))
    assert placements == ["auto"]
    kept = {r["method"]: r for r in records}
    assert kept["uniform"]["video_tokens"] == 128 and kept["uniform"]["into_llm"] == 64


def test_device_map_is_refused_for_data_parallel_processes(monkeypatch):
    monkeypatch.setattr(parallel, "current_group", lambda cpu=False: parallel.Group(rank=0, world=2, device="cpu"))
    with pytest.raises(ConfigError, match="one process with --device-map auto") as info:
        parallel.eval_group(EvalConfig(device_map="auto"))
    assert info.value.field == "device_map"
