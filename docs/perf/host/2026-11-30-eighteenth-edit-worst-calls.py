"""Captured-call A/B of ``RadixIndex.edit`` (eighteenth session): every edit of a ``bench/host_replay.py`` run, timed
again as the best of 5 calls (robust to the shared VM's preemptions, unlike whole steps), with the cost of building
the same batch from its paths instead for the slowest ones.

Run from the checkout to measure (it imports that checkout's ``pat_sglang``); ``WORKLOAD=gsp`` (generated-shared-
prefix defaults) or ``mooncake`` (4k context), ``BS``, ``STEPS``, ``STAGGER=0`` (the first batch starts together:
a wave of joiners), ``TOP`` slowest edits listed with their rebuild cost:

    cd CHECKOUT && WORKLOAD=gsp STAGGER=0 BS=256 python docs/perf/host/2026-11-30-eighteenth-edit-worst-calls.py
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

ROOT = os.getcwd()
sys.path[:0] = [ROOT, ROOT + "/bench", ROOT + "/tests"]

import host_replay as hr  # noqa: E402

from pat_sglang import forest_edit  # noqa: E402
from pat_sglang.experiments import generated_shared_prefix  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.sglang_patches import apply_patches  # noqa: E402
from pat_sglang.sglang_patches.chain_table import paths_of_entries  # noqa: E402

CALLS: list[tuple[Any, tuple]] = []  # (index, edit arguments): arrays copied (the replay view reuses its buffers)


def best_us(f: Callable[[], object], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def main() -> None:
    apply_patches()
    torch.set_num_threads(1)
    orig = forest_edit.RadixIndex.edit

    def edit(self: Any, *args: Any) -> Any:
        CALLS.append((self, tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)))
        return orig(self, *args)

    forest_edit.RadixIndex.edit = edit
    workload, bs = os.environ.get("WORKLOAD", "gsp"), int(os.environ.get("BS", "256"))
    specs = generated_shared_prefix() if workload == "gsp" else hr.load_mooncake(hr.DEFAULT_TRACE)
    cfg = hr.PointConfig(batch=bs, context=specs[0].input_len if workload == "gsp" else 4096,
                         steps=int(os.environ.get("STEPS", "600")), progress=False, gate=False,
                         time_scale=1.0 if workload == "gsp" else None,
                         stagger_fill=os.environ.get("STAGGER", "1") != "0")
    hr.run_point(cfg, specs)
    forest_edit.RadixIndex.edit = orig
    timed = sorted(((best_us(lambda idx=idx, args=args: idx.edit(*args)), i) for i, (idx, args) in enumerate(CALLS)),
                   reverse=True)
    us = np.array([u for u, _ in timed])
    print(f"{workload} bs {bs}: {len(CALLS)} edits, best-of-5 us p50 {np.percentile(us, 50):.1f} "
          f"p99 {np.percentile(us, 99):.1f} max {us.max():.1f}")
    for u, i in timed[: int(os.environ.get("TOP", "3"))]:
        idx, (entries, rows, seq, base) = CALLS[i]
        old = set(map(id, idx.entries))
        joined = sum(id(e) not in old for e in entries)
        refused = idx.edit(entries, rows, seq, base) is None
        paths = paths_of_entries(entries)

        def rebuild(paths: tuple = paths, entries: tuple = entries, rows: np.ndarray = rows, seq: np.ndarray = seq,
                    base: np.ndarray = base) -> None:
            forest = PrefixForest.from_paths(*paths, seq, base, index=True)
            forest_edit.RadixIndex.of(forest, entries, rows)

        gather = best_us(lambda entries=entries: paths_of_entries(entries))
        print(f"   edit {u:7.1f} us (+{joined}{', refused' if refused else ''})  gather (from the entries) "
              f"{gather:7.1f}  from_paths+index {best_us(rebuild):7.1f} us")


if __name__ == "__main__":
    main()
