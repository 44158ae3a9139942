"""Publishing a wave of joiners: many rows read in one step (``ChainTable._read_wave``), their entries made from one
set of arrays (``make_entries``), their row paths written at once (``_RowPaths.set_many``), the tally counted afresh
and the replaced batch's objects retired (``ChainTable.retire``/``release``).

Two checks per step: the table's whole state (entries, reads, per-row arrays and lists, node index, row paths, tally,
published batch) equals that of a table fed the same batches one joiner at a time (the wave threshold raised past any
batch), and every published chain is its request's radix path walked from the root (an independent reading of the
harness's real SGLang ``RadixCache``). Waves with shared and unshared chains, requests without a radix node or with an
unreadable one, waves read by rows and in full, and a wave followed by radix splits."""

from __future__ import annotations

import contextlib
import gc
import operator
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sglang_harness import RadixHarness

from pat_sglang import host_core
from pat_sglang.planner import BoundShape, count_bound
from pat_sglang.sglang_patches import chain_table as ct
from pat_sglang.sglang_patches.chain_table import (
    ChainEntry,
    ChainTable,
    Wave,
    _RowPaths,
    chain_signature,
    make_entries,
)
from pat_sglang.sglang_patches.core import COUNT_RADIX_RECACHING, COUNT_RADIX_SPLITS
from pat_sglang.sglang_patches.publish import publish_decode_batch

ONE_BY_ONE = 1 << 30  # a wave threshold no batch reaches: every joiner read and written on its own


@pytest.fixture()
def counters() -> Iterator[None]:
    applied = [p for p in (COUNT_RADIX_SPLITS, COUNT_RADIX_RECACHING) if p.apply()]
    yield
    for p in applied:
        p.remove()


@contextlib.contextmanager
def wave_threshold(n: int) -> Iterator[None]:
    saved = ct._WAVE
    ct._WAVE = n
    try:
        yield
    finally:
        ct._WAVE = saved


def table_state(t: ChainTable) -> dict[str, Any]:
    """Everything the table keeps, as plain comparable values (entries by value; radix nodes by identity)."""

    def entry(e: ChainEntry | None) -> tuple | None:
        if e is None:
            return None
        return (e.rid, e.generation, e.signature, e.keys.tolist(), e.lengths.tolist(), e.cached_len)

    b = t.batch
    batch = None
    if b is not None:
        batch = (
            b.rows.tolist(), b.rids, b.serial, [entry(e) for e in b.entries or ()], b.cached.tolist(),
            None if b.gens is None else b.gens.tolist(), b.absent,
            None if b.seq_lens is None else b.seq_lens.tolist(), b.distinct_cached, [a.tolist() for a in b.paths],
        )
    paths = t._row_paths
    paths.flush()  # (the single rows' node ids and tokens are written when paths are next gathered)
    depth = paths.depth.tolist()
    return {
        "entries": {row: entry(e) for row, e in t.entries.items()},
        "read_as": {row: (rid, gen, id(node)) for row, (rid, gen, node) in t._read_as.items()},
        "row_gen": t._row_gen.tolist(),
        "row_rid": list(t._row_rid),
        "row_entry": [entry(e) for e in t._row_entry],
        "rows_of_node": {node: set(rows) for node, rows in t._rows_of_node.items()},
        # each row's path up to its depth (the cells past it are not state: nothing reads them), and the shapes
        "row_paths": ([row[:d] for row, d in zip(paths.keys.tolist(), depth, strict=True)],
                      [row[:d] for row, d in zip(paths.lengths.tolist(), depth, strict=True)], paths.keys.shape,
                      depth, paths.cached.tolist(), paths.version),
        "tally": (dict(t._tally.refs), dict(t._tally.firsts), t._tally.total, t._tally.blocks, t._tally.partials,
                  {row: entry(e) for row, e in t._tally.by_row.items()}),
        "batch": batch,
        "counts": (t.published, t.reused, t.unread, t.by_rows),
    }


def radix_path(req: Any, root: Any) -> list[tuple[int, int]] | None:
    """(node id, tokens) from the root down to ``req.last_node``, walked here (None: a node without a value)."""
    path = []
    node = req.last_node
    while node is not root:
        if node is None or node.value is None:
            return None
        path.append((node.id, len(node.value)))
        node = node.parent
    return path[::-1]


