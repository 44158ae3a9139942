"""The PAT backend's host-time statistics per decode step and the periodic stats line that reports them.

Role in pack-forward-merge: the record of *pack*'s host side as it runs in a server. Each decode step's host work (the
scheduler patch's publishing of radix paths, then the backend's planning and plan load) is recorded with the garbage
collections that ran in either part (``pat_sglang.gc_pauses``), the planning thread's own CPU time and, for the slowest
step so far, what it was (``describe_step``). ``StepStats.summary`` is the line the backend logs every
``PAT_SGLANG_LOG_INTERVAL_S``; ``bench/ab/client.py`` reads it back per benchmark point, so a change to its wording
needs that reader (and its tests) to follow. ``StepLog`` (opt-in, ``PAT_SGLANG_STEP_LOG``) writes every step as a row,
for what the line's percentiles and maxima summarize (``bench/step_log_report.py`` reads them).
"""

from __future__ import annotations

import atexit
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .decode_step import StepPhases
from .gc_pauses import GcMark
from .planner import PackPlan

# The per-step host time's distribution is kept in geometric bins: constant memory over a server's life, O(1) per step,
# and a percentile within half a bin (2^(1/32) - 1 = 2.2%) of the exact one. Steps under the first bin count in it.
HOST_BIN_FIRST_S = 1e-6
HOST_BINS_PER_OCTAVE = 16
HOST_BINS = HOST_BINS_PER_OCTAVE * 20  # up to 2^20 us ~ 1 s; longer steps count in the last bin


def nearest_rank(q: float, n: int) -> int:
    """The rank (1-based) of the ``q``-th percentile (0-100) among ``n`` values by the nearest-rank definition, which
    the stats line's percentiles use (``HostTimeBins``, and ``bench/step_log_report.py`` reading the step log)."""
    return max(1, math.ceil(q / 100.0 * n))


