"""Paired A/B of a changed step's forest edit and ``plan_forest`` against another checkout's ``forest_edit``
(twenty-ninth session): the replay (``bench/host_replay.py``'s ``run_point``, gate on) runs on the tree this file is
in; every ``RadixIndex.edit`` it makes also runs the other tree's ``forest_edit.py`` (loaded beside this one, on this
tree's ``forest`` module, with its own index kept in step), the two in alternating order; each pair of edited forests
is then planned by ``plan_forest`` once each (fresh derived-array dicts, the step planner's arguments and last plan),
again in alternating order. The VM's run-to-run noise then hits both sides alike. Checks that both edits give the same
forests (every array) and the same plan items, and prints p50 / p90 / p99 / max of each side.

    BASE=/path/to/other/checkout .venv/bin/python docs/perf/host/2026-12-01-twentyninth-edit-ab.py BATCH CONTEXT
"""

import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import host_replay as hr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pat_sglang import decode_step, forest_edit  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402

ARRAYS = ("tok", "start", "parent", "depth", "req_ptr", "req_flat", "row_base", "request_lengths")
spec = importlib.util.spec_from_file_location("pat_sglang._base_forest_edit",
                                              Path(os.environ["BASE"]) / "pat_sglang" / "forest_edit.py")
base = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = base
spec.loader.exec_module(base)
times: dict[str, list[float]] = {f"{k}_{w}": [] for k in ("edit", "plan") for w in ("base", "this")}
state = {"flip": 0, "differ": 0, "one_sided": 0, "planner": None, "limits": None}
this_of, this_edit = forest_edit.RadixIndex.of, forest_edit.RadixIndex.edit


def of(forest: object, entries: tuple, rows: np.ndarray) -> object:
    index = this_of(forest, entries, rows)
    if index is not None:
        index.base = base.RadixIndex.of(forest, entries, rows)
    return index


def timed(kind: str, who: str, call: object) -> object:
    start = time.perf_counter()
    out = call()
    times[f"{kind}_{who}"].append((time.perf_counter() - start) * 1e6)
    return out


def edit(self: object, entries: tuple, rows: np.ndarray, seq: np.ndarray, row_base: np.ndarray) -> object:
    other = getattr(self, "base", None)
    state["flip"] ^= 1
    order = ("base", "this") if state["flip"] else ("this", "base")
    calls = {"base": lambda: other.edit(entries, rows, seq, row_base) if other is not None else None,
             "this": lambda: this_edit(self, entries, rows, seq, row_base)}
    got = {who: timed("edit", who, calls[who]) for who in order}
    if (got["this"] is None) != (got["base"] is None):
        state["one_sided"] += 1
    if got["this"] is None or got["base"] is None:
        return got["this"]
    got["this"].base = got["base"]
    forests = {who: got[who].forest for who in order}
    if not all(np.array_equal(getattr(forests["this"], a), getattr(forests["base"], a)) for a in ARRAYS):
        state["differ"] += 1
    planner = state["planner"]
    plans = {}
    for who in order:
        f = forests[who]
        fresh = type(f)(f.tok, f.start, f.parent, f.depth, f.req_ptr, f.req_flat, f.row_base, f.request_lengths, None,
                        dict(f._derived))
        plans[who] = timed("plan", who, lambda fresh=fresh: plan_forest(
            fresh, planner.heads, planner.device_spec, limits=state["limits"], slot_table=planner.slot_table,
            previous=planner._last_plan, row_stride=planner.row_stride))
    if not torch.equal(plans["base"].items, plans["this"].items):
        state["differ"] += 1
    return got["this"]


this_plan = decode_step.DecodeStepPlanner.plan


def plan(self: object, batch: object, limits: object = None, count: bool = True, min_saved: float = 0.0) -> object:
    state["planner"], state["limits"] = self, limits
    return this_plan(self, batch, limits, count, min_saved)


forest_edit.RadixIndex.of = staticmethod(of)
forest_edit.RadixIndex.edit = edit
decode_step.DecodeStepPlanner.plan = plan
torch.set_num_threads(1)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
point = hr.PointConfig(batch=bs, context=ctx, steps=600, gate=True, progress=False)
hr.run_point(point, hr.load_mooncake(hr.DEFAULT_TRACE))
print(f"bs {bs} ctx {ctx}: edits {len(times['edit_this'])}, planned pairs {len(times['plan_this'])}, forests or plans "
      f"differing {state['differ']}, edited by one side only {state['one_sided']}")
for name, values in times.items():
    v = np.array(values)
    if v.size:
        print(f"  {name:10s} n={v.size:4d} p50 {np.percentile(v, 50):7.1f} p90 {np.percentile(v, 90):7.1f} "
              f"p99 {np.percentile(v, 99):7.1f} max {v.max():7.1f} us")
