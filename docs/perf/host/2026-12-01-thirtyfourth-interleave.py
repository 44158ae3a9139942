"""The host core's extension module (``kernels/host_glue.c``) on and off within one Mooncake replay, per step at random:
each decode step (publishing and the backend's step) runs with the extension module, or with ``host_core.loaded_glue``
standing in None (the numpy versions of the row passes and step checks) and the ctypes wrappers for ``plan_items`` /
``edit_forest`` / ``edit_places`` (the code before the thirty-fourth session). Steps of each mode are compared by kind
(what the planner did, batch changed or not). Whole replays of two trees differ by up to 1.5x run to run on the shared
2-core VM; here both modes share the process, its minute and its batches' distribution. The tree it runs from is the one
this file is in.

    .venv/bin/python docs/perf/host/2026-12-01-thirtyfourth-interleave.py BATCH CONTEXT [SEED]
"""

import collections
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import host_replay as hr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pat_sglang import host_core  # noqa: E402

COUNTERS = ("declined", "plans_reused", "built", "edited", "remade")
GLUED = ("plan_items", "edit_forest", "edit_places")

torch.set_num_threads(1)
core = host_core.loaded()
glue = host_core.loaded_glue()
if core is None or glue is None:
    raise SystemExit("the host core or its extension module did not load")
by_ctypes = {name: functools.partial(getattr(host_core._HostCore, name), core) for name in GLUED}
by_glue = {name: getattr(glue, name) for name in GLUED}
rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
modes: list[bool] = []
publish = hr.publish_decode_batch


def publish_in_a_mode(batch: object) -> None:
    """The step's mode, drawn before its publishing (the backend's step that follows runs in it too)."""
    on = bool(rng.random() < 0.5)
    modes.append(on)
    host_core.loaded_glue = (lambda: glue) if on else (lambda: None)
    for name, fn in (by_glue if on else by_ctypes).items():
        setattr(core, name, fn)
    publish(batch)


hr.publish_decode_batch = publish_in_a_mode
kinds: list[tuple[str, hr.StepRecord, bool]] = []
last: dict[str, tuple[int, ...]] = {}


def hook(sim: object, be: object, view: object, rec: hr.StepRecord | None) -> None:
    c = be.planner.counters
    now = tuple(getattr(c, name) for name in COUNTERS)
    if rec is not None:
        moved = [name for name, a, b in zip(COUNTERS, now, last.get("c", now), strict=True) if a != b]
        kind = ("+".join(moved) or "other") + (",chg" if rec.joined or rec.left else ",same")
        kinds.append((kind, rec, modes[-1]))
    last["c"] = now


specs = hr.load_mooncake(hr.DEFAULT_TRACE)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
hr.run_point(hr.PointConfig(batch=bs, context=ctx, steps=600, gate=True), specs, on_step=hook)
print(f"bs {bs} ctx {ctx} load {' '.join(open('/proc/loadavg').read().split()[:3])}")
for on in (True, False):
    host = np.array([r.host_us for _, r, m in kinds if m == on])
    pub = np.array([r.publish_us for _, r, m in kinds if m == on])
    print(f"  {'glue ' if on else 'numpy'} all n={host.size:3d} p50 {np.percentile(host, 50):6.0f} "
          f"p90 {np.percentile(host, 90):6.0f} p99 {np.percentile(host, 99):6.0f} max {host.max():6.0f} | "
          f"pub p50 {np.percentile(pub, 50):5.0f}")
groups: dict[str, dict[bool, list[tuple[float, float]]]] = collections.defaultdict(lambda: {True: [], False: []})
for kind, rec, on in kinds:
    groups[kind][on].append((rec.host_us, rec.publish_us))
for kind, g in sorted(groups.items(), key=lambda kv: -len(kv[1][True]) - len(kv[1][False])):
    if min(len(g[True]), len(g[False])) < 8:
        continue
    a, b = np.array(g[True]), np.array(g[False])
    print(f"  {kind:28s} glue n={len(a):3d} p50 {np.percentile(a[:, 0], 50):6.0f} "
          f"(pub {np.percentile(a[:, 1], 50):4.0f}) | numpy n={len(b):3d} p50 {np.percentile(b[:, 0], 50):6.0f} "
          f"(pub {np.percentile(b[:, 1], 50):4.0f})")
