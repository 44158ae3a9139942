"""The radix split counter and log (``count-radix-splits`` patch on ``RadixCache._split_node``): while the count stands
still the publisher re-reads only requests whose row, id, generation or last node changed; a split makes it re-read
the chains through the split nodes (all of them when the log does not cover the splits since the last batch). Either
way every step's forest and plan are those of the req_to_token rows (checks of test_decode_step)."""

from __future__ import annotations

import numpy as np
import pytest
from sglang_harness import RadixHarness, assert_plan_exact, plan_work, record_forests, rows_flat, slot_free_key
from test_decode_step import HEADS, plan_and_check, setup, step

from pat_sglang.config import DeviceSpec
from pat_sglang.decode_step import DecodeStepPlanner, StepBatch
from pat_sglang.forest import PrefixForest
from pat_sglang.sglang_patches.chain_table import ChainEntry, ChainTable, _RowPaths
from pat_sglang.sglang_patches.core import COUNT_RADIX_SPLITS
from pat_sglang.sglang_patches.publish import publish_decode_batch, radix_splits


@pytest.fixture()
def split_counter():
    applied = COUNT_RADIX_SPLITS.apply()
    yield
    if applied:
        COUNT_RADIX_SPLITS.remove()


def test_published_paths_follow_splits_arrivals_and_finishes(split_counter) -> None:
    s = setup(seed=5)
    cache = s.h.cache
    assert radix_splits(cache) >= 1  # setup's requests share the system prompt: inserting them split nodes
    plan_and_check(s, step(s), seed=0)
    published = s.table.published
    plan_and_check(s, step(s), seed=1)
    assert s.table.published == published  # unchanged batch: nothing re-read
    # An arrival with no split (a new system-prompt continuation): only the newcomer is read.
    s.h.add_request(s.system + s.rng.integers(9000, 9999, size=7).tolist())
    s.live.append(len(s.h.reqs) - 1)
    splits = radix_splits(cache)
    plan_and_check(s, step(s), seed=2)
    assert radix_splits(cache) == splits  # it hangs below the whole system-prompt node
    assert s.table.published == published + 1
    # An arrival that splits the system prompt's node: every chain through it changes and is re-read.
    s.h.add_request(s.system[:21] + s.rng.integers(9000, 9999, size=9).tolist())
    s.live.append(len(s.h.reqs) - 1)
    before = radix_splits(cache)
    assert before is not None and before > splits  # the insert split a node
    published = s.table.published
    plan_and_check(s, step(s), seed=3)
    assert s.table.published - published == len(s.live)  # every request's path moved (all hang below the split)
    # A finish, then steps with nothing new: the counter stands still and nothing is re-read.
    s.live.pop(1)
    plan_and_check(s, step(s), seed=4)
    published = s.table.published
    for i in range(3):
        plan_and_check(s, step(s), seed=5 + i)
    assert s.table.published == published and radix_splits(cache) == before
    assert s.planner.counters.unshared == 0


