"""Issue 9, fifty-second session: the publisher's four compiled wave pieces (``kernels/host_batch.c``) called 6000
times each on the same inputs (their error and NotImplemented paths included): traced Python memory and the count of
GC-tracked objects after each 2000 must not grow (a reference leak in the C would grow both). Run from the repository
root with the project's venv: ``.venv/bin/python docs/perf/host/2026-12-04-fiftysecond-leak-check.py``."""
import gc
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import numpy as np
import test_publish_wave as tpw
from sglang_harness import RadixHarness

from pat_sglang import host_core
from pat_sglang.sglang_patches import chain_table as ct

rng = np.random.default_rng(4)
h = RadixHarness(max_reqs=300, max_context=512, num_slots=1 << 17)
systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
tpw.join(h, tpw.prompts(rng, 64, systems))
root = h.cache.root_node
nodes = [r.last_node for r in h.reqs] + [None, root]
core = host_core.loaded_batch()
sigs = core.chain_signatures(nodes, root, {})
changed = [(i, f"r{i}", 0, s) for i, s in enumerate(sigs) if s is not None]
t = ct.ChainTable()
t._row_room_each(list(range(100)))
def once():
    core.chain_signatures(nodes, root, {})
    w = ct.make_entries(changed)
    core.set_wave(t.entries, t._row_entry, t._rows_of_node, w.rows, w.entries)
    try:
        core.chain_signatures([tpw._Raising()], root, {})
    except RuntimeError:
        pass
    core.wave_entries(tuple(changed), ct.ChainEntry, *[np.zeros(1, np.int64)] * 5)
    core.tally_refs(w.keys, w.lengths)
    core.tally_refs(w.keys, w.lengths[:1])
for _ in range(200): once()
gc.collect(); tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]; objs = len(gc.get_objects())
for k in range(3):
    for _ in range(2000): once()
    gc.collect()
    print("round", k, "traced bytes delta", tracemalloc.get_traced_memory()[0] - base, "gc objects delta", len(gc.get_objects()) - objs)
