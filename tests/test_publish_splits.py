"""The radix split counter and log (``count-radix-splits`` patch on ``RadixCache._split_node``): while the count stands
still the publisher re-reads only requests whose row, id, generation or last node changed; a split makes it re-read
the chains through the split nodes (all of them when the log does not cover the splits since the last batch). Either
way every step's forest and plan are those of the req_to_token rows (checks of test_decode_step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sglang_harness import RadixHarness, assert_plan_exact, plan_work, record_forests, rows_flat, slot_free_key
from test_decode_step import HEADS, plan_and_check, setup, step

from pat_sglang.config import DeviceSpec
from pat_sglang.decode_step import DecodeStepPlanner, StepBatch
from pat_sglang.forest import PrefixForest
from pat_sglang.sglang_patches.chain_table import ChainEntry, ChainTable, _RowPaths, _Tally, paths_of_entries
from pat_sglang.sglang_patches.core import COUNT_RADIX_RECACHING, COUNT_RADIX_SPLITS
from pat_sglang.sglang_patches.publish import SPLITS_ATTR, publish_decode_batch, radix_recached, radix_splits


@pytest.fixture()
def split_counter():
    applied = COUNT_RADIX_SPLITS.apply()
    yield
    if applied:
        COUNT_RADIX_SPLITS.remove()


@pytest.fixture()
def counters():
    applied = [p for p in (COUNT_RADIX_SPLITS, COUNT_RADIX_RECACHING) if p.apply()]
    yield
    for p in applied:
        p.remove()


class RunningBatch:
    """The running ``ScheduleBatch`` as SGLang 0.5.17 keeps it between decode steps: one object whose ``reqs`` list is
    rebound when requests join or leave (never edited in place), with the host mirror of its rows
    (``req_pool_indices_cpu``) and lengths kept in step with it."""

    def __init__(self, h: RadixHarness) -> None:
        self.h = h
        self.batch = h.schedule_batch([])
        self.live: list[int] = []

    def set(self, live: list[int]) -> None:
        """Requests joined, left or moved: a new list (``filter_batch`` / ``merge_batch``)."""
        self.live = list(live)
        self.batch.reqs = [self.h.reqs[i] for i in self.live]

    def publish(self, table: ChainTable) -> None:
        h, b = self.h, self.batch
        b.req_pool_indices_cpu = torch.tensor([r.req_pool_idx for r in b.reqs], dtype=torch.int64)
        b.seq_lens_cpu = torch.tensor([h.seq_lens[i] for i in self.live], dtype=torch.int64)
        publish_decode_batch(b, table)


def assert_fresh(h: RadixHarness, rb: RunningBatch, table: ChainTable) -> None:
    """``table``'s batch is what a fresh table reads from every chain of the batch."""
    fresh = ChainTable(enabled=True)
    publish_decode_batch(h.schedule_batch(rb.live), fresh)
    got, want = table.batch, fresh.batch
    assert got.rows.tolist() == want.rows.tolist() and got.rids == want.rids
    assert [e.signature for e in got.entries] == [e.signature for e in want.entries]
    assert got.paths[1].tolist() == want.paths[1].tolist() and got.cached.tolist() == want.cached.tolist()
    assert got.seq_lens.tolist() == [h.seq_lens[i] for i in rb.live]


