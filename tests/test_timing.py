"""The benchmark clock synchronises CUDA before every reading; the stage timer brackets each module call."""

from __future__ import annotations

import torch

from tokpress.eval.bench import timing


def test_clock_synchronises_cuda_before_each_reading(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("sync", str(device))))
    ticks = iter([1.0, 2.5])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: events.append(("read",)) or next(ticks))
    clock = timing.Clock("cuda:0")
    assert clock.now() == 1.0 and clock.now() == 2.5
    assert events == [("sync", "cuda:0"), ("read",), ("sync", "cuda:0"), ("read",)]  # sync precedes every read


def test_clock_does_not_synchronise_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: (_ for _ in ()).throw(AssertionError))
    assert timing.Clock("cpu").now() > 0


def test_stage_timer_brackets_calls(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(ticks)))
    inner, outer = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2))
    outer.append(inner)
    timer = timing.StageTimer(timing.Clock("cpu"), {"outer": outer, "inner": inner})
    outer(torch.zeros(1, 2))
    outer(torch.zeros(1, 2))
    # ticks: outer start 0, inner start 1, inner end 2, outer end 3; then 4..7
    assert timer.stamps.calls["outer"] == [(0.0, 3.0), (4.0, 7.0)]
    assert timer.stamps.span("inner", 1) == 1.0 and timer.stamps.total("outer") == 6.0
    assert timer.stamps.span("inner", 5) is None
    timer.remove()
    outer(torch.zeros(1, 2))
    assert len(timer.stamps.calls["outer"]) == 2
