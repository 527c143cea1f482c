"""Timing for the benchmark: a clock that synchronises CUDA before every reading, forward hooks that stamp when the
vision encoder, the language model and each top-level forward start and end, and CUDA events for a request's TTFT.

Which clock times what:

* **TTFT on CUDA** — a pair of CUDA events (:class:`RequestSpan`): one recorded on the stream when ``generate()`` is
  called (after a synchronisation, so the stream is idle), one recorded by the top-level forward's post-hook at the
  end of the prefill; their ``elapsed_time`` is the span from the call to the completion of the prefill's last
  kernel, read without a host round trip at its end.
* **TTFT on CPU** — ``time.perf_counter()`` at the call and at the prefill's end.
* **Stage boundaries** (vision encoder, language model, first decode step; tokpress's compression time, measured by
  the engine with ``sync_timing``) — ``time.perf_counter()`` read right after ``torch.cuda.synchronize(device)``
  (:class:`Clock`), so a stage's time covers the kernels it launched. Events could bracket the module calls, but not
  the Python-side work between kernels (a policy's index bookkeeping), which is part of the cost being measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn


class Clock:
    """``now()`` in seconds; synchronises ``device`` first when it is a CUDA device."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


@dataclass
class Stamps:
    """Start/end times of every call of each watched module during one measured run."""

    calls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def span(self, name: str, index: int = 0) -> float | None:
        """Duration in seconds of call ``index`` of ``name`` (None if it did not happen)."""
        got = self.calls.get(name, [])
        return got[index][1] - got[index][0] if len(got) > index else None

    def total(self, name: str) -> float:
        return sum(end - start for start, end in self.calls.get(name, []))


class StageTimer:
    """Forward pre/post hooks stamping the start and end of each call of the watched modules."""

    def __init__(self, clock: Clock, modules: dict[str, nn.Module]) -> None:
        self.clock = clock
        self.stamps = Stamps()
        self._open: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._start(name)))
            self._handles.append(module.register_forward_hook(self._end(name)))

    def _start(self, name: str):
        def hook(module, args):
            self._open[name] = self.clock.now()

        return hook

    def _end(self, name: str):
        def hook(module, args, output):
            self.stamps.calls.setdefault(name, []).append((self._open.pop(name), self.clock.now()))

        return hook

    def reset(self) -> None:
        self.stamps = Stamps()
        self._open.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class RequestSpan:
    """The TTFT span of one request: CUDA events on a CUDA device, ``time.perf_counter()`` elsewhere.

    ``start()`` before ``generate()``; ``end()`` (from the prefill's post-hook) once; ``seconds()`` afterwards.
    :meth:`attach` registers ``end()`` as the first post-hook of a module, ahead of any stage timer's hook (whose
    synchronisation would otherwise count).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events = clock.device.type == "cuda"
        self._start: float | torch.cuda.Event | None = None
        self._end: float | torch.cuda.Event | None = None

    def attach(self, module: nn.Module):
        """Call :meth:`end` after every forward of ``module`` (first among its post-hooks); returns the handle."""
        return module.register_forward_hook(lambda mod, args, out: self.end(), prepend=True)

    def _mark(self) -> float | torch.cuda.Event:
        if not self.events:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.clock.device))
        return event

    def start(self) -> None:
        """Open a span: on CUDA, synchronise (earlier work must not count) and record the start event."""
        self.clock.now()
        self._start, self._end = self._mark(), None

    def end(self) -> None:
        """Close the span (the first call after :meth:`start` counts; later ones are ignored)."""
        if self._start is not None and self._end is None:
            self._end = self._mark()

    def seconds(self) -> float | None:
        """The span in seconds (``None`` when it was not closed); waits for the end event on CUDA."""
        if self._start is None or self._end is None:
            return None
        if not self.events:
            return self._end - self._start
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3

    @property
    def clock_name(self) -> str:
        return "CUDA events" if self.events else "perf_counter"