def test_unchanged_batch_is_republished_without_reading_requests(counters) -> None:
    """The same list object, rows, generations and radix cache (no split, no re-caching): the last batch again with
    the new lengths (``ChainTable.republish_same``). Each way the shortcut could be fooled falls back to reading
    the batch: a request replaced in the very list (new row; or the same row handed to a new request), a running
    request re-cached (its ``last_node`` moves), a radix split by a request outside the batch, a new list."""
    rng = np.random.default_rng(3)
    h = RadixHarness(max_reqs=16, max_context=512, num_slots=1 << 13)
    system = rng.integers(1000, 2000, size=40).tolist()
    for _ in range(7):  # five in the batch, two outside it
        h.add_request(system + rng.integers(5000, 9000, size=int(rng.integers(2, 9))).tolist())
    assert radix_splits(h.cache) is not None and radix_recached(h.cache) is not None
    table = ChainTable(enabled=True)
    rb = RunningBatch(h)
    rb.set([0, 1, 2, 3, 4])

    def step(expect_reused: bool) -> None:
        h.decode(steps=1, only=rb.live)
        unread = table.unread
        rb.publish(table)
        assert (table.unread > unread) == expect_reused
        assert_fresh(h, rb, table)

    step(False)
    batch = table.batch
    step(True)
    assert table.batch.entries is batch.entries and table.batch.serial == batch.serial + 1
    step(True)
    counts = radix_splits(h.cache), radix_recached(h.cache)
    # a request replaced inside the very list (not what SGLang does; must not be trusted): another row
    rb.batch.reqs[4] = h.reqs[5]
    rb.live[4] = 5
    step(False)
    step(True)
    # a row handed to another request (its generation bumped) while the list stays the same
    h.req_to_token_pool.req_generation[h.reqs[2].req_pool_idx] += 1
    step(False)
    step(True)
    assert (radix_splits(h.cache), radix_recached(h.cache)) == counts  # each case above alone
    # a running request re-cached (the overlap scheduler caches a prefill after merging it): its last node moves
    h.cache.cache_unfinished_req(h.reqs[0])
    assert radix_splits(h.cache) == counts[0]
    step(False)
    step(True)
    # a running request re-cached with its decoded tokens (a chunked prefill's next chunk caches its longer fill):
    # its last node moves to a new node below the old one, and only its row is read again
    req = h.reqs[1]
    old_node = req.last_node
    req._refresh_fill_ids()  # fill ids = prompt + decoded tokens (SGLang keeps them so before each round)
    req.set_extend_range(len(req.prefix_indices), len(req.origin_input_ids) + len(req.output_ids))
    h.cache.cache_unfinished_req(req)
    assert req.last_node is not old_node
    published, by_rows = table.published, table.by_rows
    step(False)
    assert table.published == published + 1 and table.by_rows == by_rows + 1  # read by row, the batch not in full
    step(True)
    # the split count alone moving (a split somewhere in the tree)
    h.cache.__dict__[SPLITS_ATTR] += 1
    step(False)
    step(True)
    # an arrival outside the batch that splits the system prompt's node: every chain through it moved
    h.add_request(system[:13] + [4242])
    step(False)
    step(True)
    # requests leave and join: a new list
    rb.set([6, 0, 2, 7])  # 7: the arrival above
    step(False)
    step(True)


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
@pytest.mark.parametrize("by_rows", [False, True])
def test_incremental_publish_equals_a_fresh_read(split_counter, seed: int, by_rows: bool) -> None:
    """Random steps (arrivals that split radix nodes at random depths, finishes whose rows are reused, reorders):
    the entries the table keeps incrementally are those a fresh table reads from every chain, and a step re-reads
    only the requests that are new, or whose chains pass through a node split since the last step. The step planner
    fed by it (reused forests, re-made plans) plans exactly what a fresh planner over a fresh table plans: the
    forest of the req_to_token rows' sharing (``from_flat``), the same work (items, partials), exact in float64.
    ``by_rows``: the batches carry their host rows and the cache counts and logs its re-cachings, as a server's do, so
    changed batches take ``ChainTable.publish_rows`` (rows to read from the generations and the logs)."""
    recaching = COUNT_RADIX_RECACHING.apply() if by_rows else False
    try:
        _incremental_steps(seed, by_rows)
    finally:
        if recaching:
            COUNT_RADIX_RECACHING.remove()


