"""What the served decode steps' host time is made of: the PAT backend's step log (``PAT_SGLANG_STEP_LOG``, one row per
decode step, ``pat_sglang.step_stats.StepLog``) summarized by kind of step (CPU).

    python3 bench/step_log_report.py LOG.tsv [LOG.tsv ...] [--skip-s 0]

Each step's host time is its publishing + planning (the stats line's "per step" percentiles, and what
``bench/host_replay.py`` times). Printed: the percentiles over all steps (nearest rank), then one line per kind of step
(who served it, its forest, its publishing route) with its count, p50 / p99 / max, and how many of the steps at or
above the overall p99 it holds: where the tail is.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pat_sglang import step_stats  # noqa: E402

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LoggedStep:
    t_s: float
    batch: int
    route: str
    forest: str
    served_by: str
    split_search: bool
    host_us: float  # publishing + planning
    publish_us: float

    @property
    def kind(self) -> str:
        search = ", split search" if self.split_search else ""
        return f"{self.served_by}, forest {self.forest}{search}, published {self.route}"


def load(paths: Sequence[Path]) -> list[LoggedStep]:
    """Every row of the logs, in time order (several ranks' or runs' logs together)."""
    steps = []
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                publish = float(row["publish_us"])
                steps.append(LoggedStep(float(row["t_s"]), int(row["batch"]), row["route"], row["forest"],
                                        row["served_by"], row["split_search"] == "1",
                                        publish + float(row["plan_us"]), publish))
    steps.sort(key=lambda s: s.t_s)
    return steps


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank, as the stats line defines it (``step_stats.nearest_rank``)."""
    if not sorted_values:
        return math.nan
    return sorted_values[step_stats.nearest_rank(q, len(sorted_values)) - 1]


def report(steps: Sequence[LoggedStep]) -> str:
    if not steps:
        return "no steps"
    host = sorted(s.host_us for s in steps)
    p99 = nearest_rank(host, 99)
    lines = [f"{len(steps)} steps, host time (publishing + planning) us: "
             + ", ".join(f"p{q} {nearest_rank(host, q):.1f}" for q in PERCENTILES) + f", max {host[-1]:.1f}"]
    by_kind: dict[str, list[LoggedStep]] = defaultdict(list)
    for s in steps:
        by_kind[s.kind].append(s)
    lines.append(f"{'steps':>6} {'share %':>7} {'p50':>8} {'p99':>8} {'max':>8} {'>= p99':>6} {'batch p50':>9}  kind")
    for kind, group in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        times = sorted(s.host_us for s in group)
        batches = sorted(s.batch for s in group)
        tail = sum(t >= p99 for t in times)
        lines.append(f"{len(group):>6} {100.0 * len(group) / len(steps):>7.1f} {nearest_rank(times, 50):>8.1f} "
                     f"{nearest_rank(times, 99):>8.1f} {times[-1]:>8.1f} {tail:>6} {nearest_rank(batches, 50):>9.0f}  "
                     f"{kind}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", type=Path, nargs="+", help="pat-steps-<pid>.tsv files")
    ap.add_argument("--skip-s", type=float, default=0.0, help="leave out the first seconds of the log (a start-up)")
    args = ap.parse_args(argv)
    steps = load(args.logs)
    if steps and args.skip_s > 0.0:
        steps = [s for s in steps if s.t_s >= steps[0].t_s + args.skip_s]
    print(report(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
