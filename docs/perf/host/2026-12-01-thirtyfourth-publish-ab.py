"""Paired in-replay A/B of a whole publishing against another checkout's publisher (twenty-ninth session's script; the
thirty-fourth session's changes: which side publishes first is drawn at random per step, and the difference is read
order-balanced, the mean of its medians over the steps where this side went first and where base did. Alternating per
step, as before, lined up with the replay's own period of changed and unchanged steps: the side that publishes second
finds the batch's objects warm, ~40-65 us cheaper at 256 x 4k, and an A/A run of one tree against itself read a
35 us "gain" that way.)
the replay (``bench/host_replay.py``'s ``run_point``, gate on) runs on the tree this file is in; every decode batch is
published into the table bound to the pool (this tree's ``publish_decode_batch``) and into a second table run by the
other tree's ``chain_table.py`` / ``publish.py`` and its own ``kernels/host_batch.c`` (compiled here into /tmp), the two
in alternating order, each timed. The VM's run-to-run noise then hits both sides alike. After every step the two
published batches are compared (rows, request ids, entries' values, cached lengths, generations, absent count, distinct
cached tokens, node counts), and every 7th step their flat paths too. Prints p50 / p90 / p99 / max of each side over
the timed steps (changed batches, and all), and the per-step paired difference on changed steps.

    BASE=/path/to/other/checkout .venv/bin/python docs/perf/host/2026-12-01-twentyninth-publish-ab.py BATCH CONTEXT
"""

import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BASE = Path(os.environ["BASE"])
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import ctypes  # noqa: E402

import host_replay as hr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pat_sglang import host_core  # noqa: E402
from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

SO = f"/tmp/pat_base_host_batch_{os.getpid()}.so"
subprocess.run([host_core.compiler(), *host_core.COMPILE_FLAGS, *host_core.python_include_flags(), "-o", SO,
                str(BASE / "kernels" / "host_batch.c")], check=True)
base_batch = host_core._HostBatch(ctypes.PyDLL(SO))


def load(name: str, path: Path, subs: list[tuple[str, str]]) -> types.ModuleType:
    """The other tree's module at ``path`` under ``name``, its source edited by ``subs`` (its own imports)."""
    src = path.read_text()
    for old, new in subs:
        assert old in src, old
        src = src.replace(old, new)
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


base_ct = load("base_chain_table", BASE / "pat_sglang" / "sglang_patches" / "chain_table.py",
               [("from pat_sglang import host_core\n", "")])
base_ct.host_core = types.SimpleNamespace(loaded_batch=lambda: base_batch)
base_pub = load("base_publish", BASE / "pat_sglang" / "sglang_patches" / "publish.py",
                [("from .chain_table import", "from base_chain_table import")])
shadow = base_ct.ChainTable(enabled=True)
times: dict[str, list[float]] = {"base": [], "this": []}
changed: list[bool] = []
state = {"differ": 0, "steps": 0}
this_first: list[bool] = []
rng = np.random.default_rng(int(os.environ.get("SEED", "0")))


def entry_values(batch: object) -> list:
    return [e and (e.rid, e.generation, e.signature, e.cached_len) for e in batch.entries]


def same(a: object, b: object) -> bool:
    """Whether two published batches hold the same values."""
    if a is None or b is None:
        return a is None and b is None
    return (a.rows.tolist() == b.rows.tolist() and list(a.rids) == list(b.rids) and a.absent == b.absent
            and entry_values(a) == entry_values(b) and np.array_equal(a.cached, b.cached)
            and a.distinct_cached == b.distinct_cached and (a.gens is None) == (b.gens is None)
            and (a.gens is None or np.array_equal(a.gens, b.gens)) and a.node_refs() == b.node_refs())


def both(batch: object) -> None:
    bound = ct.chain_table_for(batch.req_to_token_pool)
    was = bound.batch
    calls = {"this": lambda: publish_decode_batch(batch, bound),
             "base": lambda: base_pub.publish_decode_batch(batch, shadow)}
    first = bool(rng.random() < 0.5)
    this_first.append(first)
    for who in ("this", "base") if first else ("base", "this"):
        start = time.perf_counter_ns()
        calls[who]()
        times[who].append((time.perf_counter_ns() - start) / 1e3)
    changed.append(bound.batch is not None and (was is None or bound.batch.entries is not was.entries))
    state["steps"] += 1
    if not same(bound.batch, shadow.batch):
        state["differ"] += 1
    if state["steps"] % 7 == 0 and bound.batch is not None:
        if not all(map(np.array_equal, bound.batch.paths, shadow.batch.paths)):
            state["differ"] += 1


hr.publish_decode_batch = both
torch.set_num_threads(1)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
res = hr.run_point(hr.PointConfig(batch=bs, context=ctx, steps=600, gate=True, progress=False),
                   hr.load_mooncake(hr.DEFAULT_TRACE))
os.unlink(SO)
n = len(res.records)
chg = np.array(changed[-n:])
print(f"bs {bs} ctx {ctx}: {state['steps']} publishings ({n} timed, {chg.sum()} of them changed batches), "
      f"batches differing {state['differ']}")
for who, t in times.items():
    t = np.array(t[-n:])
    for label, sel in (("changed", chg), ("all", np.ones_like(chg))):
        x = t[sel]
        print(f"  {who:5s} {label:8s} n={x.size:4d} p50 {np.percentile(x, 50):7.1f} p90 {np.percentile(x, 90):7.1f} "
              f"p99 {np.percentile(x, 99):7.1f} max {x.max():7.1f} us")
tb, tt = np.array(times["base"][-n:]), np.array(times["this"][-n:])
f = np.array(this_first[-n:])
for label, sel in (("changed", chg), ("unchanged", ~chg)):
    d1, d2 = (tt - tb)[sel & f], (tt - tb)[sel & ~f]
    print(f"  this - base on {label} steps, order-balanced: {(np.median(d1) + np.median(d2)) / 2:6.1f} us "
          f"(this first {np.median(d1):6.1f}, base first {np.median(d2):6.1f}; n {d1.size} / {d2.size})")
