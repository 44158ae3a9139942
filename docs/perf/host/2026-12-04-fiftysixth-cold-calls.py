"""Issue 9: how much of a changed step's host time is the step running cold (fifty-sixth session, 2-CPU VM).

Three measurements, run from the repository root with the project's venv:

    .venv/bin/python docs/perf/host/2026-12-04-fiftysixth-cold-calls.py

1. Single numpy / Python operations timed warm (repeated) and right after a write to every cache line of 128 MiB (four
   times this VM's 32 MiB L3): what one operation costs when nothing it touches (code or data) is cached.
2. The planning pass (``pat_host_glue.plan_pass``) on forests captured from the gated host replay at batch 64 and 256 x
   1k, warm and after evicting 2 / 8 / 32 / 128 MiB: whether its cold cost grows with the forest (data) or is fixed
   (code and the objects every call touches).
3. (separately, same VM state) the replay itself with ``--evict-mib 0 / 32 / 128`` between steps:
   ``bench/host_replay.py --batch 256 --context 1k --gate --phases --no-progress --no-plan-speed --evict-mib N``.
"""

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import host_core  # noqa: E402

EVICT = np.ones(128 << 17)  # 128 MiB of float64


def evict(mib: int) -> None:
    if mib:
        EVICT[: mib << 17 : 8] += 1.0  # one write per 64-byte line


def timed(fn, mib: int, reps: int) -> float:
    out = []
    for _ in range(reps):
        evict(mib)
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return float(np.median(out)) * 1e6


def single_operations() -> None:
    a = np.arange(256, dtype=np.int64)
    b = a.copy()

    def loop(x: int) -> int:
        s = 0
        for i in range(10):
            s += i * x
        return s

    cases = {
        "np.cumsum (256 int64)": lambda: np.cumsum(a),
        "a + b (256 int64)": lambda: a + b,
        "np.flatnonzero(a > 5)": lambda: np.flatnonzero(a > 5),
        "np.concatenate([a, b])": lambda: np.concatenate([a, b]),
        "a Python loop of 10": lambda: loop(3),
        "a dict of 20": lambda: {i: i for i in range(20)},
    }
    print("1. single operations, median us: warm / after evicting 128 MiB")
    for name, fn in cases.items():
        for _ in range(5):
            fn()
        print(f"   {name:28s} {timed(fn, 0, 30):7.2f} / {timed(fn, 128, 15):7.2f}")


def planning_pass() -> None:
    glue = host_core.loaded_glue()
    captured: dict[int, list] = {}

    class Capture:
        def __getattr__(self, name: str):
            return getattr(glue, name)

        def plan_pass(self, *args):
            captured.setdefault(len(args[0]), [x.copy() if isinstance(x, np.ndarray) else x for x in args])
            return glue.plan_pass(*args)

    capture = Capture()
    host_core.loaded_glue = lambda: capture
    hr.main("--batch 64 256 --context 1k --gate --no-plan-speed --no-progress".split())
    host_core.loaded_glue = lambda: glue
    sizes = sorted(captured)
    print("2. plan_pass on captured forests, median us: warm / after evicting 2 / 8 / 32 / 128 MiB")
    for n in (sizes[0], sizes[len(sizes) // 4], sizes[len(sizes) // 2], sizes[-1]):
        args = captured[n]
        glue.plan_pass(*args)
        cells = [timed(lambda args=args: glue.plan_pass(*args), mib, 15) for mib in (0, 2, 8, 32, 128)]
        print(f"   {n:4d} forest nodes, {args[5].shape[0]:4d} (request, node) pairs: "
              + " / ".join(f"{c:6.1f}" for c in cells))


if __name__ == "__main__":
    single_operations()
    planning_pass()
