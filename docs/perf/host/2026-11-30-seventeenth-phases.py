"""Per-phase host time of ``bench/host_replay.py``'s points, split by step kind (seventeenth session).

Runs the replay's own ``run_point`` (the gate off: every step planned) and reads, after each timed step, the
planner's ``StepPhases``: the publish part (the bench's ``publish_us``), the forest (built from the paths, edited by
``forest_edit``, or grown), ``plan_forest`` (and whether it searched split lengths), and the rest (the static-buffer
load and the backend's own bookkeeping). Prints p50 / p99 / max of the whole step per kind of step and the p50 of
each phase. Run it against another checkout with ``ROOT``:

    ROOT=/path/to/checkout BS="64 256" CTX=4k STEPS=600 .venv/bin/python docs/perf/host/2026-11-30-seventeenth-phases.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

ROOT = os.environ.get("ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))))
sys.path[:0] = [ROOT, ROOT + "/bench", ROOT + "/tests"]

import host_replay as hr  # noqa: E402

from pat_sglang.sglang_patches import apply_patches  # noqa: E402


def q(a: np.ndarray) -> str:
    return f"{np.percentile(a, 50):7.1f} {np.percentile(a, 99):7.1f} {a.max():7.1f}"


def main() -> None:
    apply_patches()
    torch.set_num_threads(1)
    specs = hr.load_mooncake(hr.DEFAULT_TRACE)
    steps = int(os.environ.get("STEPS", "600"))
    for bs in [int(x) for x in os.environ.get("BS", "64 256").split()]:
        for ctx in [hr.parse_tokens(x) for x in os.environ.get("CTX", "4k").split()]:
            cfg = hr.PointConfig(batch=bs, context=ctx, steps=steps, progress=False, gate=False)
            ph: list[tuple] = []

            def on_step(sim: object, be: object, view: object, rec: object, ph: list = ph) -> None:
                if rec is not None:
                    p = be.planner.phases
                    ph.append((rec.host_us, rec.publish_us, p.forest_s * 1e6, p.plan_s * 1e6, p.forest,
                               p.split_search, rec.gc))

            hr.run_point(cfg, specs, on_step=on_step)
            host, pub, forest, plan = (np.array([x[i] for x in ph]) for i in range(4))
            changed = np.array([x[4] in ("built", "edited") for x in ph])
            edited = np.array([x[4] == "edited" for x in ph])
            search = np.array([x[5] for x in ph])
            rest = host - pub - forest - plan
            print(f"bs {bs} ctx {ctx} ({ROOT}): all p50/p99/max {q(host)}  changed {changed.sum()} search "
                  f"{search.sum()} gc {sum(x[6] > 0 for x in ph)}")
            for name, m in (("changed", changed), ("edited", edited), ("fromscratch", changed & ~edited),
                            ("built-nosrch", changed & ~search), ("search", search), ("other", ~changed)):
                if m.sum():
                    print(f"   {name:13s} n={m.sum():4d} total {q(host[m])} | pub {np.percentile(pub[m], 50):6.1f} "
                          f"forest {np.percentile(forest[m], 50):6.1f} plan {np.percentile(plan[m], 50):6.1f} "
                          f"load+rest {np.percentile(rest[m], 50):6.1f} (p50s)")


if __name__ == "__main__":
    main()
