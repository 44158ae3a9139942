"""Where a replay step's host time goes, by step kind: perf_counter_ns wrappers (inclusive, ~0.3 us each) around the
publisher's and the backend's functions, summed per timed step, p50 / mean / p90 per kind of step (what the planner's
counters say it did, batch changed or not). The tree it runs from is the one this file is in (the functions wrapped
exist in the thirty-fourth session's base too).

    .venv/bin/python docs/perf/host/2026-12-01-thirtyfourth-sections.py BATCH CONTEXT [STEPS]
"""
import collections
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import host_replay as hr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pat_sglang import backend as be_mod  # noqa: E402
from pat_sglang import decode_step as ds  # noqa: E402
from pat_sglang import forest_edit as fe  # noqa: E402
from pat_sglang import kernels as km  # noqa: E402
from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402
from pat_sglang.sglang_patches import publish as pub  # noqa: E402

torch.set_num_threads(1)
acc: dict[str, int] = collections.defaultdict(int)
ns = time.perf_counter_ns


def wrap(owner, name, label=None):
    orig = getattr(owner, name)
    label = label or name

    @functools.wraps(orig)
    def w(*a, **k):
        t = ns()
        try:
            return orig(*a, **k)
        finally:
            acc[label] += ns() - t

    setattr(owner, name, w)


for owner, name in [
    (pub, "_publish"), (ct.ChainTable, "release"), (ct.ChainTable, "republish_same"), (ct.ChainTable, "publish_rows"),
    (ct.ChainTable, "publish_batch"), (ct.ChainTable, "_read_rows"), (ct.ChainTable, "_set_entries"),
    (ct.ChainTable, "_pick"), (ct.ChainTable, "_tally_of"), (ct, "_rows_snapshot"), (ct, "_requests_at"),
    (ct, "new_entries"), (ct.ChainTable, "_mark_unread"), (ct.ChainTable, "_split_since"),
    (pub, "radix_splits"), (pub, "radix_recached"), (pub, "_seq_lens"), (pub, "host_int64"),
    (be_mod.PATAttnBackend, "_prepare_step"), (be_mod.PATAttnBackend, "_step_batch"),
    (be_mod.PATAttnBackend, "_loaded"), (be_mod.StepStats, "record"),
    (ds.DecodeStepPlanner, "plan"), (ds.DecodeStepPlanner, "unique_tokens"), (ds.DecodeStepPlanner, "forest"),
    (ds.DecodeStepPlanner, "_decline"), (ds.DecodeStepPlanner, "_same_step_plan"), (ds, "plan_forest"),
    (fe.RadixIndex, "edit"), (ds.DecodeStepPlanner, "_keep"), (ds.DecodeStepPlanner, "_forest_key"),
    (be_mod.GC_PAUSES.__class__, "mark"),
]:
    wrap(owner, name)
load_cls = km.StaticPlanBuffers
wrap(load_cls, "load", "buffers.load")

COUNTERS = ("declined", "declined_unplanned", "plans_reused", "built", "edited", "reused", "remade")
rows = []
last = {}


def hook(sim, be, view, rec):
    c = be.planner.counters
    now = tuple(getattr(c, n) for n in COUNTERS)
    if rec is not None:
        moved = [n for n, a, b in zip(COUNTERS, now, last.get("c", now), strict=True) if a != b]
        kind = "+".join(moved) or "other"
        kind += ", chg" if (rec.joined or rec.left) else ", same"
        rows.append((kind, rec.host_us, dict(acc)))
    acc.clear()
    last["c"] = now


specs = hr.load_mooncake(hr.DEFAULT_TRACE)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 600
res = hr.run_point(hr.PointConfig(batch=bs, context=ctx, steps=steps, gate=True), specs, on_step=hook)
s = res.summary()
print(f"bs {bs} ctx {ctx}: p50 {s['p50']:.0f} p99 {s['p99']:.0f} max {s['max']:.0f} pub_p50 {s['pub_p50']:.0f}")
groups = collections.defaultdict(list)
for kind, host, d in rows:
    groups[kind].append((host, d))
for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
    if len(items) < 5:
        continue
    host = np.array([h for h, _ in items])
    print(f"\n{kind}: n={len(items)} host p50 {np.percentile(host, 50):.0f} p90 {np.percentile(host, 90):.0f}")
    names = sorted({k for _, d in items for k in d})
    for name in names:
        v = np.array([d.get(name, 0) for _, d in items]) / 1e3
        if np.percentile(v, 50) < 0.5 and v.mean() < 1:
            continue
        print(f"   {name:22s} p50 {np.percentile(v, 50):7.1f} mean {v.mean():7.1f} p90 {np.percentile(v, 90):7.1f}")