def test_without_the_patch_nothing_is_assumed() -> None:
    """A cache whose ``_split_node`` is not the counting wrapper: no count, every changed batch re-reads its chains."""
    applied = COUNT_RADIX_SPLITS.is_applied()
    if applied:
        COUNT_RADIX_SPLITS.remove()
    try:
        s = setup(seed=6)
        assert radix_splits(s.h.cache) is None
        plan_and_check(s, step(s), seed=0)
        s.h.add_request(s.system[:17] + s.rng.integers(9000, 9999, size=9).tolist())
        s.live.append(len(s.h.reqs) - 1)
        plan_and_check(s, step(s), seed=1)
        plan_and_check(s, step(s), seed=2)
    finally:
        if applied:
            COUNT_RADIX_SPLITS.apply()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_publish_equals_a_fresh_read(split_counter, seed: int) -> None:
    """Random steps (arrivals that split radix nodes at random depths, finishes whose rows are reused, reorders):
    the entries the table keeps incrementally are those a fresh table reads from every chain, and a step re-reads
    only the requests that are new, or whose chains pass through a node split since the last step. The step planner
    fed by it (reused forests, re-made plans) plans exactly what a fresh planner over a fresh table plans: the
    forest of the req_to_token rows' sharing (``from_flat``), the same work (items, partials), exact in float64."""
    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=24, max_context=512, num_slots=1 << 14)
    templates = [rng.integers(1000 * (t + 1), 1000 * (t + 2), size=64).tolist() for t in range(3)]
    table = ChainTable(enabled=True)
    live: list[int] = []
    pool = h.req_to_token_pool
    reads = fresh_reads = 0
    planner = DecodeStepPlanner(HEADS, DeviceSpec(), h.req_to_token)
    forests = record_forests(planner)
    for step_no in range(60):
        for _ in range(int(rng.integers(0, 3)) if len(live) < 16 else 0):  # arrivals: a cut of a template + own tokens
            t = templates[int(rng.integers(0, len(templates)))]
            own = rng.integers(9000, 9999, size=int(rng.integers(1, 9))).tolist()
            h.add_request(t[: int(rng.integers(4, 64))] + own)
            live.append(len(h.reqs) - 1)
        if len(live) > 3 and rng.random() < 0.5:  # a finish; its row goes to a later arrival
            pool.free(h.reqs[live.pop(int(rng.integers(0, len(live))))])
        if rng.random() < 0.1:
            rng.shuffle(live)
        h.decode(steps=1, only=live)
        before = table.published
        publish_decode_batch(h.schedule_batch(live), table)
        reads += table.published - before
        fresh = ChainTable(enabled=True)
        publish_decode_batch(h.schedule_batch(live), fresh)
        fresh_reads += fresh.published
        got, want = table.batch, fresh.batch
        assert got.rows.tolist() == want.rows.tolist() and got.rids == want.rids
        assert [e.signature for e in got.entries] == [e.signature for e in want.entries], step_no
        assert got.cached.tolist() == want.cached.tolist()
        assert got.paths[1].tolist() == want.paths[1].tolist() and got.paths[2].tolist() == want.paths[2].tolist()

        seq = np.array([h.seq_lens[i] for i in live], dtype=np.int64)
        plan = planner.plan(StepBatch(np.asarray(got.rows, np.int64), seq, len(live), got))
        fresh_planner = DecodeStepPlanner(HEADS, DeviceSpec(), h.req_to_token)
        fresh_forests = record_forests(fresh_planner)
        want_plan = fresh_planner.plan(StepBatch(np.asarray(want.rows, np.int64), seq, len(live), want))
        indptr, flat = rows_flat(h.req_to_token, got.rows, seq)
        assert slot_free_key(forests[-1]) == slot_free_key(fresh_forests[-1])
        assert slot_free_key(forests[-1]) == slot_free_key(PrefixForest.from_flat(indptr, flat)), step_no
        slots = h.req_to_token.view(-1).numpy()
        assert plan_work(plan, slots) == plan_work(want_plan, slots), step_no  # re-made plans keep their item order
        if step_no % 10 == 9:
            assert_plan_exact(plan, h.req_to_token, got.rows, seq, seed=step_no, num_slots=h.num_slots)
    assert reads < fresh_reads / 3  # most steps read nothing or a few chains
    assert planner.counters.reused > 10 and planner.counters.unshared == 0


def test_row_paths_grow_and_gather_each_rows_path() -> None:
    """The per-row path tables grow in rows and depth as entries arrive; a batch's gather is its entries' paths in
    batch order (rows without an entry: none), whatever was written to the rows before."""
    rng = np.random.default_rng(0)
    paths = _RowPaths()
    entries: dict[int, ChainEntry] = {}
    for _ in range(200):
        row = int(rng.integers(0, 300))
        if rng.random() < 0.2:
            paths.clear(row)
            entries.pop(row, None)
            continue
        depth = int(rng.integers(1, 40))
        sig = tuple((int(rng.integers(0, 1 << 40)), 0, int(rng.integers(1, 9000))) for _ in range(depth))
        entries[row] = ChainEntry("r", 0, sig)
        paths.set(row, entries[row])
    rows = rng.permutation(320)[:150]
    (req, key, length), cached = paths.gather(rows)
    want = [entries.get(int(r)) for r in rows]
    assert cached.tolist() == [e.cached_len if e is not None else 0 for e in want]
    for i, e in enumerate(want):
        assert key[req == i].tolist() == ([] if e is None else e.keys.tolist())
        assert length[req == i].tolist() == ([] if e is None else e.lengths.tolist())
