"""Issue 9, fifty-second session: where a publishing's wave path (``ChainTable._read_wave``, ``make_entries``,
``_set_entries``' wave, with their compiled pieces) beats the per-row path, by the number of rows read, on a table
holding a published batch of 256 (reads of k rows, their entries popped first; warm, one process). ``shallow`` as an
argument: requests without a system prompt (1-2-node chains) instead of ~11-node ones. Run from the repository root
with the project's venv: ``.venv/bin/python docs/perf/host/2026-12-04-fiftysecond-wave-threshold.py [shallow]``."""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import numpy as np
from sglang_harness import RadixHarness
from pat_sglang.sglang_patches import chain_table as ct
from pat_sglang.sglang_patches.publish import publish_decode_batch
import test_publish_wave as tpw
rng = np.random.default_rng(4)
h = RadixHarness(max_reqs=300, max_context=512, num_slots=1 << 17)
systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
tpw.join(h, tpw.prompts(rng, 256, systems if len(sys.argv) < 2 else None))
batch = h.schedule_batch(list(range(len(h.reqs))))
table = ct.ChainTable(enabled=True)
publish_decode_batch(batch, table)
root = h.cache.root_node
reqs = h.reqs
for k in (1, 2, 4, 8, 12, 16, 24, 32):
    out = {}
    for name, wave in (("wave", 0), ("rows", 1 << 30)):
        ct._WAVE = wave
        ts = []
        for it in range(300):
            pick = rng.choice(256, size=k, replace=False).tolist()
            read = [(reqs[i].req_pool_idx, reqs[i].rid, 0, reqs[i].last_node) for i in pick]
            for idx, *_ in read:
                table._pop_entry(idx)
            t = time.perf_counter()
            changed = table._read_rows(read, root, {})
            table._set_entries(ct.new_entries(changed))
            ts.append(time.perf_counter() - t)
        out[name] = np.median(ts) * 1e6
    print(f"k={k:3d} wave {out['wave']:7.1f} us  rows {out['rows']:7.1f} us  ({out['wave']/k:.2f} / {out['rows']/k:.2f} per joiner)")
