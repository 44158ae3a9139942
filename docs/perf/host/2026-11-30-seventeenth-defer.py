"""Deferred split searches on ``bench/host_replay.py``'s points: host time per kind of step, and the regret (CPU).

Runs the replay's own ``run_point`` (the gate off: every step planned) with ``DecodeStepPlanner.defer_search`` set by
``DEFER`` (1 by default) and reads, after each timed step, the planner's ``StepPhases`` and whether a search is owed.
Prints p50 / p99 / max of the whole step, per kind of step (changed, a step that ran a search, one that deferred it),
the deferral counters, and the predicted regret of every step that ran with a search owed: the cost model's predicted
launch time of the plan's split length over that of the length the search picks for the same packs, minus 1 (both
simulated in full, ``planner._length_cost``; at the lengths the plan was made for, so a reused plan's later steps
count its regret again). With ``DEFER=0`` nothing is owed and the counters stay 0 (the base's behaviour).

    ROOT=/path/to/checkout BS="64 256" CTX=4k STEPS=600 DEFER=1 \\
        .venv/bin/python docs/perf/host/2026-11-30-seventeenth-defer.py
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

import pat_sglang.planner as P  # noqa: E402
from pat_sglang.sglang_patches import apply_patches  # noqa: E402


def q(a: np.ndarray) -> str:
    return f"{np.percentile(a, 50):7.1f} {np.percentile(a, 99):7.1f} {a.max():7.1f}" if a.size else "      -"


def regret(plan: P.PackPlan) -> float:
    """Predicted launch time of ``plan``'s split length over the search's pick for its packs, minus 1."""
    rg = plan.regrow
    inputs = P._search_inputs(plan)
    ladder = P._split_candidates(int(rg.pack_tokens.max()), int(rg.pack_tokens @ rg.pack_blocks), inputs[5],
                                 inputs[6], rg.args[3])
    best = P._split_length(ladder, *inputs)
    return P._length_cost(plan.split_tokens, *inputs) / P._length_cost(best, *inputs) - 1.0


def main() -> None:
    defer = os.environ.get("DEFER", "1") == "1"
    make_backend = hr.make_backend

    def made(*args: object, **kwargs: object) -> object:
        be = make_backend(*args, **kwargs)
        if hasattr(be.planner, "defer_search"):
            be.planner.defer_search = defer
        return be

    hr.make_backend = made
    apply_patches()
    torch.set_num_threads(1)
    specs = hr.load_mooncake(hr.DEFAULT_TRACE)
    steps = int(os.environ.get("STEPS", "600"))
    for bs in [int(x) for x in os.environ.get("BS", "64 256").split()]:
        for ctx in [hr.parse_tokens(x) for x in os.environ.get("CTX", "4k").split()]:
            cfg = hr.PointConfig(batch=bs, context=ctx, steps=steps, progress=False, gate=False)
            ph: list[tuple] = []
            regrets: dict[int, float] = {}  # per plan object (id kept alive by `plans`)
            plans: list[P.PackPlan] = []

            def on_step(sim: object, be: object, view: object, rec: object, ph: list = ph, regrets: dict = regrets,
                        plans: list = plans) -> None:
                planner = be.planner
                if rec is None:
                    return
                p = planner.phases
                owed = getattr(planner, "_search_owed", False)
                r = np.nan
                if owed:
                    plan = planner._last_plan
                    if id(plan) not in regrets:
                        plans.append(plan)
                        regrets[id(plan)] = regret(plan)
                    r = regrets[id(plan)]
                ph.append((rec.host_us, p.forest, p.split_search, getattr(p, "split_deferred", False), owed, r))

            res = hr.run_point(cfg, specs, on_step=on_step)
            c = res.backend.planner.counters
            host = np.array([x[0] for x in ph])
            changed = np.array([x[1] in ("built", "edited") for x in ph])
            search = np.array([x[2] for x in ph])
            deferred = np.array([x[3] for x in ph])
            owed = np.array([x[4] for x in ph])
            reg = np.array([x[5] for x in ph if x[4]])
            print(f"bs {bs} ctx {ctx} defer {int(defer)} ({ROOT}): all p50/p99/max {q(host)}  changed {changed.sum()} "
                  f"search steps {search.sum()} deferred {deferred.sum()} owed steps {owed.sum()}  "
                  f"(counters: deferred {getattr(c, 'searches_deferred', 0)} settled "
                  f"{getattr(c, 'searches_settled', 0)} switched {getattr(c, 'settled_switched', 0)})")
            for name, m in (("changed", changed), ("changed+srch", changed & search), ("settle", search & ~changed),
                            ("deferred", deferred), ("other", ~changed & ~search)):
                print(f"   {name:13s} n={int(m.sum()):4d} p50/p99/max {q(host[m])}")
            if reg.size:
                print(f"   regret over {reg.size} owed steps ({len(regrets)} plans): p50 {np.percentile(reg, 50):.4f} "
                      f"p90 {np.percentile(reg, 90):.4f} max {reg.max():.4f} mean {reg.mean():.4f} "
                      f"(0 on {int((reg == 0).sum())} steps)")


if __name__ == "__main__":
    main()
