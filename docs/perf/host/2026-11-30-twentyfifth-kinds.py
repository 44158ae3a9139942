"""Where a host replay point's steps go: every timed step of ``bench/host_replay.py`` (gate on) by what the backend's
planner did with it (from the change of its counters over the step: declined before planning, planned by editing or
building the forest, last plan reused, ...) and whether the batch changed, with the host and publishing times of each
group, and for planned steps the planner's forest and ``plan_forest`` times (``StepPhases``). The tree it runs from is
the one this file is in.

    .venv/bin/python docs/perf/host/2026-11-30-twentyfifth-kinds.py BATCH CONTEXT
"""

import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import host_replay as hr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

COUNTERS = ("declined", "declined_unplanned", "plans_reused", "built", "edited", "reused", "remade")

torch.set_num_threads(1)
kinds: list[tuple[str, hr.StepRecord, float, float]] = []
last: dict[str, tuple[int, ...]] = {}


def hook(sim: object, be: object, view: object, rec: hr.StepRecord | None) -> None:
    c = be.planner.counters
    now = tuple(getattr(c, name) for name in COUNTERS)
    if rec is not None:
        moved = [name for name, a, b in zip(COUNTERS, now, last.get("c", now), strict=True) if a != b]
        phases = be.planner.phases
        kinds.append(("+".join(moved) or "other", rec, phases.forest_s * 1e6, phases.plan_s * 1e6))
    last["c"] = now


specs = hr.load_mooncake(hr.DEFAULT_TRACE)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
res = hr.run_point(hr.PointConfig(batch=bs, context=ctx, steps=600, gate=True), specs, on_step=hook)
s = res.summary()
print(f"bs {bs} ctx {ctx}: p50 {s['p50']:.0f} p99 {s['p99']:.0f} max {s['max']:.0f} pub_p50 {s['pub_p50']:.0f}")
groups: dict[tuple[str, str], list[tuple[hr.StepRecord, float, float]]] = collections.defaultdict(list)
for kind, rec, forest_us, plan_us in kinds:
    groups[(kind, "chg" if rec.joined or rec.left else "same")].append((rec, forest_us, plan_us))
for (kind, chg), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
    host = np.array([r.host_us for r, _, _ in items])
    pub = np.array([r.publish_us for r, _, _ in items])
    forest = np.percentile([f for _, f, _ in items], 50)
    plan = np.percentile([p for _, _, p in items], 50)
    print(f"{kind + ', ' + chg:40s} n={len(items):4d} host p50 {np.percentile(host, 50):6.0f} "
          f"p90 {np.percentile(host, 90):6.0f} max {host.max():6.0f} | publish p50 {np.percentile(pub, 50):5.0f} "
          f"max {pub.max():5.0f} | forest p50 {forest:5.0f} plan_forest p50 {plan:5.0f}")
