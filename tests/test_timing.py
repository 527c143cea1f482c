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


class _FakeEvent:
    """Stands in for ``torch.cuda.Event``: records the tick of a fake GPU timeline when recorded."""

    ticks = iter([])

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at: float | None = None
        self.synced = False

    def record(self, stream=None) -> None:
        self.at = next(_FakeEvent.ticks)

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: _FakeEvent) -> float:  # milliseconds, as CUDA's
        assert end.synced, "the end event must be waited for before reading the span"
        return end.at - self.at


def test_request_span_uses_cuda_events_on_cuda(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(_FakeEvent, "ticks", iter([100.0, 350.0, 999.0]))  # ms on the fake GPU timeline
    span = timing.RequestSpan(timing.Clock("cuda:0"))
    assert span.clock_name == "CUDA events" and span.seconds() is None
    span.start()
    assert len(syncs) == 1  # earlier work finished before the start event
    span.end()
    span.end()  # later calls (the decode steps' forwards) do not move the end
    assert span.seconds() == 0.25


def test_request_span_perf_counter_on_cpu_and_first_hook(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(ticks)))
    module = torch.nn.Linear(2, 2)
    clock = timing.Clock("cpu")
    timer = timing.StageTimer(clock, {"top": module})  # its post-hook was registered first ...
    span = timing.RequestSpan(clock)
    span.attach(module)  # ... yet the span's end runs ahead of it
    span.start()  # tick 0 (Clock.now) and tick 1 (the span's start)
    module(torch.zeros(1, 2))  # timer start 2, span end 3, timer end 4
    assert span.clock_name == "perf_counter" and span.seconds() == 2.0
    assert timer.stamps.calls["top"] == [(2.0, 4.0)]
