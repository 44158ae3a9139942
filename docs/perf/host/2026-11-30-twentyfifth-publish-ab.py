"""Paired in-replay A/B of a whole publishing: every decode step of the replay is published into two tables fed the
same batches, one with the compiled batch pick (kernels/host_batch.c) and one with its Python version
(chain_table._pick_batch); which goes first alternates per step, each is timed. The backend plans from the first
(the table bound to the pool). Prints p50/p90/max of each over the timed steps, changed and unchanged batches apart.

    .venv/bin/python docs/perf/host/2026-11-30-twentyfifth-publish-ab.py BATCH CONTEXT
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import host_replay as hr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

torch.set_num_threads(1)
shadow = ct.ChainTable(enabled=True)
shadow._pick = lambda rows, before: ct._pick_batch(rows, shadow._row_entry, shadow._row_rid, before)
times: dict[str, list[float]] = {"compiled": [], "python": []}
flip = [0]
perf = time.perf_counter


def both(batch) -> None:
    bound = ct.chain_table_for(batch.req_to_token_pool)
    order = [("compiled", bound), ("python", shadow)]
    flip[0] ^= 1
    for name, table in order if flip[0] else order[::-1]:
        t0 = perf()
        publish_decode_batch(batch, table)
        times[name].append(perf() - t0)


hr.publish_decode_batch = both
specs = hr.load_mooncake(hr.DEFAULT_TRACE)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
res = hr.run_point(hr.PointConfig(batch=bs, context=ctx, steps=600, gate=True), specs)
n = len(res.records)
changed = np.array([bool(r.joined or r.left) for r in res.records])
bound_batch = res.backend.chain_table.batch  # the two tables published the same batch last
assert bound_batch.rows.tolist() == shadow.batch.rows.tolist()
assert [e and e.signature for e in bound_batch.entries] == [e and e.signature for e in shadow.batch.entries]
assert bound_batch.distinct_cached == shadow.batch.distinct_cached
for name, t in times.items():
    t = np.array(t[-n:]) * 1e6  # the timed steps are the last n
    parts = []
    for label, sel in (("changed", changed), ("unchanged", ~changed)):
        x = t[sel]
        parts.append(f"{label} ({sel.sum()}) p50 {np.percentile(x, 50):6.1f} p90 {np.percentile(x, 90):6.1f} "
                     f"max {x.max():7.1f}")
    print(f"bs {bs:3d} ctx {ctx:5d} {name:8s}: " + "; ".join(parts))
