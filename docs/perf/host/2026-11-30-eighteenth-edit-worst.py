"""The slowest changed decode steps of ``bench/host_replay.py`` and where their forest edits spend time (eighteenth).

Runs the replay's ``run_point`` (the gate off: every step planned) on the generated-shared-prefix workload
(``WORKLOAD=gsp``, ``RATE`` req/s or all at once, ``STAGGER=0`` to start the first batch together) or the Mooncake
trace (``WORKLOAD=mooncake``, ``CTX``), and records per timed step the host time, the planner's phases, the step's
kind (forest built / edited / reused) and its joins and leaves. It wraps ``RadixIndex.edit`` to time every edit
(and whether it was refused) and keeps the inputs of the slowest ones; ``PROFILE=1`` re-runs them under cProfile.

    WORKLOAD=gsp BS="64 256" STEPS=600 .venv/bin/python docs/perf/host/2026-11-30-eighteenth-edit-worst.py
    ROOT=/path/to/checkout WORKLOAD=mooncake CTX=4k ...   # another checkout
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time

import numpy as np
import torch

ROOT = os.environ.get("ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))))
sys.path[:0] = [ROOT, ROOT + "/bench", ROOT + "/tests"]

import host_replay as hr  # noqa: E402

from pat_sglang import forest_edit  # noqa: E402
from pat_sglang.experiments import RequestSpec, generated_shared_prefix  # noqa: E402
from pat_sglang.sglang_patches import apply_patches  # noqa: E402

EDITS: list[tuple[float, bool, tuple]] = []  # (seconds, refused, (index, args)) of every edit call


def _timed_edit(orig):  # type: ignore[no-untyped-def]
    def edit(self, *args):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = orig(self, *args)
        EDITS.append((time.perf_counter() - t0, out is None, (self, args)))
        return out
    return edit


def gsp_specs(rate: float | None) -> list[RequestSpec]:
    """``host_replay --workload gsp`` (here too, for checkouts whose host_replay has no such workload)."""
    specs = generated_shared_prefix()
    return specs if rate is None else [RequestSpec(s.rid, i * 1e3 / rate, s.segments, s.output_len)
                                       for i, s in enumerate(specs)]


def q(a: np.ndarray) -> str:
    return f"{np.percentile(a, 50):7.1f} {np.percentile(a, 99):7.1f} {a.max():7.1f}" if a.size else "-"


def main() -> None:
    apply_patches()
    torch.set_num_threads(1)
    forest_edit.RadixIndex.edit = _timed_edit(forest_edit.RadixIndex.edit)
    workload = os.environ.get("WORKLOAD", "gsp")
    rate = float(os.environ["RATE"]) if os.environ.get("RATE") else None
    specs = gsp_specs(rate) if workload == "gsp" else hr.load_mooncake(hr.DEFAULT_TRACE)
    ctxs = [specs[0].input_len] if workload == "gsp" else [hr.parse_tokens(x) for x in os.environ.get("CTX",
                                                                                                     "4k").split()]
    steps = int(os.environ.get("STEPS", "600"))
    top = int(os.environ.get("TOP", "8"))
    for bs in [int(x) for x in os.environ.get("BS", "64 256").split()]:
        for ctx in ctxs:
            cfg = hr.PointConfig(batch=bs, context=ctx, steps=steps, progress=False, gate=False,
                                 stagger_fill=os.environ.get("STAGGER", "1") != "0",
                                 time_scale=1.0 if workload == "gsp" else None)
            ph: list[tuple] = []
            EDITS.clear()

            def on_step(sim: object, be: object, view: object, rec: object, ph: list = ph) -> None:
                if rec is not None:
                    p = be.planner.phases
                    ph.append((rec.host_us, rec.publish_us, p.forest_s * 1e6, p.plan_s * 1e6, p.forest,
                               p.split_search, rec.gc, rec.joined, rec.left, rec.batch_size,
                               EDITS[-1] if EDITS else None))

            hr.run_point(cfg, specs, on_step=on_step)
            host, pub, forest, plan = (np.array([x[i] for x in ph]) for i in range(4))
            kind = np.array([x[4] for x in ph])
            print(f"{workload} bs {bs} ctx {ctx} ({ROOT}): all p50/p99/max {q(host)}  changed "
                  f"{int(np.isin(kind, ('built', 'edited')).sum())}  edited {int((kind == 'edited').sum())}  "
                  f"gc {sum(x[6] > 0 for x in ph)}  edit calls {len(EDITS)} (refused "
                  f"{sum(e[1] for e in EDITS)}; p50/p99/max us {q(np.array([e[0] * 1e6 for e in EDITS]))})")
            for name in ("built", "edited"):
                m = kind == name
                if m.sum():
                    print(f"   {name:7s} n={m.sum():4d} total {q(host[m])} | forest {q(forest[m])} | plan "
                          f"{q(plan[m])}")
            changed = [i for i, x in enumerate(ph) if x[4] in ("built", "edited")]
            changed.sort(key=lambda i: -ph[i][0])
            print("   slowest changed steps: host_us forest_us plan_us kind +joined/-left batch srch")
            for i in changed[:top]:
                x = ph[i]
                print(f"     {x[0]:8.1f} {x[2]:8.1f} {x[3]:8.1f} {x[4]:7s} +{x[7]}/-{x[8]} bs {x[9]} "
                      f"{'srch' if x[5] else ''}{' gc' if x[6] else ''}")
            if os.environ.get("PROFILE") == "1" and EDITS:
                worst = sorted(EDITS, key=lambda e: -e[0])[:top]
                prof = cProfile.Profile()
                reps = int(os.environ.get("REPS", "20"))
                t0 = time.perf_counter()
                prof.enable()
                for _ in range(reps):
                    for _, _, (index, args) in worst:
                        index.edit(*args)
                prof.disable()
                took = (time.perf_counter() - t0) / reps / len(worst) * 1e6
                print(f"   cProfile of the {len(worst)} slowest edits x {reps} ({took:.0f} us each under the profiler; "
                      f"untimed: {[round(e[0] * 1e6) for e in worst]} us)")
                pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
