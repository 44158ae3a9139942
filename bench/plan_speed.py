"""CPU time of the pack planner on a 256-request, 4-level prefix tree (target: plan_forest < 100 us), and of the
standalone ``pat_sglang.plan`` from flat int32 ``kv_indptr``/``kv_indices`` at 256 requests x 4096 tokens (target:
<= 300 us; issue 9, item 8).

Prints the median microseconds of ``plan_forest`` alone (forest already built), of ``PrefixForest.from_flat``,
and of the whole ``pat_sglang.plan`` (both), for Llama-3-8B heads (32 q / 8 kv, d=128, bf16). ``plan_forest`` is
timed twice: re-planning one forest in a loop (``warm``: its data stays in the CPU's caches) and planning each forest
right after ``from_flat`` built it (``fresh``: what ``plan`` pays, after the build has streamed the indices through
the caches), so ``from_flat`` + ``fresh`` is about ``plan``. The 256 x 4k cases:
``private`` (a random permutation of 1M slots: no sharing), ``shared2048`` (a 2048-token prefix shared by all, then
2048 private tokens each), ``ragged2048`` (the same prefix, then 1536-2560 private tokens each: requests of unequal
lengths, as in serving) and the LEVELS tree (3712 tokens per request).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pat_sglang  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402
from pat_sglang.workloads import tree_batch  # noqa: E402

LEVELS = [(1, 2048), (4, 1024), (32, 512), (256, 128)]
TARGET_US = 100.0
PLAN_TARGET_US = 300.0  # pat_sglang.plan at 256 requests x 4k tokens
BATCH, TOKENS = 256, 4096


def median_us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def fresh_plan_us(indptr: torch.Tensor, indices: torch.Tensor, heads: HeadConfig, device: DeviceSpec,
                  reps: int) -> float:
    """Median microseconds of ``plan_forest`` on a forest ``from_flat`` has just built (the build not timed)."""
    times = []
    for i in range(reps + 5):
        forest = PrefixForest.from_flat(indptr, indices)
        t0 = time.perf_counter()
        plan_forest(forest, heads, device)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def flat_cases(rng: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 256 x 4k flat inputs (int32 indptr and indices, as SGLang passes them)."""
    gen = np.random.default_rng(rng)
    indptr = torch.arange(BATCH + 1, dtype=torch.int32) * TOKENS
    private = gen.permutation(BATCH * TOKENS).astype(np.int32)
    half = TOKENS // 2
    slots = gen.permutation(BATCH * half + half).astype(np.int32)
    rows = np.empty((BATCH, TOKENS), dtype=np.int32)
    rows[:, :half] = slots[:half]  # the shared prefix: the same slots at the front of every row
    rows[:, half:] = slots[half:].reshape(BATCH, half)
    tails = gen.integers(half - TOKENS // 8, half + TOKENS // 8 + 1, BATCH)  # private lengths, mean half
    ragged_ptr = torch.zeros(BATCH + 1, dtype=torch.int32)
    ragged_ptr[1:] = torch.from_numpy(np.cumsum(half + tails).astype(np.int32))
    own = gen.permutation(int(tails.sum())).astype(np.int32) + slots.shape[0]
    own_rows = np.split(own, np.cumsum(tails)[:-1])
    ragged = np.concatenate([np.concatenate([slots[:half], tail]) for tail in own_rows])
    tree = tree_batch(LEVELS, rng=rng)
    return {
        "private": (indptr, torch.from_numpy(private)),
        "shared2048": (indptr, torch.from_numpy(rows.reshape(-1))),
        "ragged2048": (ragged_ptr, torch.from_numpy(ragged)),
        "levels": (tree.kv_indptr, tree.kv_indices),
    }


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
    print()
    print(f"pat_sglang.plan from flat int32 kv_indptr/kv_indices, {BATCH} requests x {TOKENS} tokens "
          f"(levels: {LEVELS}), median us over {args.reps} runs:")
    print(f"{'case':<12} {'nodes':>6} {'tokens':>8} {'from_flat':>10} {'plan_forest':>12} {'fresh':>8} "
          f"{'plan':>8}  target")
    for name, (indptr, indices) in flat_cases().items():
        f = PrefixForest.from_flat(indptr, indices)
        t_f = median_us(lambda: PrefixForest.from_flat(indptr, indices), args.reps)  # noqa: B023
        t_p = median_us(lambda: plan_forest(f, heads, device), args.reps)  # noqa: B023
        t_fresh = fresh_plan_us(indptr, indices, heads, device, args.reps)
        t_a = median_us(lambda: pat_sglang.plan(indptr, indices, heads, device), args.reps)  # noqa: B023
        verdict = "met" if t_a <= PLAN_TARGET_US else "NOT met"
        print(f"{name:<12} {f.num_nodes:>6} {f.request_tokens():>8} {t_f:>10.1f} {t_p:>12.1f} {t_fresh:>8.1f} "
              f"{t_a:>8.1f}  "
              f"<= {PLAN_TARGET_US:.0f} us: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
