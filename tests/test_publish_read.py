"""The compiled reading of a changed batch (``kernels/host_batch.c`` ``pat_publish_read``) and the compiled tally move
(``pat_tally_changes``) against their Python versions (``ChainTable._publish_read``, ``_Tally.update_changes``' loop)
on the cases the random serving steps of ``test_publish_splits.py`` reach rarely or never: requests out of step with
their rows (False, with the rows marked as the Python version marks them), rows beyond the table and more rows to read
than a wave's threshold (NotImplemented, nothing changed), unreadable chains and no radix cache (entries dropped), rows
of a split outside the batch; and random tallies moved by random changes, rows touched twice included."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sglang_harness import RadixHarness
from test_publish_wave import python_pieces, table_state

from pat_sglang import host_core
from pat_sglang.planner import BoundShape, count_bound
from pat_sglang.sglang_patches import chain_table as ct
from pat_sglang.sglang_patches.chain_table import ChainEntry, ChainTable, _Tally, newest
from pat_sglang.sglang_patches.core import COUNT_RADIX_RECACHING, COUNT_RADIX_SPLITS
from pat_sglang.sglang_patches.publish import publish_decode_batch, radix_split_log, radix_splits

WAVE = 16


@pytest.fixture()
def core(monkeypatch: pytest.MonkeyPatch) -> Iterator[host_core._HostBatch]:
    applied = [p for p in (COUNT_RADIX_SPLITS, COUNT_RADIX_RECACHING) if p.apply()]
    monkeypatch.delenv(host_core.DISABLE_ENV, raising=False)  # compiled here even where the suite turns it off
    host_core.reset()
    loaded = host_core.loaded_batch()
    assert loaded is not None, "the compiled publisher piece did not load"
    yield loaded
    host_core.reset()
    for p in applied:
        p.remove()


def twins(seed: int, steps: int = 12, count: int = 2) -> tuple[Any, ...]:
    """A harness with requests sharing prompt templates, its live requests, and ``count`` tables fed the same decode
    batches (requests joining and finishing, rows reused), holding the same state."""
    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=48, max_context=512, num_slots=1 << 15)
    templates = [rng.integers(1000 * (t + 1), 1000 * (t + 2), size=48).tolist() for t in range(3)]
    tables = [ChainTable(enabled=True) for _ in range(count)]
    live: list[int] = []
    batch = h.schedule_batch([])
    for _ in range(steps):
        for _ in range(int(rng.integers(1, 4))):
            t = templates[int(rng.integers(0, len(templates)))]
            h.add_request(t[: int(rng.integers(4, 48))] + rng.integers(9000, 9999, size=3).tolist())
            live.append(len(h.reqs) - 1)
        if len(live) > 6:
            h.req_to_token_pool.free(h.reqs[live.pop(int(rng.integers(0, len(live))))])
        h.decode(steps=1, only=live)
        batch.reqs = [h.reqs[i] for i in live]
        batch.req_pool_indices_cpu = torch.tensor([h.reqs[i].req_pool_idx for i in live], dtype=torch.int64)
        batch.seq_lens_cpu = torch.tensor([h.seq_lens[i] for i in live], dtype=torch.int64)
        for t in tables:
            publish_decode_batch(batch, t)
    assert all(table_state(t) == table_state(tables[0]) for t in tables[1:])
    return (h, live, *tables)


def batch_args(h: RadixHarness, live: list[int]) -> tuple[list, np.ndarray, np.ndarray]:
    reqs = [h.reqs[i] for i in live]
    rows = np.array([r.req_pool_idx for r in reqs], dtype=np.int64)
    gens = h.req_to_token_pool.req_generation.numpy()[rows].astype(np.int64)
    return reqs, rows, gens


def both(core: host_core._HostBatch, a: ChainTable, b: ChainTable, reqs: list, rows: np.ndarray,
         gens: np.ndarray, root: object, moved: tuple = (), recached: list | None = None) -> tuple[object, object]:
    """The compiled read on ``a`` and the Python one on ``b``, same arguments; their answers."""
    recached = [] if recached is None else recached
    got = core.publish_read(a, reqs, rows, gens, root, moved, recached, ChainEntry, WAVE)
    want = b._publish_read(reqs, rows, gens, root, moved, recached)
    return got, want


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joiners_read_alike(core: host_core._HostBatch, seed: int) -> None:
    """New requests and re-cached rows: the same entries, reads, index, row paths; the same answer."""
    h, live, a, b = twins(seed)
    splits = radix_splits(h.cache)
    for _ in range(3):  # (their prompts may split the radix node they leave: moved, as publish_rows passes it)
        h.add_request(list(h.reqs[live[0]].origin_input_ids[:20]) + [77, 78])
        live.append(len(h.reqs) - 1)
    h.decode(steps=1, only=live)
    moved = tuple(newest(radix_split_log(h.cache), radix_splits(h.cache) - splits))
    reqs, rows, gens = batch_args(h, live)
    got, want = both(core, a, b, reqs, rows, gens, h.cache.root_node, moved, [int(rows[1]), int(rows[2])])
    assert got == want and got[0] >= 3 and len(got[1]) >= 5  # three joiners, two re-cached rows, the split's
    assert table_state(a) == table_state(b)


def test_requests_out_of_step_with_their_rows(core: host_core._HostBatch) -> None:
    """A request to read whose ``req_pool_idx`` is not its row: False, with the marked rows marked alike."""
    h, live, a, b = twins(3)
    h.add_request([5, 6, 7, 8])
    live.append(len(h.reqs) - 1)
    reqs, rows, gens = batch_args(h, live)
    rows = rows.copy()
    rows[-1] = rows[0]  # the joiner's row says another row
    gens = gens.copy()
    gens[-1] = gens[0] + 1
    got, want = both(core, a, b, reqs, rows, gens, h.cache.root_node, recached=[int(rows[1])])
    assert got is False and want is False
    assert a._row_gen[int(rows[1])] == -2
    assert table_state(a) == table_state(b)


def test_rows_beyond_the_table_and_waves_change_nothing(core: host_core._HostBatch) -> None:
    """NotImplemented with the table untouched where a row is beyond the table's rows or more rows than the wave
    threshold are to be read (the Python path grows the table or reads the wave)."""
    h, live, a, _ = twins(4)
    before = table_state(a)
    reqs, rows, gens = batch_args(h, live)
    beyond = rows.copy()
    beyond[0] = a._row_gen.shape[0]
    assert core.publish_read(a, reqs, beyond, gens, h.cache.root_node, (), [], ChainEntry, WAVE) is NotImplemented
    stale = gens + 1  # every row's generation moved: all are to be read
    assert len(live) > 3
    assert core.publish_read(a, reqs, rows, stale, h.cache.root_node, (), [], ChainEntry, 3) is NotImplemented
    assert core.publish_read(a, reqs, rows, gens, h.cache.root_node, (), [1.5], ChainEntry, WAVE) is NotImplemented
    assert core.publish_read(a, reqs[:-1], rows, gens, h.cache.root_node, (), [], ChainEntry, WAVE) is NotImplemented
    assert table_state(a) == before


def test_unreadable_chains_and_no_radix_cache(core: host_core._HostBatch) -> None:
    """A chain through a node without a value, and a batch without a radix cache (root None): the rows read, their
    entries dropped, as the Python version drops them."""
    h, live, a, b = twins(5)
    req = h.add_request([11, 12, 13, 14, 15])
    live.append(len(h.reqs) - 1)
    value, req.last_node.value = req.last_node.value, None
    try:
        reqs, rows, gens = batch_args(h, live)
        got, want = both(core, a, b, reqs, rows, gens, h.cache.root_node, recached=[int(rows[0])])
        assert got == want
        assert int(rows[-1]) not in a.entries and table_state(a) == table_state(b)
    finally:
        req.last_node.value = value
    reqs, rows, gens = batch_args(h, live)
    got, want = both(core, a, b, reqs, rows, gens, None, recached=[int(r) for r in rows[:3]])
    assert got == want and got[0] == 0
    assert not any(int(r) in a.entries for r in rows[:3])
    assert table_state(a) == table_state(b)


def test_split_nodes_reach_rows_outside_the_batch(core: host_core._HostBatch) -> None:
    """Rows through a split node: those in the batch read again, those outside it dropped (stale), alike."""
    h, live, a, b = twins(6)
    node_id = next(iter(a._rows_of_node))
    through = set(a._rows_of_node[node_id])
    keep = [i for i in live if h.reqs[i].req_pool_idx not in through][:4] + [
        i for i in live if h.reqs[i].req_pool_idx in through][:1]
    reqs, rows, gens = batch_args(h, keep)
    got, want = both(core, a, b, reqs, rows, gens, h.cache.root_node, moved=(node_id, 10**9))
    assert got == want
    assert table_state(a) == table_state(b)


def _entry(rng: np.random.Generator, nodes: int) -> ChainEntry:
    depth = int(rng.integers(1, 6))
    picked = rng.choice(nodes, size=depth, replace=False)
    return ChainEntry(f"r{rng.integers(1 << 30)}", int(rng.integers(0, 9)),
                      tuple((int(n), 0, int(n % 7) + 1) for n in picked))


@pytest.mark.parametrize("seed", range(6))
def test_tally_changes_equal_the_python_loop(core: host_core._HostBatch, seed: int) -> None:
    """Random tallies over shared nodes moved by random leavers and touched rows (absent entries, unchanged entries
    and rows touched twice among them): the same counts, total, rows and version as the Python loop, and with a bound
    shape (every other trial) the same gate terms, equal to ``planner.count_bound`` of the counts afresh."""
    rng = np.random.default_rng(seed)
    for trial in range(20):
        rows = rng.choice(200, size=int(rng.integers(1, 40)), replace=False).tolist()
        entries = [_entry(rng, 30) if rng.random() < 0.9 else None for _ in rows]
        shape = BoundShape(int(rng.choice([1, 3, 16])), 4096, 8320) if trial % 2 else None
        tally = _Tally(shape)
        tally.update(rows, tuple(entries))
        now = {r: e for r, e in zip(rows, entries, strict=True) if e is not None}
        left = [r for r in rows if rng.random() < 0.2]
        for r in left:
            now.pop(r, None)
        stay = [r for r in rows if r not in left]
        touched = [r for r in stay if rng.random() < 0.3] + rng.choice(range(200, 260), size=3, replace=False).tolist()
        for r in touched:
            roll = rng.random()
            if roll < 0.6:
                now[r] = _entry(rng, 30)
            elif roll < 0.7:
                now.pop(r, None)
        touched += touched[: int(rng.integers(0, 3))]  # a joiner is also a row read
        python = _Tally(shape)  # the same counts and rows, the same entry objects (the loop tells entries by identity)
        python.refs, python.firsts, python.by_row, python.total, python.version, python.blocks, python.partials = (
            dict(tally.refs), dict(tally.firsts), dict(tally.by_row), tally.total, tally.version, tally.blocks,
            tally.partials)
        got = core.tally_changes(tally, left, touched, now)
        python.version += 1
        by_row = python.by_row
        for r in left:
            python._count(by_row.pop(r, None), -1)
        for r in touched:
            e, old = now.get(r), by_row.get(r)
            if old is not e:
                python._count(old, -1)
                python._count(e, 1)
            by_row[r] = e
        assert got == python.total == tally.total
        assert tally.refs == python.refs and list(tally.refs) == list(python.refs)
        assert tally.firsts == python.firsts and list(tally.firsts) == list(python.firsts)
        assert tally.firsts == Counter((e.signature[-1][0], e.signature[-1][2])  # each row's node under the root
                                       for e in tally.by_row.values() if e is not None and e.signature)
        assert (tally.blocks, tally.partials) == (python.blocks, python.partials)
        if shape is not None:
            assert (tally.blocks, tally.partials) == count_bound(tally.refs, tally.firsts, shape)
        else:
            assert (tally.blocks, tally.partials) == (0, 0)
        assert tally.by_row.keys() == python.by_row.keys() and tally.version == python.version
        assert all(tally.by_row[r] == python.by_row[r] for r in tally.by_row)


def test_tally_changes_refuse_what_they_cannot_read(core: host_core._HostBatch) -> None:
    """NotImplemented, the tally untouched, where an entry's signature is not 3-tuples of ints, the arguments are not
    lists and a dict, or its bound shape is not three ints with a row per block."""
    rng = np.random.default_rng(0)
    tally = _Tally()
    tally.update([1, 2], (_entry(rng, 10), _entry(rng, 10)))
    before = (dict(tally.refs), dict(tally.firsts), tally.total, dict(tally.by_row), tally.version)
    empty = np.zeros(0, dtype=np.int64)
    bad = ChainEntry.with_arrays("x", 0, ((1, 0, 2), (3, 0)), empty, empty, 2)  # type: ignore[arg-type]
    assert core.tally_changes(tally, [], [3], {3: bad}) is NotImplemented
    assert core.tally_changes(tally, (1,), [3], {}) is NotImplemented
    tally.shape = (0, 4096, 8320)  # a bound shape it cannot count with (no row per block), then one of no ints
    assert core.tally_changes(tally, [], [3], {3: _entry(rng, 10)}) is NotImplemented
    tally.shape = ("16", 4096, 8320)
    assert core.tally_changes(tally, [], [3], {3: _entry(rng, 10)}) is NotImplemented
    assert (dict(tally.refs), dict(tally.firsts), tally.total, dict(tally.by_row), tally.version) == before


def test_long_logs_of_rows_mostly_outside_the_batch(core: host_core._HostBatch) -> None:
    """Re-cached rows by the hundred (most outside the batch, some beyond the table) and a split reaching every row
    the index holds: the rows in the batch read again (fewer than a wave), the others marked or dropped, alike."""
    h, live, a, b = twins(8, steps=16)
    reqs, rows, gens = batch_args(h, live)
    inside = {int(r) for r in rows[:2]}
    outside = [r for r in range(a._row_gen.shape[0] + 40) if r not in {int(x) for x in rows}]
    recached = [*outside, *inside, *outside[:50]]
    node_id = max(a._rows_of_node, key=lambda k: len(a._rows_of_node[k]))
    moved = (node_id,) if sum(int(r) in a._rows_of_node[node_id] for r in rows) <= 10 else ()
    got, want = both(core, a, b, reqs, rows, gens, h.cache.root_node, moved=moved, recached=recached)
    assert got == want and got is not NotImplemented
    assert table_state(a) == table_state(b)


def test_a_first_batch_beyond_the_table_and_a_reserved_table_take_the_compiled_read(
    core: host_core._HostBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled read declines rows beyond the per-row arrays: a table's first batch (no batch of its tree before)
    makes room for its rows first, and a table reserved for its pool (``reserve_rows``, as the backend binds one) takes
    a later wave onto rows it never saw; both by the compiled read, the state equal to the Python path's."""
    answers: list[object] = []
    real = core.publish_read

    def counted(*args: Any) -> object:
        answers.append(real(*args))
        return answers[-1]

    monkeypatch.setattr(core, "publish_read", counted)
    rng = np.random.default_rng(5)
    h = RadixHarness(max_reqs=300, max_context=256, num_slots=1 << 16)
    systems = [rng.integers(1000, 2000, size=24).tolist() for _ in range(2)]
    live = [h.reqs.index(h.add_request(systems[i % 2] + [5000 + i])) for i in range(100)]
    fresh, reserved, python = ChainTable(enabled=True), ChainTable(enabled=True), ChainTable(enabled=True)
    reserved.reserve_rows(h.req_to_token.shape[0])
    assert reserved._row_gen.shape[0] == h.req_to_token.shape[0]
    batch = h.schedule_batch([])

    def step() -> None:
        h.decode(steps=1, only=live)
        batch.reqs = [h.reqs[i] for i in live]
        batch.req_pool_indices_cpu = torch.tensor([h.reqs[i].req_pool_idx for i in live], dtype=torch.int64)
        batch.seq_lens_cpu = torch.tensor([h.seq_lens[i] for i in live], dtype=torch.int64)
        for table in (fresh, reserved):
            publish_decode_batch(batch, table)
        with python_pieces():
            publish_decode_batch(batch, python)

    step()  # the first batch: rows 1..100, beyond both tables' arrays until room is made
    assert len(answers) == 2 and all(a is not NotImplemented for a in answers)
    assert fresh.by_rows == reserved.by_rows == 1
    live += [h.reqs.index(h.add_request(systems[i % 2] + [6000 + i])) for i in range(150)]  # rows 101..250
    answers.clear()
    step()
    assert answers[1] is not NotImplemented  # the reserved table: the wave by the compiled read
    assert answers[0] is NotImplemented  # the unreserved one: beyond its arrays, the Python read grew them
    assert table_state(fresh) == table_state(python)
    sized = {"row_gen", "row_rid", "row_entry", "row_paths"}  # the reserved table's per-row arrays are longer
    state, want = table_state(reserved), table_state(python)
    assert {k: v for k, v in state.items() if k not in sized} == {k: v for k, v in want.items() if k not in sized}
    n = len(want["row_gen"])
    assert state["row_gen"][:n] == want["row_gen"] and set(state["row_gen"][n:]) == {-1}
    assert state["row_rid"][:n] == want["row_rid"] and state["row_entry"][:n] == want["row_entry"]


