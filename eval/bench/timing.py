"""Stage timing for the benchmark: a clock that synchronises CUDA before every reading, and forward hooks that
stamp when the vision encoder, the language model and each top-level forward start and end.

All times come from ``time.perf_counter()`` read right after ``torch.cuda.synchronize(device)`` on CUDA, so a
stage's time covers the kernels it launched (CUDA events would avoid the host sync but cannot bracket Python-side
work such as a policy's index bookkeeping, which is part of the cost being measured).
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
