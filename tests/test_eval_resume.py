"""An interrupted ``tokpress eval`` resumes where it stopped: per-sample records stream to ``samples.jsonl``."""

from __future__ import annotations

import json

import pytest
import torch

from tokpress.errors import InputError
from tokpress.eval.accuracy.runner import STREAM_FILE, EvalConfig, evaluate, make_eval_workload
from tokpress.eval.bench.report import _jsonable

TIMING = ("ttft_ms", "decode_ms", "preprocess_ms")


@pytest.fixture(scope="module")
def work():
    return make_eval_workload(EvalConfig(model="tiny"))


def _config(**kw) -> EvalConfig:
    return EvalConfig(model="tiny", methods=("uniform",), ratios=(0.25,), n=4, n_boot=50, warmup=False, **kw)


def _per_sample(records):
    out = {}
    for r in records:
        if r["kind"] == "sample":
            row = {k: v for k, v in _jsonable(r).items() if k not in TIMING}
            out[(r["method"], float(r["ratio"]), r["sample_id"])] = row
    return out


class Stop(Exception):
    pass


def test_an_interrupted_eval_resumes_with_the_same_records(work, tmp_path):
    with torch.no_grad():
        whole, _ = evaluate(_config(), tmp_path / "whole", work=work)
        calls = []

        def interrupt(label, advance):
            calls.append(label)
            if len(calls) == 5:  # in the third sample: two of four done (two runs each: none, uniform)
                raise Stop

        with pytest.raises(Stop):
            evaluate(_config(), tmp_path / "cut", work=work, progress=interrupt)
        lines = (tmp_path / "cut" / STREAM_FILE).read_text().splitlines()
        assert json.loads(lines[0])["kind"] == "header" and len(lines) == 1 + 2 * 2  # 2 samples x 2 runs
        labels = []
        resumed, paths = evaluate(_config(), tmp_path / "cut", work=work, progress=lambda lab, adv: labels.append(lab))
    assert sum(lab.startswith("resumed") for lab in labels) == 2  # the two finished samples were not run again
    assert len([lab for lab in labels if not lab.startswith("resumed")]) == 2 * 2
    assert _per_sample(resumed) == _per_sample(whole)
    assert "results.json" in paths
    streamed = (tmp_path / "cut" / STREAM_FILE).read_text().splitlines()
    assert len(streamed) == 1 + 4 * 2  # every record once


def test_another_configuration_in_the_same_folder_is_refused_or_redone(work, tmp_path):
    with torch.no_grad():
        evaluate(_config(), tmp_path, work=work)
        with pytest.raises(InputError, match="another model or configuration.*--no-resume"):
            evaluate(_config(seed=1), tmp_path, work=work)
        records, _ = evaluate(_config(seed=1), tmp_path, work=work, resume=False)
    assert len([r for r in records if r["kind"] == "sample"]) == 8
    assert json.loads((tmp_path / STREAM_FILE).read_text().splitlines()[0])["config"]["seed"] == 1
