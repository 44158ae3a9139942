"""Is ``pat_sglang.plan`` slower than its two parts? Times them interleaved in one loop (run from the repository root).

Per iteration: ``plan()``; then ``PrefixForest.from_flat`` and ``plan_forest`` on that fresh forest; then
``flat_forest_scanning``, ``plan_forest`` and ``settle`` apart (``plan``'s own order). Medians over 280 iterations
after 20, with the garbage collector on and off, for the levels and shared2048 cases of ``bench/plan_speed.py``; then
``plan()`` alone in a loop, as ``plan_speed.py`` times it.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plan_speed import flat_cases  # noqa: E402

import pat_sglang  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest, flat_forest_scanning  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402

WARMUP = 20


def median_us(times: list[float]) -> float:
    return statistics.median(times[WARMUP:]) * 1e6


def main() -> None:
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = DeviceSpec()
    cases = flat_cases()
    for name in ("levels", "shared2048"):
        indptr, indices = cases[name]
        for label, gc_off in (("gc on", False), ("gc off", True)):
            if gc_off:
                gc.disable()
            keys = ("plan", "from_flat", "fresh", "scan", "scan_plan", "settle")
            cols: dict[str, list[float]] = {k: [] for k in keys}
            for _ in range(WARMUP + 280):
                t0 = time.perf_counter()
                pat_sglang.plan(indptr, indices, heads, device)
                t1 = time.perf_counter()
                forest = PrefixForest.from_flat(indptr, indices)
                t2 = time.perf_counter()
                plan_forest(forest, heads, device)
                t3 = time.perf_counter()
                scanned, settle = flat_forest_scanning(indptr, indices)
                t4 = time.perf_counter()
                plan_forest(scanned, heads, device)
                t5 = time.perf_counter()
                settle()
                t6 = time.perf_counter()
                for key, dt in zip(cols, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
                    cols[key].append(dt)
            if gc_off:
                gc.enable()
            us = {k: median_us(v) for k, v in cols.items()}
            print(
                f"{name} {label}: plan() {us['plan']:.0f} | from_flat {us['from_flat']:.0f} + plan_forest "
                f"{us['fresh']:.0f} | scanning {us['scan']:.0f} + plan_forest {us['scan_plan']:.0f} + settle "
                f"{us['settle']:.0f}",
                flush=True,
            )
        alone = []
        for _ in range(WARMUP + 180):
            t0 = time.perf_counter()
            pat_sglang.plan(indptr, indices, heads, device)
            alone.append(time.perf_counter() - t0)
        print(f"{name}: plan() alone in a loop {median_us(alone):.0f}", flush=True)


if __name__ == "__main__":
    main()