@dataclass
class HostTimeBins:
    """Counts of steps by host time in geometric bins (``HOST_BIN_FIRST_S`` x 2^(i / ``HOST_BINS_PER_OCTAVE``))."""

    counts: list[int] = field(default_factory=lambda: [0] * HOST_BINS)
    total: int = 0

    def add(self, seconds: float) -> None:
        ratio = seconds / HOST_BIN_FIRST_S
        i = int(math.log2(ratio) * HOST_BINS_PER_OCTAVE) if ratio > 1.0 else 0
        self.counts[min(i, HOST_BINS - 1)] += 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the steps' host time in seconds: the geometric middle of the bin holding
        the step of rank ceil(q / 100 x steps) (the nearest-rank definition); 0.0 with no step."""
        if self.total == 0:
            return 0.0
        rank = nearest_rank(q, self.total)
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return HOST_BIN_FIRST_S * 2.0 ** ((i + 0.5) / HOST_BINS_PER_OCTAVE)
        raise AssertionError("unreachable: the counts sum to total")


@dataclass
class StepStats:
    steps: int = 0
    plan_s_total: float = 0.0
    plan_s_max: float = 0.0
    delegated: int = 0  # decode batches PAT could not plan, served by the delegate
    row_reads: int = 0  # steps that read req_pool_indices back from the GPU (no published batch matched)
    gc_steps: int = 0  # steps during whose publishing or planning a garbage collection ran (gc_pauses)
    gc_s_max: float = 0.0  # the most time one step spent in collections (publishing and planning)
    plan_s_max_no_gc: float = 0.0  # the slowest planning without a collection in it: the planner's own worst
    host_s_max_no_gc: float = 0.0  # the slowest step (publishing and planning) with no collection in either
    # The most CPU time the planning thread itself spent on one step (time.thread_time): where the wall-clock maximum
    # is well above it, the step waited (for the interpreter lock held by SGLang's other threads, or for the OS).
    plan_cpu_s_max: float = 0.0
    # Publishing the step's radix paths (the scheduler patch, in ``ForwardBatch.init_new``, before the step's planning)
    # is PAT's host work too: its own mean and max, and the slowest step counting both.
    publish_s_total: float = 0.0
    publish_s_max: float = 0.0
    host_s_max: float = 0.0
    host_bins: HostTimeBins = field(default_factory=HostTimeBins)  # each step's publishing + planning, since start
    slowest: str = ""  # what the slowest step was (``describe_step``): where the next host work should go
    last_log: float = field(default_factory=lambda: float("-inf"))
    # Since the last stats line (``new_interval``): its steps and their maxima, so that a log reader can tell the
    # maxima of a stretch of traffic from those of the start (whose first wave of requests sets the ones above)
    interval_steps: int = 0
    interval_plan_s_max: float = 0.0
    interval_host_s_max: float = 0.0

    def record(
        self,
        seconds: float,
        gc: GcMark | None = None,
        cpu_seconds: float | None = None,
        describe: Callable[[], str] | None = None,
        publish_seconds: float = 0.0,
        publish_gc: GcMark | None = None,
    ) -> None:
        """One step's host time (wall clock); ``gc``: the collections that ran during it (``GC_PAUSES.since``);
        ``cpu_seconds``: the planning thread's own CPU time in it; ``describe``: what the step was, called only when
        it is the slowest so far (publishing and planning together); ``publish_seconds`` and ``publish_gc``: the
        publishing of its radix paths, before it, and the collections that ran in that."""
        self.steps += 1
        self.plan_s_total += seconds
        self.publish_s_total += publish_seconds
        self.publish_s_max = max(self.publish_s_max, publish_seconds)
        host = seconds + publish_seconds
        self.host_bins.add(host)
        if host > self.host_s_max and describe is not None:
            self.slowest = describe()
        self.host_s_max = max(self.host_s_max, host)
        self.plan_s_max = max(self.plan_s_max, seconds)
        self.interval_steps += 1
        self.interval_plan_s_max = max(self.interval_plan_s_max, seconds)
        self.interval_host_s_max = max(self.interval_host_s_max, host)
        if cpu_seconds is not None:
            self.plan_cpu_s_max = max(self.plan_cpu_s_max, cpu_seconds)
        planning_gc = gc is not None and gc.collections > 0
        publishing_gc = publish_gc is not None and publish_gc.collections > 0
        if not planning_gc:
            self.plan_s_max_no_gc = max(self.plan_s_max_no_gc, seconds)
        if planning_gc or publishing_gc:
            self.gc_steps += 1
            self.gc_s_max = max(self.gc_s_max, gc_seconds(gc) + gc_seconds(publish_gc))
        else:
            self.host_s_max_no_gc = max(self.host_s_max_no_gc, host)

    @property
    def plan_ms_mean(self) -> float:
        return 1e3 * self.plan_s_total / max(self.steps, 1)

    @property
    def publish_ms_mean(self) -> float:
        return 1e3 * self.publish_s_total / max(self.steps, 1)

    def summary(self, counters: Any, routes: str = "") -> str:
        """The stats line; ``routes``: how the published batches were read (``ChainTable.routes_clause``)."""
        return (
            f"PAT: {self.steps} decode steps, host planning {self.plan_ms_mean:.3f} ms mean / "
            f"{1e3 * self.plan_s_max:.3f} ms max; publishing radix paths {self.publish_ms_mean:.3f} ms mean / "
            f"{1e3 * self.publish_s_max:.3f} ms max, the two together {1e3 * self.host_s_max:.3f} ms max in one step, "
            f"{self.host_percentiles_clause}; "
            f"{routes + '; ' if routes else ''}"
            f"plans reused as they were {counters.plans_reused}; forests built "
            f"{counters.built} ({counters.edited} of them edited from the last), reused {counters.reused}; "
            f"requests planned without sharing (no published path) {counters.unshared}; plans coarsened to fit "
            f"the graph buffers {counters.coarse}; batches sharing too little, served by the delegate "
            f"{counters.declined} ({counters.declined_unplanned} decided without planning); batches PAT could not "
            f"plan {self.delegated}; steps reading rows back {self.row_reads}; steps with a garbage collection "
            f"{self.gc_steps} (at most {1e3 * self.gc_s_max:.3f} ms of one collecting), max of the others "
            f"{1e3 * self.plan_s_max_no_gc:.3f} ms, with publishing {1e3 * self.host_s_max_no_gc:.3f} ms; the "
            f"planning thread's own CPU time at most "
            f"{1e3 * self.plan_cpu_s_max:.3f} ms in one step; since the last line: {self.interval_steps} steps, host "
            f"planning at most {1e3 * self.interval_plan_s_max:.3f} ms, with publishing "
            f"{1e3 * self.interval_host_s_max:.3f} ms{self.slowest_clause}"
        )

    def new_interval(self) -> None:
        """Start the stretch the next stats line's "since the last line" clause covers (after a line is logged)."""
        self.interval_steps = 0
        self.interval_plan_s_max = self.interval_host_s_max = 0.0

    @property
    def host_percentiles_clause(self) -> str:
        """The steps' publishing + planning time at p50 / p90 / p99 since the start (``HostTimeBins``): what the host
        replay's per-step targets are read against, as the server meets them."""
        p50, p90, p99 = (1e3 * self.host_bins.percentile(q) for q in (50, 90, 99))
        return f"per step p50 {p50:.3f} / p90 {p90:.3f} / p99 {p99:.3f} ms"

    @property
    def slowest_clause(self) -> str:
        return f"; the slowest step: {self.slowest}" if self.slowest else ""


