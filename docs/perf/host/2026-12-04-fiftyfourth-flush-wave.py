"""Issue 9, fifty-fourth session: the first decode batch after a cache flush (bench_serving's ``--flush-cache``: a new
radix root, the pool's generations zeroed), 256 requests under four shared system prompts (SGLang's real RadixCache
through the tests' harness), published by rows (``ChainTable.publish_rows``: every row read by the compiled read,
``kernels/host_batch.c`` ``pat_publish_read``) against the route it took before (``publish_batch``: the batch read in
full, its wave through the compiled wave pieces; taken here by a batch without its host rows, as ``publish_rows``
declined a new root before). 40 paired repetitions on fresh harnesses, each pair's order drawn at random. Run from the
repository root: ``.venv/bin/python docs/perf/host/2026-12-04-fiftyfourth-flush-wave.py``."""

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import numpy as np  # noqa: E402
import test_publish_wave as tpw  # noqa: E402
import torch  # noqa: E402
from sglang_harness import RadixHarness  # noqa: E402

from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402
from pat_sglang.sglang_patches.core import COUNT_RADIX_RECACHING, COUNT_RADIX_SPLITS  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

for patch in (COUNT_RADIX_SPLITS, COUNT_RADIX_RECACHING):
    patch.apply()


def once(seed: int, by_rows: bool, n_join: int = 256) -> float:
    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=600, max_context=512, num_slots=1 << 18)
    systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
    live = tpw.join(h, tpw.prompts(rng, 8, systems))
    table = ct.ChainTable(enabled=True)
    table._row_room(600)  # a server's table has room for its pool already
    b = h.schedule_batch(live)
    b.req_pool_indices_cpu = torch.tensor([q.req_pool_idx for q in b.reqs])
    publish_decode_batch(b, table)
    tpw.finish(h, live)
    tpw.flush_cache(h)
    live = tpw.join(h, tpw.prompts(rng, n_join, systems))
    b2 = h.schedule_batch(live)
    if by_rows:
        b2.req_pool_indices_cpu = torch.tensor([q.req_pool_idx for q in b2.reqs])
    n0 = table.by_rows
    t = time.perf_counter()
    publish_decode_batch(b2, table)
    dt = time.perf_counter() - t
    assert table.by_rows == n0 + by_rows
    tpw.assert_radix_paths(h, live, table)
    return dt * 1e6


rnd = random.Random(0)
res: dict[bool, list[float]] = {False: [], True: []}
for seed in range(40):
    order = [False, True]
    rnd.shuffle(order)
    for by_rows in order:
        res[by_rows].append(once(seed, by_rows))
a, b = np.array(res[False]), np.array(res[True])
print(f"first batch of 256 after a flush, 40 paired reps: publish_batch (before) median {np.median(a):.0f} us; "
      f"by rows (now) median {np.median(b):.0f} us; per-rep ratio median {np.median(b / a):.3f}")
