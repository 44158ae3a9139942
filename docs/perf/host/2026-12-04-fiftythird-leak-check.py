"""Issue 9, fifty-third session: the publisher's compiled changed-batch read and tally move (``kernels/host_batch.c``
``pat_publish_read``, ``pat_tally_changes``) called 6000 times each on a table kept in a steady state (rows read again
for alternating generations, so entries are made and replaced every call; the False, NotImplemented, no-cache and
split-node paths included): traced Python memory and the count of GC-tracked objects after each 2000 must not grow (a
reference leak in the C would grow both). Run from the repository root with the project's venv:
``.venv/bin/python docs/perf/host/2026-12-04-fiftythird-leak-check.py``."""

import gc
import sys
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_publish_read as tpr  # noqa: E402

from pat_sglang import host_core  # noqa: E402
from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402


def main() -> None:
    h, live, table, _ = tpr.twins(7)
    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    reqs, rows, gens = tpr.batch_args(h, live)
    root = h.cache.root_node
    bumped = gens.copy()
    bumped[:3] += 1
    out_of_step = rows.copy()
    out_of_step[0] = rows[1]
    beyond = rows.copy()
    beyond[0] = table._row_gen.shape[0]
    node_id = next(iter(table._rows_of_node))
    rng = np.random.default_rng(0)
    tally = ct._Tally()
    trows = list(range(40))
    states = [{r: tpr._entry(rng, 30) for r in trows} for _ in range(2)]
    tally.update(trows, tuple(states[0][r] for r in trows))

    def once(k: int) -> None:
        for g in (bumped, gens):  # the first three rows read again, their entries replaced
            core.publish_read(table, reqs, rows, g, root, (), [int(rows[3])], ct.ChainEntry, 16)
        core.publish_read(table, reqs, out_of_step, bumped, root, (), [], ct.ChainEntry, 16)  # False
        core.publish_read(table, reqs, beyond, gens, root, (), [], ct.ChainEntry, 16)  # NotImplemented
        core.publish_read(table, reqs, rows, bumped, None, (), [], ct.ChainEntry, 16)  # no cache: entries dropped
        core.publish_read(table, reqs[:4], rows[:4], gens[:4], root, (node_id,), [], ct.ChainEntry, 16)  # a split
        core.tally_changes(tally, [], trows, states[k % 2])
        core.tally_changes(tally, (), trows, states[0])  # NotImplemented

    for k in range(200):
        once(k)
    gc.collect()
    tracemalloc.start()
    base, objects = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    for r in range(3):
        for k in range(2000):
            once(k)
        gc.collect()
        print(f"round {r} traced bytes delta {tracemalloc.get_traced_memory()[0] - base} "
              f"gc objects delta {len(gc.get_objects()) - objects}")


if __name__ == "__main__":
    main()