def test_each_publishing_names_its_route(core: host_core._HostBatch, monkeypatch: pytest.MonkeyPatch) -> None:
    """``take_publish`` gives each publishing's route with its seconds (the stats line's slowest step names it) and
    ``routes_clause`` counts them: a first batch and a change by rows, the same batch unchanged, a change the compiled
    read declines (the Python read), a batch without its host rows read in full."""
    rng = np.random.default_rng(8)
    h = RadixHarness(max_reqs=48, max_context=256, num_slots=1 << 15)
    prompt = rng.integers(1000, 2000, size=24).tolist()
    live = [h.reqs.index(h.add_request(prompt + [7000 + i])) for i in range(6)]
    table = ChainTable(enabled=True)
    batch = h.schedule_batch([])

    def step(with_rows: bool = True) -> tuple:
        h.decode(steps=1, only=live)
        if batch.reqs != [h.reqs[i] for i in live]:
            batch.reqs = [h.reqs[i] for i in live]
        batch.req_pool_indices_cpu = (torch.tensor([h.reqs[i].req_pool_idx for i in live], dtype=torch.int64)
                                      if with_rows else None)
        batch.seq_lens_cpu = torch.tensor([h.seq_lens[i] for i in live], dtype=torch.int64)
        publish_decode_batch(batch, table)
        taken = table.take_publish()
        assert taken[0] > 0.0 and table.take_publish() == (0.0, None, "")
        return taken[2]

    assert step() == ct.ROUTE_ROWS  # the first batch
    assert step() == ct.ROUTE_UNCHANGED
    live.append(h.reqs.index(h.add_request(prompt + [7100])))
    assert step() == ct.ROUTE_ROWS
    live.append(h.reqs.index(h.add_request(prompt + [7200])))
    monkeypatch.setattr(core, "publish_read", lambda *a: NotImplemented)
    assert step() == ct.ROUTE_ROWS_PYTHON
    live.pop(0)
    assert step(with_rows=False) == ct.ROUTE_FULL
    assert table.routes_clause() == (f"batches published unchanged {table.reused}, by rows 3 (1 of them on the Python "
                                     "read), read in full 1")
    assert table.reused >= 1
