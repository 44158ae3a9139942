"""CPU time of the pack planner on a 256-request, 4-level prefix tree (target: plan_forest < 100 us).

Prints the median microseconds of ``plan_forest`` alone (forest already built), of ``PrefixForest.from_flat``,
and of the whole ``pat_sglang.plan`` (both), for Llama-3-8B heads (32 q / 8 kv, d=128, bf16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pat_sglang  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402
from pat_sglang.workloads import tree_batch  # noqa: E402

LEVELS = [(1, 2048), (4, 1024), (32, 512), (256, 128)]
TARGET_US = 100.0


def median_us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)
    batch = tree_batch(LEVELS, rng=0)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = DeviceSpec()
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    t_plan = median_us(lambda: plan_forest(forest, heads, device), args.reps)
    t_forest = median_us(lambda: PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), args.reps)
    t_all = median_us(lambda: pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, device), args.reps)
    print(f"tree {LEVELS}: {batch.batch} requests, {forest.num_nodes} forest nodes, "
          f"{batch.request_tokens()} request tokens")
    verdict = "met" if t_plan < TARGET_US else "NOT met"
    print(f"plan_forest          {t_plan:10.1f} us  (target < {TARGET_US:.0f} us: {verdict})")
    print(f"PrefixForest.from_flat {t_forest:8.1f} us")
    print(f"pat_sglang.plan      {t_all:10.1f} us  (from_flat + plan_forest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