def gc_seconds(mark: GcMark | None) -> float:
    """The seconds spent collecting of ``GC_PAUSES.since``'s mark (0 for none)."""
    return mark.seconds if mark is not None else 0.0


def describe_step(
    batch_size: int, phases: StepPhases, load_s: float, plan: PackPlan | None, publish_s: float = 0.0,
    gc_s: float = 0.0, route: str = "",
) -> str:
    """One step's shape and host time by phase, for the stats line's slowest step; ``gc_s``: the seconds garbage
    collections took of its publishing and planning (named when there were any); ``route``: how its publishing read
    the batch (``chain_table.ROUTE_*``)."""
    what = f"{plan.num_items} items, {plan.num_partials} partials" if plan is not None else "no plan (delegate)"
    if plan is not None and plan.fallback:  # made coarser than the split model chose, to fit the graph buffers
        what += f", coarsened to fit: {plan.fallback}"
    search = " (split search)" if phases.split_search else ""
    collecting = f", of it collecting garbage {1e3 * gc_s:.3f} ms" if gc_s > 0.0 else ""
    how = f" ({route})" if route else ""
    return (f"batch {batch_size}, publish {1e3 * publish_s:.3f} ms{how}, forest {phases.forest} "
            f"{1e3 * phases.forest_s:.3f} ms, plan_forest {1e3 * phases.plan_s:.3f} ms{search}, load "
            f"{1e3 * load_s:.3f} ms, {what}{collecting}")


STEP_LOG_ENV = "PAT_SGLANG_STEP_LOG"  # a folder: each process (TP rank) writes pat-steps-<pid>.tsv there
#: the step log's columns: wall-clock time (s since the epoch), requests, the publishing route (``chain_table.ROUTE_*``,
#: "-" for a step whose batch was not published), publishing and planning (us), the forest (``StepPhases.forest``) and
#: its time, ``plan_forest``'s time and whether it searched splits, the plan's load (us), who served the step ("pat",
#: "delegate" after a forest, "declined" before any), the plan's items, and the collections' time in the step (us)
STEP_LOG_COLUMNS = ("t_s", "batch", "route", "publish_us", "plan_us", "forest", "forest_us", "plan_forest_us",
                    "split_search", "load_us", "served_by", "items", "gc_us")


STEP_LOG_FLUSH_ROWS = 256  # rows buffered before they are written (a few seconds of decode steps)


class StepLog:
    """Every decode step's host time as one TSV row (``STEP_LOG_COLUMNS``), buffered and written out every
    ``STEP_LOG_FLUSH_ROWS`` rows, with each stats line and at the process's exit (a server killed by a signal loses at
    most the rows since the last write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open("w", encoding="utf-8")
        self._rows: list[str] = ["\t".join(STEP_LOG_COLUMNS)]
        atexit.register(self.flush)

    @classmethod
    def from_env(cls) -> StepLog | None:
        """The log ``PAT_SGLANG_STEP_LOG`` asks for (its folder made if missing), or ``None`` when it is unset."""
        folder = os.environ.get(STEP_LOG_ENV, "").strip()
        if not folder:
            return None
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            return cls(Path(folder) / f"pat-steps-{os.getpid()}.tsv")
        except OSError as e:
            raise ValueError(f"{STEP_LOG_ENV}={folder!r}: cannot write the step log there ({e})") from e

    def add(self, batch_size: int, route: str, publish_s: float, plan_s: float, phases: StepPhases, load_s: float,
            plan: PackPlan | None, gc_s: float) -> None:
        if plan is not None:
            served, items = "pat", plan.num_items
        else:
            served, items = ("declined" if phases.forest == "none" else "delegate"), 0
        self._rows.append(
            f"{time.time():.6f}\t{batch_size}\t{route or '-'}\t{1e6 * publish_s:.1f}\t{1e6 * plan_s:.1f}\t"
            f"{phases.forest}\t{1e6 * phases.forest_s:.1f}\t{1e6 * phases.plan_s:.1f}\t{int(phases.split_search)}\t"
            f"{1e6 * load_s:.1f}\t{served}\t{items}\t{1e6 * gc_s:.1f}"
        )
        if len(self._rows) >= STEP_LOG_FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._rows and not self._file.closed:
            self._file.write("\n".join(self._rows) + "\n")
            self._file.flush()
            self._rows.clear()
