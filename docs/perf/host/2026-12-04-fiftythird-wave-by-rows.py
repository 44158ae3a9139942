"""Issue 9, fifty-third session: a wave of 256 joining requests (under four shared system prompts, SGLang's real
RadixCache through the tests' harness) published by rows (``ChainTable.publish_rows``) after a batch of 8, read by the
compiled per-row read (``kernels/host_batch.c`` ``pat_publish_read`` with no row limit) against the Python wave path
with its compiled pieces (the limit at ``_WAVE``): 40 paired repetitions on fresh harnesses, each pair's order drawn at
random. Run from the repository root: ``.venv/bin/python docs/perf/host/2026-12-04-fiftythird-wave-by-rows.py``."""

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

from pat_sglang import host_core  # noqa: E402
from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402
from pat_sglang.sglang_patches.core import COUNT_RADIX_RECACHING, COUNT_RADIX_SPLITS  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

for patch in (COUNT_RADIX_SPLITS, COUNT_RADIX_RECACHING):
    patch.apply()
core = host_core.loaded_batch()
real = core.publish_read
def once(seed: int, limit: int, n_join: int = 256) -> float:
    core.publish_read = lambda *a: real(*a[:8], limit)
    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=600, max_context=512, num_slots=1 << 18)
    systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
    tpw.join(h, tpw.prompts(rng, 8, systems))
    table = ct.ChainTable(enabled=True)
    table._row_room(600)  # a server's table has room for its pool already
    b = h.schedule_batch(list(range(8)))
    b.req_pool_indices_cpu = torch.tensor([q.req_pool_idx for q in b.reqs])
    publish_decode_batch(b, table)
    tpw.join(h, tpw.prompts(rng, n_join, systems))
    b2 = h.schedule_batch(list(range(8 + n_join)))
    b2.req_pool_indices_cpu = torch.tensor([q.req_pool_idx for q in b2.reqs])
    n0 = table.by_rows
    t = time.perf_counter()
    publish_decode_batch(b2, table)
    dt = time.perf_counter() - t
    assert table.by_rows == n0 + 1
    core.publish_read = real
    return dt * 1e6
rnd = random.Random(0)
res = {16: [], 1 << 30: []}
for seed in range(40):
    order = [16, 1 << 30]
    rnd.shuffle(order)
    for limit in order:
        res[limit].append(once(seed, limit))
a, b = np.array(res[16]), np.array(res[1 << 30])
print(f"wave of 256 by rows, 40 paired reps: wave path (limit 16) median {np.median(a):.0f} us; compiled per-row "
      f"read (no limit) median {np.median(b):.0f} us; per-rep ratio median {np.median(b / a):.3f}")