def _incremental_steps(seed: int, by_rows: bool) -> None:
    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=24, max_context=512, num_slots=1 << 14)
    templates = [rng.integers(1000 * (t + 1), 1000 * (t + 2), size=64).tolist() for t in range(3)]
    table = ChainTable(enabled=True)
    late = ChainTable(enabled=True)
    live: list[int] = []
    pool = h.req_to_token_pool
    reads = fresh_reads = 0
    planner = DecodeStepPlanner(HEADS, DeviceSpec(), h.req_to_token, reuse_plans=False)  # a forest every step
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
        batch = h.schedule_batch(live)
        if by_rows:
            batch.req_pool_indices_cpu = torch.tensor([r.req_pool_idx for r in batch.reqs], dtype=torch.int64)
        publish_decode_batch(batch, table)
        reads += table.published - before
        fresh = ChainTable(enabled=True)
        publish_decode_batch(h.schedule_batch(live), fresh)
        fresh_reads += fresh.published
        # a table whose batches are read one step late: the paths of a batch after the table wrote newer entries
        unread = late.batch
        publish_decode_batch(h.schedule_batch(live), late)
        if unread is not None:
            want_paths = paths_of_entries(unread.entries)
            assert all(np.array_equal(a, b) for a, b in zip(unread.paths, want_paths, strict=True))
        got, want = table.batch, fresh.batch
        assert got.rows.tolist() == want.rows.tolist() and got.rids == want.rids
        assert [e.signature for e in got.entries] == [e.signature for e in want.entries], step_no
        assert got.cached.tolist() == want.cached.tolist()
        # the distinct cached tokens kept across steps are a fresh count's
        assert got.distinct_cached == want.distinct_cached == late.batch.distinct_cached
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
        rows = np.asarray(got.rows, np.int64)
        # re-made plans keep their item order
        assert plan_work(plan, slots, seq, rows) == plan_work(want_plan, slots, seq, rows), step_no
        if step_no % 10 == 9:
            assert_plan_exact(plan, h.req_to_token, got.rows, seq, seed=step_no, num_slots=h.num_slots)
    assert reads < fresh_reads / 3  # most steps read nothing or a few chains
    assert planner.counters.reused > 10 and planner.counters.unshared == 0
    # (edited forests, forest_edit, are checked here too, but this trace changes its shared nodes most steps: 0-3
    # of ~40 changed batches are edits; tests/test_forest_edit.py drives the edits)
    if by_rows:  # most changed batches were published by rows (a split the log cannot place reads them in full)
        assert table.by_rows > 20, table.by_rows
    else:
        assert table.by_rows == 0


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
    req, key, length = paths.paths(rows)
    cached = paths.cached_of(rows)
    want = [entries.get(int(r)) for r in rows]
    assert cached.tolist() == [e.cached_len if e is not None else 0 for e in want]
    for i, e in enumerate(want):
        assert key[req == i].tolist() == ([] if e is None else e.keys.tolist())
        assert length[req == i].tolist() == ([] if e is None else e.lengths.tolist())
    # the same arrays from the entries themselves (a batch whose rows were written since it was published)
    assert all(np.array_equal(a, b) for a, b in zip(paths_of_entries(want), (req, key, length), strict=True))


def test_tally_counts_each_node_once_across_batch_changes() -> None:
    """The distinct cached tokens kept per published batch equal a recount from scratch after every change: rows
    joining, leaving, re-published with another entry, or without one; nodes shared by several rows."""
    rng = np.random.default_rng(1)
    nodes = [(int(i), 0, int(rng.integers(1, 500))) for i in range(60)]  # (id, data pointer, tokens)
    tally = _Tally()
    live: dict[int, ChainEntry | None] = {}
    for _ in range(300):
        for row in rng.choice(64, size=int(rng.integers(1, 6)), replace=False).tolist():
            if rng.random() < 0.3:
                live.pop(row, None)
            elif rng.random() < 0.15:
                live[row] = None  # in the batch without an entry
            else:  # a chain through a few shared nodes: ids along a path, root last in the signature
                depth = int(rng.integers(1, 6))
                start = int(rng.integers(0, 3)) * 20
                live[row] = ChainEntry("r", 0, tuple(nodes[start + d] for d in range(depth))[::-1])
        rows = [int(r) for r in rng.permutation(list(live))]
        got = tally.update(rows, tuple(live[r] for r in rows))
        distinct = {(n, t) for e in live.values() if e is not None for n, _, t in e.signature}
        assert got == sum(t for _, t in distinct)


def test_a_chain_that_cannot_be_read_is_published_as_absent(counters) -> None:
    """Read by row (``publish_rows``), a request whose chain cannot be read (a node without a value) gets no entry in
    the batch, as a fresh read gives it, and its old entry is not handed out again; read again once it can be."""
    rng = np.random.default_rng(11)
    h = RadixHarness(max_reqs=16, max_context=512, num_slots=1 << 13)
    system = rng.integers(1000, 2000, size=40).tolist()
    for _ in range(4):
        h.add_request(system + rng.integers(5000, 9000, size=6).tolist())
    table = ChainTable(enabled=True)
    rb = RunningBatch(h)
    rb.set([0, 1, 2, 3])
    h.decode(steps=1, only=rb.live)
    rb.publish(table)
    assert table.batch.entries[2] is not None
    leaf = h.reqs[2].last_node
    value = leaf.value
    leaf.value = None  # its own leaf (a unique suffix) unreadable
    h.req_to_token_pool.req_generation[h.reqs[2].req_pool_idx] += 1  # the row is read again
    rb.set([0, 1, 2, 3])  # a new list: not the same batch object
    by_rows = table.by_rows
    h.decode(steps=1, only=rb.live)
    rb.publish(table)
    assert table.by_rows == by_rows + 1
    fresh = ChainTable(enabled=True)
    publish_decode_batch(h.schedule_batch(rb.live), fresh)
    assert table.batch.entries[2] is None and fresh.batch.entries[2] is None
    assert table.batch.absent == fresh.batch.absent == 1
    assert table.batch.cached.tolist() == fresh.batch.cached.tolist()
    assert table.batch.distinct_cached == fresh.batch.distinct_cached
    leaf.value = value
    h.req_to_token_pool.req_generation[h.reqs[2].req_pool_idx] += 1
    rb.set([0, 1, 2, 3])
    h.decode(steps=1, only=rb.live)
    rb.publish(table)
    assert_fresh(h, rb, table)


