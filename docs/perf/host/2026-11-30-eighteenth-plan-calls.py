"""The replay's from-scratch ``plan_forest`` calls: captured, re-timed, compared between checkouts (eighteenth session).

``capture``: runs ``bench/host_replay.py``'s ``run_point`` (the gate off) and keeps every ``plan_forest`` call of a
changed step (the forest's structure is not last plan's: a full planning pass), with the forest as it was handed over
(a deep copy: its lazily derived values not yet filled in by the call) and last plan reduced to what a full pass reads
of it (``regrow.args``, ``split_tokens``, ``chosen_for_tokens``: the kept split length), pickled to ``OUT``.

``time``: re-runs the captured calls with ``ROOT``'s planner (each on a fresh copy of its forest), REPS times, and
prints per-kind p50 / max of the best repeat; with ``DUMP`` it also saves each plan's arrays (``.npz``).

``compare A.npz B.npz``: the plans of two ``time`` runs equal, array by array.

    S=docs/perf/host/2026-11-30-eighteenth-plan-calls.py
    ROOT=/work/main OUT=/tmp/calls.pkl BS="64 256" .venv/bin/python $S capture
    ROOT=<checkout> IN=/tmp/calls.pkl DUMP=/tmp/x.npz .venv/bin/python $S time
    .venv/bin/python $S compare /tmp/a.npz /tmp/b.npz
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
import time
from types import SimpleNamespace

import numpy as np

ROOT = os.environ.get("ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))))
sys.path[:0] = [ROOT, ROOT + "/bench", ROOT + "/tests"]

PLAN_ARRAYS = ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")
PLAN_SCALARS = ("num_partials", "num_open", "split_tokens", "split_searched", "fallback", "row_stride")


def capture() -> None:
    import host_replay as hr
    import torch

    from pat_sglang import decode_step
    from pat_sglang.sglang_patches import apply_patches

    apply_patches()
    torch.set_num_threads(1)
    specs = hr.load_mooncake(hr.DEFAULT_TRACE)
    calls: list[tuple] = []
    real = decode_step.plan_forest
    batch_size = [0]

    def spy(forest, heads, device=None, **kw):  # noqa: ANN001, ANN202
        prev = kw.get("previous")
        rg = None if prev is None else prev.regrow
        if rg is None or rg.structure is not forest._derived:  # a full planning pass
            small = None
            if rg is not None:
                small = SimpleNamespace(regrow=SimpleNamespace(
                    structure=None, args=rg.args, split_tokens=rg.split_tokens,
                    chosen_for_tokens=rg.chosen_for_tokens))
            calls.append((batch_size[0], copy.deepcopy(forest), heads, device,
                          {**kw, "previous": small}))
        return real(forest, heads, device, **kw)

    decode_step.plan_forest = spy
    steps = int(os.environ.get("STEPS", "600"))
    for bs in [int(x) for x in os.environ.get("BS", "64 256").split()]:
        batch_size[0] = bs
        cfg = hr.PointConfig(batch=bs, context=hr.parse_tokens(os.environ.get("CTX", "4k")), steps=steps,
                             progress=False, gate=False)
        hr.run_point(cfg, specs)
    with open(os.environ.get("OUT", "/tmp/plan_calls.pkl"), "wb") as f:
        pickle.dump(calls, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"captured {len(calls)} calls")


def time_calls() -> None:
    import torch

    from pat_sglang.planner import plan_forest

    torch.set_num_threads(1)
    with open(os.environ.get("IN", "/tmp/plan_calls.pkl"), "rb") as f:
        calls = pickle.load(f)
    reps = int(os.environ.get("REPS", "5"))
    best = np.full(len(calls), np.inf)
    plans = [None] * len(calls)
    for _ in range(reps):
        for i, (_bs, forest, heads, device, kw) in enumerate(calls):
            fresh = copy.deepcopy(forest)
            t0 = time.perf_counter()
            plans[i] = plan_forest(fresh, heads, device, **kw)
            best[i] = min(best[i], time.perf_counter() - t0)
    best *= 1e6
    bss = np.array([c[0] for c in calls])
    searched = np.array([p.split_searched for p in plans])
    print(f"{ROOT}: {len(calls)} calls, best of {reps}")
    for bs in sorted(set(bss.tolist())):
        for name, m in (("plain", (bss == bs) & ~searched), ("search", (bss == bs) & searched)):
            if m.any():
                print(f"  bs {bs:4d} {name:6s} n={m.sum():4d} p50 {np.percentile(best[m], 50):7.1f} "
                      f"p90 {np.percentile(best[m], 90):7.1f} max {best[m].max():7.1f} us")
    dump = os.environ.get("DUMP")
    if dump:
        out = {}
        for i, p in enumerate(plans):
            for name in PLAN_ARRAYS:
                out[f"{i}.{name}"] = getattr(p, name).numpy()
            out[f"{i}.scalars"] = np.array(repr(tuple(getattr(p, s) for s in PLAN_SCALARS)))
            out[f"{i}.stats"] = np.array(repr(p.stats))
            out[f"{i}.packs"] = np.array(repr(p.packs))
        np.savez(dump, **out)


def compare(a_path: str, b_path: str) -> None:
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files), "different calls"
    bad = [k for k in a.files if a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]
    calls = len({k.split(".")[0] for k in a.files})
    print(f"{calls} plans compared ({len(a.files)} arrays): {len(bad)} differ {bad[:10]}")


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture()
    elif sys.argv[1] == "time":
        time_calls()
    else:
        compare(sys.argv[2], sys.argv[3])
