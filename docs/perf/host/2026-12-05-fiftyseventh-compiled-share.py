"""Issue 9: how much of a changed decode step's host time is spent inside compiled calls (fifty-seventh session, 2-CPU
VM). The gated Mooncake host replay at batch 256 with every function of the extension module (``kernels/host_glue.c``,
which also serves the publisher's pieces) timed where it is called, in place, between the scheduler's work; per step
kind (how its forest came about, declined or not) the median host time, the median time inside compiled calls and the
calls themselves. Run from the repository root:

    .venv/bin/python docs/perf/host/2026-12-05-fiftyseventh-compiled-share.py 1k
"""

import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import host_core  # noqa: E402

STEP: dict[str, float] = collections.defaultdict(float)
ROWS: list[tuple] = []


class Timed:
    """The extension module with each function timed (seconds per step in ``STEP``)."""

    def __init__(self, module: object) -> None:
        self._module = module

    def __getattr__(self, name: str):  # noqa: ANN204
        fn = getattr(self._module, name)
        if not callable(fn):
            return fn

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                STEP[name] += time.perf_counter() - t

        return timed


def hook(sim, backend, view, rec) -> None:  # noqa: ANN001
    if rec is not None:
        ROWS.append((rec.forest, rec.declined, rec.host_us, dict(STEP)))
    STEP.clear()


if __name__ == "__main__":
    core = host_core.loaded()
    core.glue = Timed(core.glue)  # before the publisher's pieces bind to it (host_core.loaded_batch)
    run_point = hr.run_point
    hr.run_point = lambda cfg, specs, on_step=None: run_point(cfg, specs, hook)
    context = sys.argv[1] if len(sys.argv) > 1 else "1k"
    hr.main(["--batch", "256", "--context", context, "--gate", "--no-progress", "--no-plan-speed"])
    print(f"# batch 256, context {context}: per step kind, medians (us); compiled calls timed in place")
    groups = collections.defaultdict(list)
    for forest, declined, host_us, calls in ROWS:
        groups[(forest, "declined" if declined else "planned")].append((host_us, calls))
    for (forest, fate), steps in sorted(groups.items()):
        host = np.median([h for h, _ in steps])
        inside = np.median([sum(c.values()) * 1e6 for _, c in steps])
        print(f"{forest:7s} {fate:8s} steps {len(steps):5d}  host {host:7.1f}  in compiled calls {inside:6.1f} "
              f"({inside / host:.0%})")
        names = collections.defaultdict(float)
        for _, calls in steps:
            for name, s in calls.items():
                names[name] += s * 1e6 / len(steps)
        for name, us in sorted(names.items(), key=lambda kv: -kv[1]):
            if us >= 1.0:
                print(f"      {name:24s} {us:6.1f} us a step")
