"""Who does the compiled forest build's row comparisons: the caller or the library's worker thread? (Diagnostic.)

Apply ``worker-counters.diff`` to ``kernels/host_rows.c`` first (``git apply``; revert it afterwards: the counters are
not part of the product), then run from the repository root. For the levels and shared2048 cases of
``bench/plan_speed.py``, 300 calls of ``pat_sglang.plan`` and then of ``PrefixForest.from_flat`` in a loop each: the
median time, the compare pieces each thread claimed, and the jobs the worker took and those taken back from it.
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plan_speed import flat_cases  # noqa: E402

import pat_sglang  # noqa: E402
from pat_sglang import host_core  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402


def main() -> None:
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = DeviceSpec()
    if host_core.loaded() is None:
        raise SystemExit("the compiled host work did not load")
    counters = (ctypes.c_int64 * 4).in_dll(ctypes.CDLL(str(host_core.library_path())), "pat_dbg")
    cases = flat_cases()
    for name in ("levels", "shared2048"):
        indptr, indices = cases[name]
        loops: dict[str, Callable[[], object]] = {
            "plan() loop": lambda: pat_sglang.plan(indptr, indices, heads, device),  # noqa: B023
            "from_flat loop": lambda: PrefixForest.from_flat(indptr, indices),  # noqa: B023
        }
        for label, call in loops.items():
            for _ in range(20):
                call()
            before = list(counters)
            times = []
            for _ in range(300):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            worker, poster, taken, back = (b - a for a, b in zip(before, counters, strict=True))
            print(f"{name} {label}: {statistics.median(times) * 1e6:.0f} us; pieces worker {worker} poster {poster} "
                  f"({worker / max(1, worker + poster):.0%} worker); jobs taken {taken}, taken back {back}")


if __name__ == "__main__":
    main()