def assert_radix_paths(h: RadixHarness, live: list[int], table: ChainTable) -> None:
    """The published batch is the requests' rows, ids and generations, each chain its radix path from the root."""
    b = table.batch
    reqs = [h.reqs[i] for i in live]
    root = h.cache.root_node
    assert b.rows.tolist() == [r.req_pool_idx for r in reqs]
    assert list(b.rids) == [r.rid for r in reqs]
    gens = h.req_to_token_pool.req_generation
    assert b.gens.tolist() == [int(gens[r.req_pool_idx]) for r in reqs]
    want_paths: list[list[tuple[int, int]] | None] = [radix_path(r, root) for r in reqs]
    distinct: set[tuple[int, int]] = set()
    for i, (req, e, want) in enumerate(zip(reqs, b.entries, want_paths, strict=True)):
        if want is None:
            assert e is None, i
            continue
        assert e is not None and e.rid == req.rid and e.generation == int(gens[req.req_pool_idx])
        assert list(zip(e.keys.tolist(), e.lengths.tolist(), strict=True)) == want, i
        assert [(n, tokens) for n, _, tokens in reversed(e.signature)] == want
        assert e.cached_len == sum(tokens for _, tokens in want) == int(b.cached[i])
        assert not e.keys.flags.writeable and not e.lengths.flags.writeable
        distinct.update(want)
    assert b.absent == sum(w is None for w in want_paths)
    assert b.distinct_cached == sum(tokens for _, tokens in distinct)
    req_of, key, length = (a.tolist() for a in b.paths)
    flat = [(i, n, tokens) for i, w in enumerate(want_paths) if w for n, tokens in w]
    assert list(zip(req_of, key, length, strict=True)) == flat


@contextlib.contextmanager
def python_pieces() -> Iterator[None]:
    """The publisher without its compiled piece (``host_core.loaded_batch`` answers None): its Python versions."""
    loader = host_core.loaded_batch
    host_core.loaded_batch = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        host_core.loaded_batch = loader  # type: ignore[assignment]


DRIVER_SHAPE = BoundShape(3, 4096, 8320)


class Driver:
    """One harness's batches published into a wave table (threshold ``wave``), a one-joiner-at-a-time table and a
    table on the publisher's Python versions (threshold ``wave``: where the compiled read takes a wave by rows, the
    Python wave path is its reference), all checked after every step. ``by_rows``: the batches carry their host rows
    (``publish_rows``); else they are read in full (``publish_batch``)."""

    def __init__(self, h: RadixHarness, by_rows: bool, wave: int = 0) -> None:
        self.h, self.by_rows, self.wave = h, by_rows, wave
        self.table, self.reference = ChainTable(enabled=True), ChainTable(enabled=True)
        self.python = ChainTable(enabled=True)
        for t in (self.table, self.reference, self.python):  # the gate's node terms kept with the counts (3 rows/block)
            t.count_bound(DRIVER_SHAPE)
        self.live: list[int] = []
        self.batch = h.schedule_batch([])

    def step(self, live: list[int], new_list: bool = True) -> None:
        h = self.h
        self.live = list(live)
        if new_list:  # SGLang rebinds ScheduleBatch.reqs whenever requests join or leave
            self.batch.reqs = [h.reqs[i] for i in self.live]
        h.decode(steps=1, only=self.live)
        self.batch.seq_lens_cpu = torch.tensor([h.seq_lens[i] for i in self.live], dtype=torch.int64)
        if self.by_rows:
            self.batch.req_pool_indices_cpu = torch.tensor([h.reqs[i].req_pool_idx for i in self.live])
        with wave_threshold(self.wave):
            publish_decode_batch(self.batch, self.table)
        with wave_threshold(ONE_BY_ONE):
            publish_decode_batch(self.batch, self.reference)
        with wave_threshold(self.wave), python_pieces():
            publish_decode_batch(self.batch, self.python)
        assert table_state(self.table) == table_state(self.reference) == table_state(self.python)
        tally = self.table._tally
        assert (tally.blocks, tally.partials) == count_bound(tally.refs, tally.firsts, DRIVER_SHAPE)
        assert_radix_paths(h, self.live, self.table)


