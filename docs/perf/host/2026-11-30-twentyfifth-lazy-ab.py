"""Paired in-replay A/B of lazy entry arrays and deferred row-path writes: every decode step of the replay is published
into two tables fed the same batches, one as the code is (``ChainEntry`` arrays made on first read, a single row's
node ids and tokens written when paths are next gathered) and one with the earlier behaviour swapped in while it
publishes (arrays made with each entry, row paths written at once); which goes first alternates per step, each is
timed. The backend plans from the first (the table bound to the pool).

    .venv/bin/python docs/perf/host/2026-11-30-twentyfifth-lazy-ab.py BATCH CONTEXT
"""

import itertools
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


def eager_post_init(self: ct.ChainEntry) -> None:  # the entry's arrays made with it (as before)
    sig = self.signature
    table = np.fromiter(itertools.chain.from_iterable(reversed(sig)), np.int64, 3 * len(sig)).reshape(-1, 3)
    table.setflags(write=False)
    object.__setattr__(self, "keys", table[:, 0])
    object.__setattr__(self, "lengths", table[:, 2])
    object.__setattr__(self, "cached_len", sum(t for _, _, t in sig))


def eager_set(self: ct._RowPaths, row: int, entry: ct.ChainEntry) -> None:  # the row's path written at once
    d = len(entry.signature)
    if row >= self.keys.shape[0] or d > self.keys.shape[1]:
        self._room(row + 1, d)
    self._pending.pop(row, None)
    self.keys[row, :d] = entry.keys
    self.lengths[row, :d] = entry.lengths
    self.depth[row] = d
    self.cached[row] = entry.cached_len
    self.version += 1


LAZY = (ct.ChainEntry.__post_init__, ct._RowPaths.set)
EAGER = (eager_post_init, eager_set)


def use(pair: tuple) -> None:
    ct.ChainEntry.__post_init__, ct._RowPaths.set = pair


torch.set_num_threads(1)
shadow = ct.ChainTable(enabled=True)
times: dict[str, list[float]] = {"lazy": [], "eager": []}
flip = [0]
perf = time.perf_counter


def both(batch: object) -> None:
    bound = ct.chain_table_for(batch.req_to_token_pool)
    order = [("lazy", bound, LAZY), ("eager", shadow, EAGER)]
    flip[0] ^= 1
    for name, table, pair in order if flip[0] else order[::-1]:
        use(pair)
        t0 = perf()
        publish_decode_batch(batch, table)
        times[name].append(perf() - t0)
        use(LAZY)


hr.publish_decode_batch = both
specs = hr.load_mooncake(hr.DEFAULT_TRACE)
bs, ctx = int(sys.argv[1]), hr.parse_tokens(sys.argv[2])
res = hr.run_point(hr.PointConfig(batch=bs, context=ctx, steps=600, gate=True), specs)
n = len(res.records)
bound_batch = res.backend.chain_table.batch  # the two tables published the same batch last
assert bound_batch.rows.tolist() == shadow.batch.rows.tolist()
assert [e and e.signature for e in bound_batch.entries] == [e and e.signature for e in shadow.batch.entries]
assert [a.tolist() for a in bound_batch.paths] == [a.tolist() for a in shadow.batch.paths]
changed = np.array([bool(r.joined or r.left) for r in res.records])
for name, t in times.items():
    t = np.array(t[-n:]) * 1e6  # the timed steps are the last n
    parts = []
    for label, sel in (("changed", changed), ("unchanged", ~changed)):
        x = t[sel]
        parts.append(f"{label} ({sel.sum()}) p50 {np.percentile(x, 50):6.1f} p90 {np.percentile(x, 90):6.1f} "
                     f"max {x.max():7.1f}")
    print(f"bs {bs:3d} ctx {ctx:5d} {name:6s}: " + "; ".join(parts))
