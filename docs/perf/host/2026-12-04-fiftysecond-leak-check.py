"""Issue 9, fifty-second session: the publisher's four compiled wave pieces (``kernels/host_batch.c``) called 6000
times each on the same inputs (their error and NotImplemented paths included): traced Python memory and the count of
GC-tracked objects after each 2000 must not grow (a reference leak in the C would grow both). Run from the repository
root with the project's venv: ``.venv/bin/python docs/perf/host/2026-12-04-fiftysecond-leak-check.py``."""

import gc
import sys
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_publish_wave as tpw  # noqa: E402
from sglang_harness import RadixHarness  # noqa: E402

from pat_sglang import host_core  # noqa: E402
from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(4)
    h = RadixHarness(max_reqs=300, max_context=512, num_slots=1 << 17)
    systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
    tpw.join(h, tpw.prompts(rng, 64, systems))
    root = h.cache.root_node
    nodes = [r.last_node for r in h.reqs] + [None, root]
    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    sigs = core.chain_signatures(nodes, root, {})
    changed = [(i, f"r{i}", 0, s) for i, s in enumerate(sigs) if s is not None]
    table = ct.ChainTable()
    table._row_room_each(list(range(100)))
    refused = [np.zeros(1, np.int64)] * 5

    def once() -> None:
        core.chain_signatures(nodes, root, {})
        wave = ct.make_entries(changed)
        core.set_wave(table.entries, table._row_entry, table._rows_of_node, wave.rows, wave.entries)
        try:
            core.chain_signatures([tpw._Raising()], root, {})
        except RuntimeError:
            pass
        core.wave_entries(tuple(changed), ct.ChainEntry, *refused)
        core.tally_refs(wave.keys, wave.lengths)
        core.tally_refs(wave.keys, wave.lengths[:1])

    for _ in range(200):
        once()
    gc.collect()
    tracemalloc.start()
    base, objects = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    for k in range(3):
        for _ in range(2000):
            once()
        gc.collect()
        print(f"round {k} traced bytes delta {tracemalloc.get_traced_memory()[0] - base} "
              f"gc objects delta {len(gc.get_objects()) - objects}")


if __name__ == "__main__":
    main()