def prompts(rng: np.random.Generator, n: int, systems: list[list[int]] | None) -> list[list[int]]:
    """``n`` prompts: a system prompt (a random cut of one of ``systems``) and own tokens; own tokens only without."""
    out = []
    for _ in range(n):
        own = rng.integers(20000, 30000, size=int(rng.integers(2, 12))).tolist()
        if systems:
            system = systems[int(rng.integers(0, len(systems)))]
            own = system[: int(rng.integers(len(system) // 2, len(system) + 1))] + own
        out.append(own)
    return out


def join(h: RadixHarness, token_lists: list[list[int]]) -> list[int]:
    start = len(h.reqs)
    for tokens in token_lists:
        h.add_request(tokens)
    return list(range(start, len(h.reqs)))


def finish(h: RadixHarness, done: list[int]) -> None:
    for i in done:
        h.req_to_token_pool.free(h.reqs[i])


@pytest.mark.parametrize("by_rows", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("wave", [0, 16])
def test_waves_publish_the_one_by_one_state(counters, by_rows: bool, shared: bool, wave: int) -> None:
    """A closed loop: a whole batch joins at once, decodes, and is replaced at once by the next wave (rows reused, so
    generations move), with a few single joins and finishes between; shared system prompts (a few radix nodes under
    every chain) or none. Every step's table equals the one-by-one table's, and its chains are the radix paths."""
    rng = np.random.default_rng(7 + 2 * shared + by_rows)
    h = RadixHarness(max_reqs=96, max_context=512, num_slots=1 << 16)
    systems = [rng.integers(1000 * (s + 1), 1000 * (s + 2), size=64).tolist() for s in range(4)] if shared else None
    d = Driver(h, by_rows, wave)
    live = join(h, prompts(rng, 40, systems))
    d.step(live)
    for _ in range(3):
        d.step(live, new_list=False)
    for _ in range(3):  # waves: the whole batch finishes and the next one joins in one step
        finish(h, live)
        live = join(h, prompts(rng, 40, systems))
        d.step(live)
        d.step(live, new_list=False)
        gens = h.req_to_token_pool.req_generation
        for i in live:  # every row's generation moves under the same requests: a wave of re-reads of unchanged chains
            gens[h.reqs[i].req_pool_idx] += 1
        d.step(live)
        finish(h, live[:2])  # a couple leave, one joins: an ordinary changed step between the waves
        live = live[2:] + join(h, prompts(rng, 1, systems))
        d.step(live)
    assert d.table.published == d.reference.published
    if by_rows:
        assert d.table.by_rows >= 3


@pytest.mark.parametrize("by_rows", [True, False])
def test_a_wave_with_requests_without_a_radix_node(counters, by_rows: bool) -> None:
    """Joiners whose last node is the root (nothing cached: an empty chain) or has no value (an unreadable chain:
    published as absent, and read again while it stays so) in the middle of a wave."""
    rng = np.random.default_rng(3)
    h = RadixHarness(max_reqs=64, max_context=512, num_slots=1 << 15)
    systems = [rng.integers(1000, 2000, size=48).tolist()]
    d = Driver(h, by_rows)
    live = join(h, prompts(rng, 30, systems))
    for i in live[3:9]:
        h.reqs[i].last_node = h.cache.root_node
    held = h.reqs[live[10]].last_node
    value = held.value
    held.value = None
    d.step(live)
    assert d.table.batch.absent == 1 and sum(e is not None and e.cached_len == 0 for e in d.table.batch.entries) == 6
    d.step(live)
    held.value = value
    h.req_to_token_pool.req_generation[h.reqs[live[10]].req_pool_idx] += 1  # the row is read again
    d.step(live)
    assert d.table.batch.absent == 0
    finish(h, live)
    live = join(h, prompts(rng, 30, systems))
    h.reqs[live[0]].last_node = None  # no node at all: unreadable
    d.step(live)
    assert d.table.batch.entries[0] is None


@pytest.mark.parametrize("by_rows", [True, False])
def test_a_wave_followed_by_splits(counters, by_rows: bool) -> None:
    """After a wave on shared system prompts, arrivals split the shared nodes (a shorter cut of a prompt): the split
    log makes the table re-read exactly the chains through them, wave-written entries and index included; then a
    second wave joins on the split tree."""
    rng = np.random.default_rng(5)
    h = RadixHarness(max_reqs=128, max_context=512, num_slots=1 << 16)
    systems = [rng.integers(1000 * (s + 1), 1000 * (s + 2), size=64).tolist() for s in range(2)]
    d = Driver(h, by_rows)
    live = join(h, [systems[i % 2] + [30000 + i] for i in range(36)])
    d.step(live)
    for cut in (40, 20, 52):  # each splits one shared node under every chain of its prompt
        live = live + join(h, [systems[0][:cut] + [31000 + cut]])
        d.step(live)
        d.step(live, new_list=False)
    finish(h, live)
    live = join(h, prompts(rng, 36, systems))
    d.step(live)
    for cut in (10, 30):
        live = live + join(h, [systems[1][:cut] + [32000 + cut]])
        d.step(live)


def flush_cache(h: RadixHarness) -> None:
    """SGLang's ``Scheduler.flush_cache`` on an idle harness: a new radix root, the pool's rows free with their
    generations zeroed, the KV pool cleared."""
    h.cache.reset()
    h.req_to_token_pool.clear()
    h.allocator.clear()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("wave", [0, 16])
def test_the_first_batch_and_a_flushed_cache_are_read_by_rows(counters, shared: bool, wave: int) -> None:
    """The first batch (nothing published before) and the first batch after a cache flush (a new radix root; rows
    handed out again from generation 1, the generations the table read before the flush) are published by rows, every
    row read: equal to the one-by-one and Python tables, each chain its path in the new tree; so are later joiners on
    rows whose generation before the flush was the same, and the small batches after a second flush."""
    rng = np.random.default_rng(11 + shared)
    h = RadixHarness(max_reqs=96, max_context=512, num_slots=1 << 16)
    systems = [rng.integers(1000 * (s + 1), 1000 * (s + 2), size=64).tolist() for s in range(3)] if shared else None
    d = Driver(h, True, wave)
    live = join(h, prompts(rng, 40, systems))
    d.step(live)
    assert d.table.by_rows == d.python.by_rows == 1  # the first batch, by rows
    d.step(live, new_list=False)
    finish(h, live)
    flush_cache(h)
    live = join(h, prompts(rng, 30, systems))  # rows 1..30 again, each at generation 1 as before the flush
    assert [h.reqs[i].req_pool_idx for i in live] == list(range(1, 31))
    d.step(live)
    assert d.table.by_rows == 2
    d.step(live, new_list=False)
    live = live + join(h, prompts(rng, 5, systems))  # rows 31..35: generation 1, as the table read them before
    d.step(live)
    assert d.table.by_rows == 3
    finish(h, live)
    flush_cache(h)
    live = join(h, prompts(rng, 3, systems))  # a batch too small for a wave after the flush
    d.step(live)
    live = live[1:] + join(h, prompts(rng, 2, systems))
    d.step(live)
    assert d.table.by_rows == 5
    assert d.table.published == d.reference.published == d.python.published


def test_release_drops_a_replaced_batch_a_few_references_at_a_time(counters) -> None:
    """A wave read by rows retires the batch it replaces: its finished requests outlive the wave's own call, and
    ``release`` (one call per publishing) drops them ``_RELEASE`` at a time until none is held."""
    rng = np.random.default_rng(9)
    h = RadixHarness(max_reqs=96, max_context=512, num_slots=1 << 16)
    d = Driver(h, by_rows=True)
    live = join(h, prompts(rng, 40, None))
    d.step(live)
    d.step(live, new_list=False)
    finish(h, live)
    gone = [weakref.ref(h.reqs[i]) for i in live]
    h.reqs[live[0] : live[-1] + 1] = [None] * len(live)  # the harness no longer holds them: only the tables do
    d.batch.reqs = []
    live = join(h, prompts(rng, 40, None))
    with wave_threshold(0):
        d.step(live)
    d.reference.clear()  # the reference tables hold no request once cleared
    d.python.clear()
    gc.collect()
    assert all(ref() is not None for ref in gone)  # the wave's call did not free them
    held = len(d.table._retired)
    assert held >= len(gone)
    for _ in range(-(-held // ct._RELEASE)):
        d.table.release()
    assert not d.table._retired
    gc.collect()
    assert all(ref() is None for ref in gone)


def test_make_entries_equals_one_entry_at_a_time() -> None:
    """``make_entries`` gives what ``ChainEntry(rid, generation, signature)`` gives for each, empty chains included:
    equal entries, equal arrays (read-only), equal cached lengths."""
    rng = np.random.default_rng(2)
    changed = []
    for row in rng.permutation(200)[:120].tolist():
        depth = int(rng.integers(0, 6))
        sig = tuple((int(rng.integers(0, 1 << 40)), int(rng.integers(0, 1 << 48)), int(rng.integers(1, 9000)))
                    for _ in range(depth))
        changed.append((row, f"r{row}", int(rng.integers(0, 9)) if row % 7 else None, sig))
    wave = make_entries(changed)
    assert wave.rows == [c[0] for c in changed]
    for (_, rid, gen, sig), got in zip(changed, wave.entries, strict=True):
        want = ChainEntry(rid, gen, sig)
        assert got == want and hash(got) == hash(want)
        assert got.keys.tolist() == want.keys.tolist() and got.lengths.tolist() == want.lengths.tolist()
        assert got.keys.dtype == want.keys.dtype == np.int64 and got.cached_len == want.cached_len
        assert not got.keys.flags.writeable and not got.lengths.flags.writeable


@pytest.mark.parametrize("seed", [0, 1])
def test_row_paths_set_many_equals_set_in_turn(seed: int) -> None:
    """``_RowPaths.set_many`` leaves the arrays (shapes from growth included) and version ``set`` in turn leaves."""
    rng = np.random.default_rng(seed)
    one, many = _RowPaths(), _RowPaths()
    for _ in range(12):
        rows = rng.permutation(int(rng.integers(20, 400)))[: int(rng.integers(1, 60))].tolist()
        changed = []
        for row in rows:
            depth = int(rng.integers(0, 3 + 4 * seed))
            sig = tuple((int(rng.integers(0, 1 << 30)), 0, int(rng.integers(1, 900))) for _ in range(depth))
            changed.append((row, "r", 0, sig))
        wave = make_entries(changed)
        for row, entry in zip(rows, wave.entries, strict=True):
            one.set(row, entry)
        many.set_many(wave)
        one.flush()  # (``set`` writes a row's node ids and tokens when paths are next gathered)
        for name in ("keys", "lengths", "depth", "cached"):
            assert np.array_equal(getattr(one, name), getattr(many, name)), name
        assert one.version == many.version


def test_wave_signatures_equal_chain_signature() -> None:
    """``wave_signatures`` gives ``chain_signature``'s signatures and memo, for nodes under the root, under nodes read
    before, the root itself, None, and nodes (or ancestors) without a value."""
    rng = np.random.default_rng(4)
    h = RadixHarness(max_reqs=64, max_context=512, num_slots=1 << 15)
    systems = [rng.integers(1000, 2000, size=40).tolist()]
    join(h, prompts(rng, 30, systems))
    root = h.cache.root_node
    nodes = [r.last_node for r in h.reqs] + [root, None, h.reqs[0].last_node]
    h.reqs[5].last_node.value = None
    h.reqs[7].last_node.parent.value = None
    memo_one: dict = {}
    memo_wave: dict = {}
    want = [chain_signature(n, root, memo_one) for n in nodes]
    assert ct.wave_signatures(nodes, root, memo_wave) == want
    assert memo_wave == memo_one
    assert want[5] is None and want[7] is None and want[-3] == ()


class _Value:
    """A radix node's value as the chain walk reads it: a data pointer and an element count."""

    def __init__(self, ptr: int, numel: int) -> None:
        self._ptr, self._numel = ptr, numel

    def data_ptr(self) -> int:
        return self._ptr

    def numel(self) -> int:
        return self._numel


class _Raising:
    """A node whose ``parent`` read raises something other than AttributeError."""

    @property
    def parent(self) -> Any:
        raise RuntimeError("parent unreadable")


def _random_nodes(rng: np.random.Generator, root: Any, count: int) -> list[Any]:
    """A random radix-like tree under ``root``: nodes with ids, values (some unreadable: None, or without a data
    pointer, or a torch tensor) and parents; some nodes without a parent attribute at all, some detached (parent
    None)."""
    from types import SimpleNamespace

    nodes: list[Any] = []
    for i in range(count):
        parent = root if not nodes or rng.random() < 0.15 else nodes[int(rng.integers(len(nodes)))]
        kind = rng.random()
        if kind < 0.05:
            value: Any = None
        elif kind < 0.08:
            value = object()  # no data_ptr
        elif kind < 0.2:
            value = torch.arange(int(rng.integers(1, 9)))
        else:
            value = _Value(int(rng.integers(1, 1 << 40)), int(rng.integers(1, 4096)))
        node = SimpleNamespace(id=int(rng.integers(0, 1 << 20)) if rng.random() < 0.9 else np.int64(i), value=value)
        if rng.random() < 0.03:
            node.parent = None  # detached: unreadable chain
        elif rng.random() > 0.02:
            node.parent = parent  # (else no parent attribute: read as None)
        nodes.append(node)
    return nodes


def test_compiled_chain_signatures_equal_the_python_walk() -> None:
    """``host_core`` ``chain_signatures`` (``kernels/host_batch.c``) against ``_wave_signatures``: equal signatures
    (values and types) and equal memos, over random trees of fake nodes with unreadable values, missing or None parents,
    numpy ids, a pre-filled memo, repeated and foreign nodes; an attribute error other than AttributeError raises the
    same way from both."""
    from pat_sglang import host_core

    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    rng = np.random.default_rng(11)
    for trial in range(40):
        root = object()
        nodes = _random_nodes(rng, root, int(rng.integers(1, 80)))
        picks = [nodes[int(i)] for i in rng.integers(0, len(nodes), size=int(rng.integers(1, 60)))]
        picks += [root, None] if trial % 3 == 0 else []
        memo_c: dict = {}
        memo_py: dict = {}
        for pre in rng.choice(len(nodes), size=min(3, len(nodes)), replace=False).tolist() if trial % 2 else []:
            ct._wave_signatures([nodes[pre]], root, memo_c)  # a memo filled before (an earlier read in the step)
            ct._wave_signatures([nodes[pre]], root, memo_py)
        got = core.chain_signatures(picks, root, memo_c)
        want = ct._wave_signatures(picks, root, memo_py)
        assert got == want and memo_c == memo_py, trial
        for g, w in zip(got, want, strict=True):
            assert (g is None) == (w is None)
            if g:
                assert all(type(x) is int for item in g for x in item)  # ints, as int() makes them
        assert ct.wave_signatures(picks, root, {}) == want  # the dispatching entry point
    root = object()
    with pytest.raises(RuntimeError, match="parent unreadable"):
        core.chain_signatures([_Raising()], root, {})
    with pytest.raises(RuntimeError, match="parent unreadable"):
        ct._wave_signatures([_Raising()], root, {})
    with pytest.raises(TypeError):
        core.chain_signatures((), root, {})  # a tuple: refused, not read


def test_compiled_wave_entries_equal_make_entries_in_python() -> None:
    """``make_entries`` through ``host_core`` ``wave_entries`` (``kernels/host_batch.c``) against ``_make_entries``:
    the same flat arrays (read-only keys and lengths), depths, starts and cached lengths, and entries equal field by
    field with read-only slices of the flat arrays; empty waves and empty chains included. What the compiled piece does
    not take (a tuple of changes, a non-int in a signature) goes to the Python version, unchanged."""
    from pat_sglang import host_core

    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    rng = np.random.default_rng(12)
    for trial in range(60):
        changed = []
        for row in rng.choice(4096, size=int(rng.integers(0, 40)), replace=False).tolist():
            depth = int(rng.integers(0, 14)) if trial % 5 else 0
            sig = tuple((int(rng.integers(0, 1 << 40)), int(rng.integers(1, 1 << 45)), int(rng.integers(1, 9000)))
                        for _ in range(depth))
            changed.append((row, f"r{row}", None if rng.random() < 0.2 else int(rng.integers(0, 9)), sig))
        got, want = ct.make_entries(changed), ct._make_entries(changed)
        assert got.rows == want.rows
        for name in ("keys", "lengths", "depths", "starts", "cached"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b), name
            assert a.flags.writeable == b.flags.writeable, name
        assert len(got.entries) == len(want.entries)
        for g, w in zip(got.entries, want.entries, strict=True):
            assert type(g) is ChainEntry and vars(g).keys() == vars(w).keys()
            assert (g.rid, g.generation, g.signature, g.cached_len) == (w.rid, w.generation, w.signature, w.cached_len)
            assert np.array_equal(g.keys, w.keys) and np.array_equal(g.lengths, w.lengths)
            assert not g.keys.flags.writeable and not g.lengths.flags.writeable
            assert g.keys.base is not None and g == w  # slices of the wave's arrays; equal as dataclasses
    sig = ((1, 2, 3), (4, 5, np.int64(6)))  # a numpy int in a signature: taken, as int() takes it
    assert ct.make_entries([(0, "r", 1, sig)]).entries[0].cached_len == 9
    bad = [(0, "r", 1, ((1, 2, "x"),))]
    with pytest.raises((TypeError, ValueError)):
        ct._make_entries(bad)
    with pytest.raises((TypeError, ValueError)):
        ct.make_entries(bad)  # refused by the compiled piece, then the Python version's own error
    keys = np.zeros(1, dtype=np.int64)
    assert core.wave_entries(tuple(bad), ChainEntry, keys, keys, keys, keys, keys) is NotImplemented
    assert ct.make_entries(tuple([(0, "r", 1, sig)])).entries[0].cached_len == 9  # a tuple: the Python version


def test_compiled_set_wave_equals_the_python_loop() -> None:
    """``host_core`` ``set_wave`` (``kernels/host_batch.c``) against ``ChainTable._set_wave``: over random waves on
    tables holding earlier entries (rows replaced, nodes shared between rows, chains emptied), the same entries, per-row
    list and node -> rows index; what it does not take (numpy row numbers, rows past the list) changes nothing and
    answers NotImplemented."""
    from pat_sglang import host_core

    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    rng = np.random.default_rng(13)

    def entry(depth: int) -> ChainEntry:
        sig = tuple((int(rng.integers(0, 40)), 0, int(rng.integers(1, 50))) for _ in range(depth))
        return ChainEntry("r", 0, sig)

    for trial in range(40):
        tables = [ChainTable(), ChainTable()]
        for step in range(4):
            rows = rng.choice(64, size=int(rng.integers(1, 30)), replace=False).tolist()
            made = [entry(int(rng.integers(0, 8))) for _ in rows]
            wave = Wave(rows, made, *[np.zeros(0, dtype=np.int64)] * 5)
            for t in tables:
                t._row_room_each(rows)
            assert core.set_wave(tables[0].entries, tables[0]._row_entry, tables[0]._rows_of_node, rows, made) is None
            tables[1]._set_wave(wave)
            a, b = tables
            assert a.entries == b.entries and all(map(operator.is_, a._row_entry, b._row_entry)), (trial, step)
            assert a._rows_of_node == b._rows_of_node, (trial, step)
    t = ChainTable()
    t._row_room_each([3])
    before = (dict(t.entries), list(t._row_entry), dict(t._rows_of_node))
    assert core.set_wave(t.entries, t._row_entry, t._rows_of_node, [np.int64(3)], [entry(2)]) is NotImplemented
    assert core.set_wave(t.entries, t._row_entry, t._rows_of_node, [len(t._row_entry)], [entry(2)]) is NotImplemented
    assert (t.entries, t._row_entry, t._rows_of_node) == before


def test_compiled_tally_refs_equal_the_counter() -> None:
    """``host_core`` ``tally_refs`` (``kernels/host_batch.c``) against ``chain_table.tally_refs``: the same dicts (all
    nodes, and the paths' first nodes) in the same order and the same total over random flat paths (shared prefixes,
    equal node ids with other token counts, large ids, empty paths); what it does not take (int32 arrays, unequal
    lengths) answers NotImplemented."""
    from pat_sglang import host_core

    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    rng = np.random.default_rng(14)
    for trial in range(60):
        n = int(rng.integers(0, 3000)) if trial % 10 else 0
        pool = rng.integers(-(1 << 40), 1 << 62, size=max(1, int(rng.integers(1, 600))))
        keys = pool[rng.integers(0, pool.shape[0], size=n)].astype(np.int64)
        tokens = (np.abs(keys) % int(rng.integers(1, 50)) + rng.integers(0, 2, size=n)).astype(np.int64)
        req = np.sort(rng.integers(0, max(1, n // 4), size=n)).astype(np.int64)  # paths of 1-7 nodes, in order
        keys.setflags(write=False)
        got = core.tally_refs(req, keys, tokens)
        want = ct.tally_refs(req, keys, tokens)
        assert got == want and list(got[0].items()) == list(want[0].items()), trial
        assert list(got[2].items()) == list(want[2].items()), trial
        starts = np.flatnonzero(np.diff(req, prepend=-1) != 0)  # (independent of both: each path's first pair)
        assert sum(want[2].values()) == starts.shape[0] and all(
            want[2][(int(keys[i]), int(tokens[i]))] >= 1 for i in starts), trial
    keys = np.arange(4, dtype=np.int64)
    assert core.tally_refs(keys, keys.astype(np.int32), keys.astype(np.int32)) is NotImplemented
    assert core.tally_refs(keys, keys, keys[:3]) is NotImplemented
    assert core.tally_refs(keys[:3], keys, keys) is NotImplemented
