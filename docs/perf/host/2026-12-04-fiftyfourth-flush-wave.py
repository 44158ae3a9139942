"""Issue 9, fifty-fourth session: the first decode batch after a cache flush (bench_serving's ``--flush-cache``: a new
radix root, the pool's generations zeroed), 256 requests under four shared system prompts (SGLang's real RadixCache
through the tests' harness), published by rows (``ChainTable.publish_rows``: every row read by the compiled read,
``kernels/host_batch.c`` ``pat_publish_read``) against the route it took before (``publish_batch``: the batch read in
full, its wave through the compiled wave pieces; taken here by a batch without its host rows, as ``publish_rows``
declined a new root before). 40 paired repetitions on fresh harnesses, each repetition's order drawn at random. Run
from the repository root: ``.venv/bin/python docs/perf/host/2026-12-04-fiftyfourth-flush-wave.py [--routes]``.

Without ``--routes`` (the first measurement, 3fcba87): two routes, the table pre-sized for 600 rows. ``--routes``
(15e8a3d on): four, ``batch`` (publish_batch), ``rows-python`` (by rows with the compiled read declining, as it did
for a server's lazily grown table on the wave's new rows before 15e8a3d), ``rows-unreserved`` (by rows on a table
never sized: the tree's first batch makes its own room) and ``rows`` (by rows on a table reserved for the pool, as the
backend binds it)."""

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
real_read = core.publish_read


def once(seed: int, route: str, n_join: int = 256) -> float:
    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=600, max_context=512, num_slots=1 << 18)
    systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
    live = tpw.join(h, tpw.prompts(rng, 8, systems))
    table = ct.ChainTable(enabled=True)
    if route != "rows-unreserved":
        table.reserve_rows(h.req_to_token.shape[0])  # as the backend binds a server's table
    b = h.schedule_batch(live)
    b.req_pool_indices_cpu = torch.tensor([q.req_pool_idx for q in b.reqs])
    publish_decode_batch(b, table)
    tpw.finish(h, live)
    tpw.flush_cache(h)
    live = tpw.join(h, tpw.prompts(rng, n_join, systems))
    b2 = h.schedule_batch(live)
    by_rows = route != "batch"
    if by_rows:
        b2.req_pool_indices_cpu = torch.tensor([q.req_pool_idx for q in b2.reqs])
    if route == "rows-python":
        core.publish_read = lambda *a: NotImplemented
    n0 = table.by_rows
    t = time.perf_counter()
    publish_decode_batch(b2, table)
    dt = time.perf_counter() - t
    core.publish_read = real_read
    assert table.by_rows == n0 + by_rows
    tpw.assert_radix_paths(h, live, table)
    return dt * 1e6


routes = ["batch", "rows-python", "rows-unreserved", "rows"] if "--routes" in sys.argv else ["batch", "rows"]
rnd = random.Random(0)
res: dict[str, list[float]] = {r: [] for r in routes}
for seed in range(40):
    order = list(routes)
    rnd.shuffle(order)
    for route in order:
        res[route].append(once(seed, route))
base = np.array(res["batch"])
print("first batch of 256 after a flush, 40 paired reps, median us (per-rep ratio to publish_batch): " + "; ".join(
    f"{r} {np.median(res[r]):.0f} ({np.median(np.array(res[r]) / base):.3f})" for r in routes))