@pytest.mark.parametrize("binding", ["glue", "ctypes"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_compiled_batch_pick_leaves_the_python_state(counters, seed: int, binding: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``publish_rows`` with the compiled publisher pieces (``kernels/host_batch.c``: the changed rows marked, read
    and given entries in one call, the batch's tuples and change, the tally moved by the change) and the compiled row
    passes (``kernels/host_glue.c``: generations, rows to read, the batch's arrays), and with their Python versions
    (``ChainTable._publish_read``, ``chain_table._pick_batch``, ``_Tally.update_changes``' loop, the numpy row passes),
    fed the same random steps (arrivals splitting radix nodes, finishes whose rows are reused, reorders, unchanged
    steps): after every step the two tables hold the same state, published batch, tally (node counts, distinct tokens,
    rows) and node index included. The publisher pieces are called as the extension module's functions ("glue",
    where it loads) and through ctypes.PyDLL ("ctypes": the extension module off, so the row passes are numpy's)."""
    from pat_sglang import host_core

    monkeypatch.delenv(host_core.DISABLE_ENV, raising=False)  # compiled here even where the suite turns it off
    if binding == "ctypes":
        monkeypatch.setenv(host_core.GLUE_ENV, "0")
    host_core.reset()
    try:
        core = host_core.loaded_batch()
        assert core is not None, "the compiled publisher piece did not load"
        assert core.via_glue == (binding == "glue")
        assert (host_core.loaded_glue() is not None) == (binding == "glue"), "the extension module did not load"
        _compare_compiled_and_python(seed, monkeypatch)
    finally:
        host_core.reset()


def _compare_compiled_and_python(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_publish_wave import table_state

    from pat_sglang import host_core

    glue, batch_piece = host_core.loaded_glue, host_core.loaded_batch
    core = batch_piece()
    answered = {"publish_read": 0, "tally_changes": 0}  # the compiled table's calls the compiled pieces took
    for name in answered:
        def counted(*args: object, _call: object = getattr(core, name), _name: str = name) -> object:
            got = _call(*args)  # type: ignore[operator]
            answered[_name] += got is not NotImplemented
            return got
        monkeypatch.setattr(core, name, counted)

    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=40, max_context=512, num_slots=1 << 15)
    templates = [rng.integers(1000 * (t + 1), 1000 * (t + 2), size=64).tolist() for t in range(4)]
    compiled, python = ChainTable(enabled=True), ChainTable(enabled=True)
    batches = [RunningBatch(h), RunningBatch(h)]
    live: list[int] = []
    pool = h.req_to_token_pool
    for step_no in range(80):
        for _ in range(int(rng.integers(0, 4)) if len(live) < 30 else 0):
            t = templates[int(rng.integers(0, len(templates)))]
            own = rng.integers(9000, 9999, size=int(rng.integers(1, 9))).tolist()
            h.add_request(t[: int(rng.integers(4, 64))] + own)
            live.append(len(h.reqs) - 1)
        for _ in range(int(rng.integers(0, 3)) if len(live) > 4 else 0):  # finishes; their rows go to later arrivals
            pool.free(h.reqs[live.pop(int(rng.integers(0, len(live))))])
        if rng.random() < 0.1:
            rng.shuffle(live)
        if live and rng.random() < 0.2:  # a running request re-cached (its row is read again, its last node may move)
            h.cache.cache_unfinished_req(h.reqs[live[int(rng.integers(0, len(live)))]])
        h.decode(steps=1, only=live)
        relist = rng.random() < 0.3  # a new list for the same requests (a re-caching that moved nothing, or did)
        for rb, table in zip(batches, (compiled, python), strict=True):
            if rb.live != live or relist:
                rb.set(live)
            with monkeypatch.context() as m:
                if table is python:  # the publisher pieces' Python and the row passes' numpy versions for this table
                    m.setattr(host_core, "loaded_glue", lambda: None)
                    m.setattr(host_core, "loaded_batch", lambda: None)
                else:
                    m.setattr(host_core, "loaded_glue", glue)
                    m.setattr(host_core, "loaded_batch", batch_piece)
                rb.publish(table)
        assert table_state(compiled) == table_state(python), step_no
    assert compiled.by_rows > 20 and compiled.by_rows == python.by_rows
    assert answered["publish_read"] > 20 and answered["tally_changes"] > 10, answered
