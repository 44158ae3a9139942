"""Issue 9: what the gated replay's slow steps are, by the requests that joined them (fifty-fifth session).

Reads the per-step CSV of ``bench/host_replay.py --csv`` and prints, per replay point, the host time's percentiles by
the number of requests that joined the step, and which steps make up the slowest 1% (the p99 region): their joiners,
collections and split searches. Run from the repository root with the project's venv:

    .venv/bin/python docs/perf/host/2026-12-04-fiftyfifth-tail.py docs/perf/host/2026-12-04-fiftyfifth-vm-replay.csv
"""

import csv
import sys
from collections import defaultdict

import numpy as np


def main(path: str) -> None:
    points: dict[tuple[int, int], list[dict[str, str]]] = defaultdict(list)
    for row in csv.DictReader(open(path)):
        points[int(row["batch"]), int(row["context"])].append(row)
    for (batch, context), rows in points.items():
        host = np.array([float(r["host_us"]) for r in rows])
        joined = np.array([int(r["joined"]) for r in rows])
        gc = np.array([int(r["gc"]) for r in rows])
        search = np.array([int(r["split_search"]) for r in rows])
        print(f"batch {batch} x context {context}: {len(rows)} steps, p50 {np.percentile(host, 50):.1f} us, "
              f"p99 {np.percentile(host, 99):.1f} us")
        print("  joined  steps   p50_us   p90_us   p99_us")
        for k in range(int(joined.max()) + 1):
            m = joined == k
            if m.sum():
                p = np.percentile(host[m], [50, 90, 99])
                print(f"  {k:6d} {int(m.sum()):6d} {p[0]:8.1f} {p[1]:8.1f} {p[2]:8.1f}")
        slow = host >= np.percentile(host, 99)
        print(f"  slowest 1% ({int(slow.sum())} steps): joined {np.bincount(joined[slow]).tolist()} (steps per "
              f"count 0, 1, ...), with a collection {int(gc[slow].sum())}, with a split search "
              f"{int(search[slow].sum())}")


if __name__ == "__main__":
    main(sys.argv[1])
