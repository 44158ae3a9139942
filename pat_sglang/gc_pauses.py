"""Garbage-collector pauses, counted for the host-time statistics of the pack step.

The planning half of pack-forward-merge runs on the host once per decode step, inside the SGLang scheduler's process.
A step's host time can include a pause of CPython's cyclic collector, which the step did not cause alone (every object
the scheduler made since the last collection counts towards it) and which no change to the planner removes. So the
backend's statistics and ``bench/host_replay.py`` read the pauses from one process-wide clock and report the steps
with and without one apart: a slow step is then attributed to the planner or to the collector, never guessed.

``GC_PAUSES`` is installed on first use (one ``gc.callbacks`` entry per process); ``mark()`` before a step and
``since(mark)`` after it give the collections that started and the seconds spent in collections in between.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import NamedTuple


class GcMark(NamedTuple):
    """Collections started and seconds spent in them (cumulative, or between two marks). A named tuple, not a frozen
    dataclass: two are made per decode step for the backend's planning and two for the publishing, and a frozen
    dataclass's construction costs ~1 us each on the project's 2-core VM, a named tuple's a fifth of that."""

    collections: int
    seconds: float


class GcPauses:
    """Cumulative collections and seconds spent in them, process-wide (all threads: CPython collects under the GIL,
    so a collection started by another thread pauses this one too)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._installed = False
        self._lock = threading.Lock()

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.collections += 1
            self._started = time.perf_counter()
        elif self._started is not None:  # "stop"
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def install(self) -> None:
        with self._lock:
            if not self._installed:
                gc.callbacks.append(self._callback)
                self._installed = True

    def uninstall(self) -> None:
        with self._lock:
            if self._installed:
                gc.callbacks.remove(self._callback)
                self._installed = False

    def mark(self) -> GcMark:
        if not self._installed:  # once per process; the lock only then (mark runs every decode step)
            self.install()
        return GcMark(self.collections, self.seconds)

    def since(self, mark: GcMark) -> GcMark:
        """Collections started and seconds spent collecting since ``mark``."""
        return GcMark(self.collections - mark.collections, self.seconds - mark.seconds)


GC_PAUSES = GcPauses()
