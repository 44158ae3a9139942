"""The published radix paths of running decode requests, keyed by ``req_pool_idx``.

Role in pack-forward-merge: the hand-off into *pack*. SGLang's attention backends only see a
``ForwardBatch`` (no requests, no radix tree), so the scheduler-side patch (``sglang_patches.publish``)
records, per running request, the radix nodes of its cached prefix as (node id, tokens) from the root
down, when a decode batch is built; ``PATAttnBackend`` reads them once per step to build the prefix
forest. Only node ids and lengths are recorded, never slot indices: the KV slots stay on the device
(in ``req_to_token``), where the forward kernel reads them, so publishing copies nothing from the GPU.

Entries hold plain numbers, never live ``TreeNode`` references: radix nodes can be split or evicted
after the step. An entry is only trusted for the request it was published for: it carries the
request id and ``ReqToTokenPool.req_generation`` of its row, which SGLang bumps whenever the row is
handed to a new request.

Waves: when a whole batch is replaced at once (a closed loop of equal output lengths: 256 requests join in one step),
per-joiner Python was the cost (the chain walked, an entry's arrays made, its row and node index written: ~13-19 us a
joiner on a 2-core VM). A step that reads more than ``_WAVE`` rows reads them as one wave: signatures through the
batch's memo with the common joiner (its node under the root or under a node read already) inline, the reads noted
with C loops and one array write, all the entries' arrays made from one table (``make_entries``), the row paths
written in a few scattered writes (``_RowPaths.set_many``), and, if it is a quarter of the batch, the tally counted
afresh from the batch's paths. The state left is the one the per-joiner path leaves (tests/test_publish_wave.py). The
replaced batch's objects are retired and dropped a few per call (``ChainTable.retire``): the table's snapshot held the
last reference to its finished requests, and freeing 256 of them at once was a millisecond of the wave's call.

A changed batch's rows to read (requests joining, re-cached, or through a node split since; a wave's too) are read,
given their entries and counted into the tally in two compiled calls (``host_core`` ``publish_read``,
``tally_changes``) over the table's own dicts, lists and arrays, ~40 us of Python statements a changed step before
(``ChainTable._publish_read`` and ``_Tally.update_changes`` are their reference and fallback). The first batch of a
radix tree (the first at all, or the first after a cache flush replaced the root) takes the same calls with every row
to read: a serving benchmark's first wave of joiners follows its flush.

One table per ``ReqToTokenPool``: a ``req_pool_idx`` only means something within its pool, and every
TP/DP rank's scheduler has its own pool (and radix tree). SGLang 0.5.17 runs each rank in its own
process, but nothing here relies on that: ``chain_table_for`` keys tables by the pool object, the PAT
backend binds one to its model runner's pool, and the publishing patch routes each batch by its
``ScheduleBatch.req_to_token_pool``, so two ranks in one process never see each other's rows.
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
import weakref
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pat_sglang import host_core
from pat_sglang.gc_pauses import GcMark
from pat_sglang.planner import BoundShape, copy_with, count_bound, first_node_partials, node_blocks, same_ints

# (node id, data pointer, length) per node from ``last_node`` up: changes whenever the chain does. A
# split gives the upper half a new id and shrinks the lower half, and nodes a running request holds are
# locked against eviction, so an unchanged signature means unchanged slots.
Signature = tuple[tuple[int, int, int], ...]
_TOKENS = operator.itemgetter(2)  # a signature item's tokens
_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.setflags(write=False)
_FEW = 16  # rows up to which a per-row Python loop costs less than making an array of them
# Joiners (rows read, or entries made) beyond which they are handled as one wave (``ChainTable._read_wave``,
# ``make_entries``): a wave's fixed ~15 numpy calls cost less than ~10 us of small calls per joiner from here on.
_WAVE = 16
# Rows a changed batch's compiled read (``host_core`` ``publish_read``) takes, waves included: it reads a wave of 256
# joiners by rows in 0.68x the time of the Python wave path with its compiled pieces (the fifty-third session's paired
# reps, docs/perf/host/2026-12-04-fiftythird-vm-wave-by-rows.txt); ``_WAVE`` then matters where it does not load and for
# batches read in full (``publish_batch``).
_COMPILED_READ_ROWS = 1 << 30
# Retired references (``ChainTable.retire``) dropped per round of ``release``, and the host time a publishing call
# spends on them: a wave replaces a whole batch whose finished requests were last held by the table's snapshot, and
# freeing 256 of them at once took ~1-1.5 ms of the wave's call on the 2-core VM; ~50 us a call spreads that over ~30
# calls without lifting their p99 much. Beyond ``_RETIRED_CAP`` held (waves every step) the excess goes at once.
_RELEASE = 8
_RELEASE_S = 50e-6
_RETIRED_CAP = 4096


# How a publishing read its batch (``ChainTable.publish_route``, named in the stats line's slowest step): the batch and
# its radix nodes unchanged (no request read), the rows that can have changed read by the compiled read or, where it
# declined, by its Python version, the batch read in full (``publish_batch``), or one request at a time (the fallback
# after an error).
ROUTE_UNCHANGED, ROUTE_ROWS, ROUTE_ROWS_PYTHON, ROUTE_FULL, ROUTE_ONE_BY_ONE = (
    "unchanged", "by rows", "by rows, Python read", "read in full", "one by one")


def is_wave(changed: int, size: int) -> bool:
    """Whether ``changed`` new entries in a batch of ``size`` are a wave: more than ``_WAVE``, and a quarter of the
    batch (the batch's tally is then counted afresh and the replaced batch's objects retired). Rows read again with
    their entries unchanged (a split through a shared node) do not count: the tally's own update skips them for free."""
    return changed > _WAVE and 4 * changed > size


def newest(log: Sequence, n: int) -> list:
    """The last ``n`` items of ``log`` (a deque of up to thousands), oldest first: indexed from the end, where a deque
    reaches them at once (``islice`` walks the log from its start)."""
    return [log[-k] for k in range(n, 0, -1)]


@dataclass(frozen=True)
class ChainEntry:
    """One request's published path. ``cached_len`` is made with the entry; ``keys``/``lengths`` (int64 node ids and
    tokens, root first, read-only) on first read (``__getattr__``), then kept: most entries are never read as arrays
    (a batch the gate declines needs only the cached lengths, the forest edit reads its joiners' entries), and their
    ~6 numpy calls were a fifth of a changed step's per-joiner publishing. Not ``functools.cached_property``: in
    Python 3.11 it takes a lock on every read."""

    rid: Hashable
    generation: int | None  # ReqToTokenPool.req_generation[req_pool_idx] when published; None if unknown
    signature: Signature  # (node id, data pointer, tokens) per node from the request's last node up
    keys: np.ndarray = field(init=False, repr=False, compare=False)
    lengths: np.ndarray = field(init=False, repr=False, compare=False)
    cached_len: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cached_len", sum(map(_TOKENS, self.signature)))

    def __getattr__(self, name: str) -> np.ndarray:
        """``keys`` and ``lengths``, made from the signature on the first read of either (later reads find them set:
        Python calls this only for attributes not found)."""
        if name not in ("keys", "lengths"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        sig = self.signature
        table = np.fromiter(itertools.chain.from_iterable(reversed(sig)), np.int64, 3 * len(sig)).reshape(-1, 3)
        table.setflags(write=False)  # its column views below are then read-only too
        object.__setattr__(self, "keys", table[:, 0])
        object.__setattr__(self, "lengths", table[:, 2])
        return table[:, 0] if name == "keys" else table[:, 2]

    @classmethod
    def with_arrays(
        cls, rid: Hashable, generation: int | None, signature: Signature, keys: np.ndarray, lengths: np.ndarray,
        cached_len: int,
    ) -> ChainEntry:
        """The entry of ``signature`` with its ``keys``/``lengths`` (read-only, root first) and ``cached_len`` already
        made: ``make_entries`` makes them for a whole wave of joiners at once, and ``__post_init__``'s ~25 small
        numpy and Python calls per entry were most of a wave's cost."""
        entry = object.__new__(cls)
        # ``object.__setattr__`` as the frozen dataclass's own ``__init__`` does, not ``entry.__dict__.update`` (~0.3 us
        # faster): that makes each entry a real dict object (an extra GC-tracked container), unlike the entries the
        # per-joiner path makes
        put = object.__setattr__
        put(entry, "rid", rid)
        put(entry, "generation", generation)
        put(entry, "signature", signature)
        put(entry, "keys", keys)
        put(entry, "lengths", lengths)
        put(entry, "cached_len", cached_len)
        return entry


@dataclass(frozen=True)
class Wave:
    """The entries ``make_entries`` made for a wave of rows, with the flat arrays they are views of (what
    ``_RowPaths.set_many`` writes): entry ``i`` is ``keys[starts[i]:starts[i] + depths[i]]``."""

    rows: list[int]
    entries: list[ChainEntry]
    keys: np.ndarray  # int64, every entry's node ids, root first, entries in order (read-only)
    lengths: np.ndarray  # int64, their tokens
    depths: np.ndarray  # int64 [entries]
    starts: np.ndarray  # int64 [entries]
    cached: np.ndarray  # int64 [entries] each entry's cached_len


def make_entries(changed: Sequence[tuple[int, Hashable, int | None, Signature]]) -> Wave:
    """The ``ChainEntry`` of every (row, rid, generation, signature) of ``changed`` from one set of arrays: all the
    signatures flattened into one table, each entry's ``keys``/``lengths`` a slice of it and its ``cached_len`` the sum
    of its tokens. Equal to ``ChainEntry(rid, generation, signature)`` each (the same values; the arrays are slices of
    a shared read-only base instead of each entry's own). One call of the compiled publisher piece (``host_core``
    ``wave_entries``) where it loads and takes them, else ``_make_entries``."""
    core = host_core.loaded_batch()
    if core is not None and isinstance(changed, list):
        n = len(changed)
        depths = np.fromiter(map(len, map(_SIGNATURE, changed)), np.int64, n)
        total = int(depths.sum())
        keys, lengths = np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64)
        starts, cached = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        entries = core.wave_entries(changed, ChainEntry, keys, lengths, depths, starts, cached)
        if entries is not NotImplemented:
            return Wave([c[0] for c in changed], entries, keys, lengths, depths, starts, cached)
    return _make_entries(changed)


_SIGNATURE = operator.itemgetter(3)


def _make_entries(changed: Sequence[tuple[int, Hashable, int | None, Signature]]) -> Wave:
    """``make_entries`` in numpy and Python (the reference of ``kernels/host_batch.c`` ``pat_wave_entries``)."""
    sigs = [c[3] for c in changed]
    depth_list = list(map(len, sigs))
    total = sum(depth_list)
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(map(reversed, sigs)))
    table = np.fromiter(flat, np.int64, 3 * total).reshape(-1, 3)
    keys, lengths = table[:, 0].copy(), table[:, 2].copy()  # contiguous, so every entry's slice is too
    keys.setflags(write=False)  # slices of a read-only base are read-only: no setflags per entry
    lengths.setflags(write=False)
    depths = np.array(depth_list, dtype=np.int64)
    ends = np.cumsum(depths)
    starts = ends - depths
    running = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(lengths, out=running[1:])
    cached = running[ends] - running[starts]  # (np.add.reduceat would misread empty chains)
    make = ChainEntry.with_arrays
    entries = [
        make(rid, gen, sig, keys[s:e], lengths[s:e], c)
        for (_, rid, gen, sig), s, e, c in zip(changed, starts.tolist(), ends.tolist(), cached.tolist(), strict=True)
    ]
    return Wave([c[0] for c in changed], entries, keys, lengths, depths, starts, cached)


def chain_signature(last_node: Any, root: Any, memo: dict[int, Signature | None] | None = None) -> Signature | None:
    """Cheap identity of the chain (no device copies); ``None`` when it cannot be read as a chain.

    ``memo`` (one dict per batch, keyed by ``id(node)``) shares the signatures of common ancestors between the
    requests of one batch, so a shared system prompt is read once per batch, not once per request."""
    if memo is None:
        memo = {}
    path = []
    node = last_node
    tail: Signature | None = ()
    while node is not None and node is not root:
        known = memo.get(id(node), False)
        if known is not False:
            tail = known
            break
        path.append(node)
        node = getattr(node, "parent", None)
    else:
        if node is not root:
            tail = None
    for n in reversed(path):  # root side first, each signature = own entry + its parent's
        if tail is not None:
            value = getattr(n, "value", None)
            if value is None or not hasattr(value, "data_ptr"):
                tail = None  # evicted, or not a classic RadixCache node
            else:
                tail = ((int(n.id), int(value.data_ptr()), int(value.numel())),) + tail
        memo[id(n)] = tail
    return tail


def wave_signatures(nodes: list[Any], root: Any, memo: dict[int, Signature | None]) -> list[Signature | None]:
    """``chain_signature(node, root, memo)`` of each of ``nodes`` in turn: one call of the compiled publisher piece
    (``host_core`` ``chain_signatures``) where it loads, else ``_wave_signatures``."""
    core = host_core.loaded_batch()
    if core is None:
        return _wave_signatures(nodes, root, memo)
    return core.chain_signatures(nodes, root, memo)


def _wave_signatures(nodes: Sequence[Any], root: Any, memo: dict[int, Signature | None]) -> list[Signature | None]:
    """``wave_signatures`` in Python (the reference of ``kernels/host_batch.c`` ``pat_chain_signatures``), the common
    case inline: a joiner whose last node hangs off the root or off a node read already (in a wave, the shared
    system-prompt nodes are read for the first joiner and every other one adds only its own node). Anything else goes
    through ``chain_signature``."""
    get = memo.get
    out: list[Signature | None] = []
    for node in nodes:
        sig = get(id(node), False)
        if sig is False:
            parent = getattr(node, "parent", None)
            tail = () if parent is root else get(id(parent), False)
            if parent is None or tail is False:
                sig = chain_signature(node, root, memo)
            else:
                value = getattr(node, "value", None)
                if tail is None or value is None or not hasattr(value, "data_ptr"):
                    sig = None  # as chain_signature: an unreadable node or ancestor makes the chain unreadable
                else:
                    sig = ((int(node.id), int(value.data_ptr()), int(value.numel())),) + tail
                memo[id(node)] = sig
        out.append(sig)
    return out


@dataclass(frozen=True)
class PublishedBatch:
    """The rows of the last decode batch published into a table, in batch order, as host data: the backend takes
    its rows and request ids from here instead of reading ``ForwardBatch.req_pool_indices`` back from the GPU (a
    stream synchronisation), and checks the batch size matches.

    ``entries`` are the requests' chain entries as published (``None`` where a chain could not be read), with
    ``cached`` their cached lengths and ``gens`` the generations they were published for (``None`` if the pool has
    none). When a batch's chains are all unchanged since the previous batch, ``entries`` is the previous batch's
    very tuple, so the backend can tell "nothing changed" with one identity check."""

    rows: np.ndarray  # int64 [bs] req_pool_idx of each request (read-only)
    rids: tuple  # request id of each request
    serial: int  # bumped per published batch
    entries: tuple | None = None  # ChainEntry or None per request; None: not recorded (look entries up)
    cached: np.ndarray | None = None  # int64 [bs] cached_len of each entry (0 where there is none)
    gens: np.ndarray | None = None  # int64 [bs] the generations the entries were published for
    absent: int = 0  # requests without an entry (None in ``entries``)
    seq_lens: np.ndarray | None = None  # int64 [bs] the batch's sequence lengths (None: the batch had none on the host)
    # The entries' distinct cached tokens: each radix node's tokens once (None: not counted). With ``cached`` it gives
    # the batch's unique tokens without its paths (the dispatch gate's bound, ``DecodeStepPlanner.unique_tokens``).
    distinct_cached: int | None = None
    lazy_paths: _LazyPaths | None = field(default=None, repr=False, compare=False)  # see ``paths``
    # The publisher's node count (``_Tally``) as moved to this batch, and its version then: ``node_refs``
    tally: _Tally | None = field(default=None, repr=False, compare=False)
    tally_version: int = field(default=-1, repr=False, compare=False)

    def node_refs(self) -> dict[tuple[int, int], int] | None:
        """Per radix node (id, tokens) of the batch's entries, how many of its rows pass through it (read-only);
        ``None`` when not counted, or when the publisher has moved on to another batch since (the backend plans a
        batch right after it is published, so it gets them). Lets the planner bound what a joiner re-reads
        (``DecodeStepPlanner._joiners_excess``) with a dict look-up per node of the joiners' paths."""
        tally = self.tally
        if tally is None or tally.version != self.tally_version:
            return None
        return tally.refs

    def first_refs(self) -> dict[tuple[int, int], int] | None:
        """``node_refs`` of the nodes under the root only: per such node, how many of the batch's rows start there
        (their first node); ``None`` as ``node_refs``."""
        tally = self.tally
        if tally is None or tally.version != self.tally_version:
            return None
        return tally.firsts

    def bound_terms(self, shape: BoundShape) -> tuple[int, int] | None:
        """``planner.count_bound(node_refs(), first_refs(), shape)``, kept by the publisher as requests come and go
        (O(1) here); ``None`` where it keeps them for another shape or none (``ChainTable.count_bound``), or as
        ``node_refs``."""
        tally = self.tally
        if tally is None or tally.version != self.tally_version or tally.shape != shape:
            return None
        return tally.blocks, tally.partials

    @property
    def paths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The radix paths as flat int64 arrays (request index, node id, tokens), requests in batch order, each root
        first: ``PrefixForest.from_paths``'s input (read-only). Gathered on first use (a batch the gate declines from
        ``distinct_cached`` never needs them); a reused batch shares them."""
        return self.lazy_paths.get() if self.lazy_paths is not None else (_EMPTY, _EMPTY, _EMPTY)


@dataclass
class _Snapshot:
    """What ``publish_batch`` saw last, to tell a batch whose chains cannot have changed with identity checks only:
    same rows, request ids, generations and root, and every request's ``last_node`` with the same ``value`` and
    ``parent`` objects, and so every ancestor (``anc``: (node, value, parent) once per distinct ancestor). A radix
    split replaces the split node's ``value`` and ``parent``; eviction never touches nodes a running request locks."""

    root: Any
    idxs: list | None  # None: taken by ``publish_rows``, which keeps no per-request lists
    rids: list | None
    gens: list | None
    nodes: list | None
    values: list
    parents: list
    anc: list
    batch: PublishedBatch
    splits: int | None  # the cache's split count when taken (None: unknown, ``anc`` is checked instead)
    reqs: list | None = None  # the ``ScheduleBatch.reqs`` list object it was read from (see ``republish_same``)
    recached: int | None = None  # the cache's cache_unfinished_req count when taken (None: unknown)




def _absent(entries: tuple) -> int:
    """How many of ``entries`` are None. Not ``entries.count(None)``, which calls ``ChainEntry.__eq__`` per entry:
    an entry is always true (no ``__bool__`` or ``__len__``), so ``filter`` drops exactly the Nones in one C loop."""
    return len(entries) - len(tuple(filter(None, entries)))


_VALUE = operator.attrgetter("value")
_PARENT = operator.attrgetter("parent")


class _RowPaths:
    """Every row's published path as rows of 2-D arrays (node ids, tokens, depth, cached length), written when its
    entry changes, so a batch's flat paths are a few gathers by row instead of one array per request. ``version``
    counts the writes (a batch's paths gathered later are its own only while it has not moved).

    A single row's node ids and tokens are written when paths are next gathered (``_pending``, ``flush``), its depth
    and cached length at once: a changed step reads the batch's cached lengths, but most never gather its paths (the
    gate declines the batch, or the forest is edited from the entries), so the row writes per joiner are mostly never
    made, and where they are, the rows pending then are written together from their signatures (no entry's arrays
    made). Cells past a row's depth hold whatever they held (nothing reads them)."""

    def __init__(self) -> None:
        self.keys = np.zeros((0, 4), dtype=np.int64)
        self.lengths = np.zeros((0, 4), dtype=np.int64)
        self.depth = np.zeros(0, dtype=np.int64)
        self.cached = np.zeros(0, dtype=np.int64)
        self.version = 0
        self._pending: dict[int, ChainEntry] = {}  # row -> entry whose node ids and tokens are still to be written

    def flush(self) -> None:
        """Write the pending rows' node ids and tokens (``set`` made room for them), all in two scattered writes from
        one conversion of their signatures: the rows of every entry made since paths were last gathered (up to a
        batch's worth), which a row at a time (an entry's arrays made, two row writes) cost ~1 ms of a step at 256."""
        pending = self._pending
        if not pending:
            return
        rows = np.fromiter(pending, np.int64, len(pending))
        sigs = [entry.signature for entry in pending.values()]
        pending.clear()
        if host_core.glue_call("write_paths", self.keys, self.lengths, rows, sigs) is not NotImplemented:
            return  # written by the extension module (kernels/host_glue.c); below, its numpy reference
        depths = np.fromiter(map(len, sigs), np.int64, len(sigs))
        total = int(depths.sum())
        if not total:
            return
        # per node, root first: (node id, data pointer, tokens), as ChainEntry's arrays are made
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(map(reversed, sigs))),
                           np.int64, 3 * total).reshape(total, 3)
        on = np.repeat(rows, depths)
        col = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(depths) - depths, depths)
        self.keys[on, col] = flat[:, 0]
        self.lengths[on, col] = flat[:, 2]

    def _room(self, rows: int, depth: int) -> None:
        have_rows, have_depth = self.keys.shape
        if rows <= have_rows and depth <= have_depth:
            return
        rows = have_rows if rows <= have_rows else max(rows, 2 * have_rows, 64)
        depth = have_depth if depth <= have_depth else max(depth, 2 * have_depth)
        for name in ("keys", "lengths"):
            grown = np.zeros((rows, depth), dtype=np.int64)
            grown[:have_rows, :have_depth] = getattr(self, name)
            setattr(self, name, grown)
        for name in ("depth", "cached"):
            grown = np.zeros(rows, dtype=np.int64)
            grown[:have_rows] = getattr(self, name)
            setattr(self, name, grown)

    def room(self, rows: int) -> None:
        """Room for rows ``0..rows-1`` (of depth 1 at least)."""
        self._room(rows, 1)

    def set(self, row: int, entry: ChainEntry) -> None:
        d = len(entry.signature)
        keys = self.keys
        if row >= keys.shape[0] or d > keys.shape[1]:  # (checked here: a call to ``_room`` per entry costs more)
            self._room(row + 1, d)
            keys = self.keys
        self._pending[row] = entry
        self.depth[row] = d
        self.cached[row] = entry.cached_len
        self.version += 1

    def set_many(self, wave: Wave) -> None:
        """``set`` for every row of ``wave`` (distinct rows), in a few scattered writes. The arrays grow exactly as
        the rows' ``set`` in turn would grow them."""
        rows = wave.rows
        if not rows:
            return
        self.flush()  # (a pending row of the wave would otherwise overwrite the wave's write later)
        have_rows, have_depth = self.keys.shape
        if max(rows) >= have_rows or int(wave.depths.max()) > have_depth:
            for row, d in zip(rows, wave.depths.tolist(), strict=True):
                self._room(row + 1, d)
        at = np.array(rows, dtype=np.int64)
        depths = wave.depths
        on = np.repeat(at, depths)
        col = np.arange(wave.keys.shape[0], dtype=np.int64) - np.repeat(wave.starts, depths)
        self.keys[on, col] = wave.keys
        self.lengths[on, col] = wave.lengths
        self.depth[at] = depths
        self.cached[at] = wave.cached
        self.version += len(rows)

    def clear(self, row: int) -> None:
        self._pending.pop(row, None)
        if row < self.depth.shape[0]:
            self.depth[row] = 0
            self.cached[row] = 0
        self.version += 1

    def cached_of(self, rows: np.ndarray) -> np.ndarray:
        """The cached lengths of the batch ``rows`` (0 where a row has no entry)."""
        if rows.shape[0]:
            self._room(int(rows.max()) + 1, 1)
        return self.cached[rows]

    def paths(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``PublishedBatch.paths`` of the batch ``rows`` (rows without an entry: no path)."""
        if rows.shape[0]:
            self._room(int(rows.max()) + 1, 1)
        depth = self.depth[rows]
        if not depth.any():
            return _EMPTY, _EMPTY, _EMPTY
        self.flush()
        got = host_core.glue_call("gather_paths", self.keys, self.lengths, self.depth, rows)
        if got is not NotImplemented:
            return got  # gathered by the extension module (kernels/host_glue.c); below, its numpy reference
        on_path = np.arange(self.keys.shape[1]) < depth[:, None]
        req = np.repeat(np.arange(rows.shape[0], dtype=np.int64), depth)
        paths = (req, self.keys[rows][on_path], self.lengths[rows][on_path])
        for a in paths:
            a.setflags(write=False)
        return paths


def paths_of_entries(entries: Sequence[ChainEntry | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``PublishedBatch.paths`` from the entries themselves (``None``: a request without a path)."""
    present = [(i, e) for i, e in enumerate(entries) if e is not None]
    if not present:
        return _EMPTY, _EMPTY, _EMPTY
    req = np.repeat(np.array([i for i, _ in present], dtype=np.int64), [e.keys.shape[0] for _, e in present])
    paths = (req, np.concatenate([e.keys for _, e in present]), np.concatenate([e.lengths for _, e in present]))
    for a in paths:
        a.setflags(write=False)
    return paths


class _LazyPaths:
    """One published batch's paths, made on first use: gathered from the table's row arrays if no entry was written
    since the batch was published (the backend plans a batch right after it is published), else from the batch's own
    entries. Thread-safe through the table's lock."""

    __slots__ = ("_entries", "_lock", "_rows", "_source", "_value", "_version")

    def __init__(
        self,
        source: _RowPaths,
        rows: np.ndarray,
        entries: tuple,
        lock: threading.Lock,
        value: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self._source: _RowPaths | None = source if value is None else None
        self._version = source.version
        self._rows = rows
        self._entries = entries
        self._lock = lock
        self._value = value  # gathered already (``ChainTable._tally_of`` needed them for a wave)

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    source = self._source
                    if source is not None and source.version == self._version:
                        self._value = source.paths(self._rows)
                    else:
                        self._value = paths_of_entries(self._entries)
                    self._source = None
        return self._value


def tally_refs(
    req: np.ndarray, keys: np.ndarray, tokens: np.ndarray
) -> tuple[dict[tuple[int, int], int], int, dict[tuple[int, int], int]]:
    """A batch's flat paths counted (``_Tally.rebuild``; ``req``, ``keys``, ``tokens``: ``PublishedBatch.paths``, each
    request's nodes root first): {(node id, tokens): paths through it}, in first-seen order, the sum of tokens over its
    keys, and the same count of the paths' first nodes only (those under the root). The reference of
    ``kernels/host_batch.c`` ``pat_tally_refs``."""
    pairs = list(zip(keys.tolist(), tokens.tolist(), strict=True))
    refs = dict(Counter(pairs))
    starts = np.flatnonzero(np.diff(req, prepend=-1) != 0) if req.shape[0] else _EMPTY
    firsts = dict(Counter(pairs[i] for i in starts.tolist()))
    return refs, sum(t for _, t in refs), firsts


def _bump(counts: dict[tuple[int, int], int], key: tuple[int, int], step: int) -> int:
    """``counts[key] += step``, the key dropped at 0 (``kernels/host_batch.c`` ``count_key``); the count before."""
    before = counts.get(key, 0)
    if before + step:
        counts[key] = before + step
    else:
        del counts[key]
    return before


class _Tally:
    """The distinct cached tokens of the last batch given to ``update``, kept in proportion to what changed: per radix
    node (id, tokens) the number of the batch's rows whose entry passes through it (``refs``), and of those whose
    entry starts there (``firsts``: the node under the root). With a ``shape`` (``planner.BoundShape``, set by
    ``ChainTable.count_bound``) it also keeps the dispatch gate's node terms, ``planner.count_bound`` of its counts,
    moved with every count (``blocks``: tokens, ``partials``: bytes; ``planner.moved_bound``)."""

    def __init__(self, shape: BoundShape | None = None) -> None:
        self.by_row: dict[int, ChainEntry | None] = {}
        self.refs: dict[tuple[int, int], int] = {}
        self.firsts: dict[tuple[int, int], int] = {}
        self.total = 0
        self.version = 0  # bumped per move (``PublishedBatch.node_refs`` tells its own counts by it)
        self.shape = shape
        self.blocks = 0
        self.partials = 0

    def set_shape(self, shape: BoundShape | None) -> None:
        """Keep the gate's node terms for ``shape`` from now on (None: none), counted afresh from the counts."""
        self.shape = shape
        self.blocks, self.partials = count_bound(self.refs, self.firsts, shape) if shape is not None else (0, 0)

    def update(self, rows: list[int], entries: tuple) -> int:
        """Move to the batch (``rows``, ``entries``: a ChainEntry or None per row); its distinct cached tokens."""
        self.version += 1
        before = self.by_row
        now = dict(zip(rows, entries, strict=True))
        for row in before.keys() - now.keys():
            self._count(before[row], -1)
        for i in itertools.compress(itertools.count(), map(operator.is_not, map(before.get, rows), entries)):
            self._count(before.get(rows[i]), -1)
            self._count(entries[i], 1)
        self.by_row = now
        return self.total

    def update_changes(self, left: list[int], touched: list[int], entries: dict[int, ChainEntry]) -> int:
        """``update`` told only what changed since the last batch: the rows that ``left`` it, and ``touched`` rows
        (joined, or read again; a row may be both) with their entry now in ``entries`` (none: absent); every other row
        keeps its entry. Cost in proportion to the change. Its distinct cached tokens. One call of the compiled
        publisher piece (``host_core`` ``tally_changes``) where it loads and takes them."""
        core = host_core.loaded_batch()
        if core is not None:
            got = core.tally_changes(self, left, touched, entries)
            if got is not NotImplemented:
                return got
        self.version += 1
        by_row = self.by_row
        for row in left:
            self._count(by_row.pop(row, None), -1)
        for row in touched:
            entry = entries.get(row)
            old = by_row.get(row)
            if old is not entry:
                self._count(old, -1)
                self._count(entry, 1)
            by_row[row] = entry
        return self.total

    def rebuild(self, rows: list[int], entries: tuple, req: np.ndarray, keys: np.ndarray, tokens: np.ndarray) -> int:
        """Move to the batch (distinct ``rows``, ``entries``) by counting it afresh from its flat paths (``req``,
        ``keys``, ``tokens``: ``PublishedBatch.paths``): for a wave, where most rows changed, one C-level count of the
        batch's nodes costs less than a Python pass over the old and new entries' nodes. Its distinct cached tokens."""
        self.version += 1
        self.by_row = dict(zip(rows, entries, strict=True))
        core = host_core.loaded_batch()
        counted = NotImplemented if core is None else core.tally_refs(req, keys, tokens)
        if counted is NotImplemented:
            counted = tally_refs(req, keys, tokens)
        self.refs, self.total, self.firsts = counted
        if self.shape is not None:
            self.blocks, self.partials = count_bound(self.refs, self.firsts, self.shape)
        return self.total

    def _count(self, entry: ChainEntry | None, step: int) -> None:
        if entry is None:
            return
        sig = entry.signature
        shape = self.shape
        if sig:  # the node under the root: the signature's last
            tokens = sig[-1][2]
            before = _bump(self.firsts, (sig[-1][0], tokens), step)
            if shape is not None:
                self.partials += (first_node_partials(before + step, tokens, shape)
                                  - first_node_partials(before, tokens, shape))
        refs = self.refs
        for node_id, _, tokens in sig:
            before = _bump(refs, (node_id, tokens), step)
            n = before + step
            if n == (step > 0):  # 0 -> 1 adds the node's tokens, 1 -> 0 removes them
                self.total += step * tokens
            if shape is not None:
                self.blocks += node_blocks(n, tokens, shape) - node_blocks(before, tokens, shape)


@dataclass
class ChainTable:
    """The chains of the requests of one ``ReqToTokenPool`` (see ``chain_table_for``)."""

    # Publishing costs scheduler time, so it is off until a PAT backend binds the table to its pool (the
    # plugin is loaded into every SGLang process of the environment, PAT in use or not).
    enabled: bool = False
    entries: dict[int, ChainEntry] = field(default_factory=dict)
    published: int = 0  # chains copied (cache misses), for tests and logs
    batch: PublishedBatch | None = None  # the last published decode batch (see PublishedBatch)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    reused: int = 0  # batches whose chains were all unchanged (identity checks only), for tests and logs
    unread: int = 0  # of them, batches republished without reading any request (``republish_same``)
    by_rows: int = 0  # changed batches published reading only the rows that can have changed (``publish_rows``)
    python_reads: int = 0  # of them, read by the Python read where the compiled one declined (rows, shapes)
    full_reads: int = 0  # batches read in full (``publish_batch`` past its unchanged-batch check)
    # Host seconds the last ``publish_decode_batch`` spent on this table and the collections that ran in them, not yet
    # taken by the backend's step record (``take_publish``): publishing runs in ``ForwardBatch.init_new``, before the
    # backend's own step work.
    publish_s: float = 0.0
    publish_gc: GcMark | None = None
    publish_route: str = ""  # how the last publishing read its batch (``ROUTE_*``), taken with its seconds
    _snap: _Snapshot | None = field(default=None, repr=False)
    _read_as: dict[int, tuple] = field(default_factory=dict, repr=False)  # row -> (rid, generation, last_node) read
    # row -> the generation of the request last read in it (-1: none, or read without a generation): what
    # ``publish_rows`` compares with the pool's generations to find the rows to read
    _row_gen: np.ndarray = field(default_factory=lambda: np.full(0, -1, dtype=np.int64), repr=False)
    # row -> the request id last read in it, and row -> its entry (None: none), as lists: a batch's ids and entries are
    # then one ``itemgetter`` call over its rows (``publish_rows``)
    _row_rid: list = field(default_factory=list, repr=False)
    _row_entry: list = field(default_factory=list, repr=False)
    _rows_of_node: dict[int, set[int]] = field(default_factory=dict, repr=False)  # radix node id -> rows through it
    # row -> a stamp, scratch of the compiled ``_pick_batch`` (``host_core.loaded_batch``): each call marks rows with
    # the two stamps after ``_mark_stamp`` and moves it on by 2, so no slot ever holds a stamp still to come
    _row_mark: np.ndarray = field(default_factory=lambda: np.full(0, -1, dtype=np.int64), repr=False)
    _mark_stamp: int = field(default=0, repr=False)
    _row_paths: _RowPaths = field(default_factory=_RowPaths, repr=False)  # each row's entry as arrays
    _tally: _Tally = field(default_factory=_Tally, repr=False)  # distinct cached tokens of the last published batch
    # References to the objects of batches a wave replaced, dropped a few per call (``retire``, ``release``).
    # Only the publishing thread touches it.
    _retired: list = field(default_factory=list, repr=False)


    def retire(self, snap: _Snapshot | None) -> None:
        """Keep the objects of the batch a wave is replacing (its request list's requests, the snapshot's last nodes)
        alive for ``release`` to drop a few at a time. Without this the wave's own call frees them, where
        the snapshot's list is the last reference to the finished requests: what freeing them costs is spread over the
        next calls instead of added to the wave's (the requests live a few steps longer)."""
        if snap is None:
            return
        for held in (snap.reqs, snap.nodes):  # (the entries cost little to free: the backend drops them in its step)
            if held is not None:
                self._retired.extend(held)

    def release(self) -> None:
        """Drop retired references ``_RELEASE`` at a time for about ``_RELEASE_S`` (all beyond ``_RETIRED_CAP`` at
        once, so a run of waves cannot pile them up); called once per publishing, before the batch is read."""
        retired = self._retired
        if not retired:
            return
        if len(retired) > _RETIRED_CAP:
            del retired[_RETIRED_CAP:]
        deadline = time.perf_counter() + _RELEASE_S
        while retired:
            del retired[-_RELEASE:]
            if time.perf_counter() >= deadline:
                break

    def take_publish(self) -> tuple[float, GcMark | None, str]:
        """The host seconds of the last publishing not yet taken, the collections that ran in them and how it read its
        batch ((0.0, None, "") if taken, or if none ran since): each publishing is counted in one step's record."""
        taken = (self.publish_s, self.publish_gc, self.publish_route)
        self.publish_s, self.publish_gc, self.publish_route = 0.0, None, ""
        return taken

    def routes_clause(self) -> str:
        """The stats line's count of the batches published by each route (since the table was made)."""
        return (f"batches published unchanged {self.reused}, by rows {self.by_rows} ({self.python_reads} of them on "
                f"the Python read), read in full {self.full_reads}")

    def publish_batch(
        self,
        idxs: list[int],
        rids: list[Hashable],
        generations: list[int | None],
        last_nodes: list[Any],
        root: Any,
        splits: int | None = None,
        seq_lens: np.ndarray | None = None,
        split_log: Sequence[int | None] | None = None,
        reqs: list | None = None,
        recached: int | None = None,
    ) -> None:
        """``publish`` for every request of one decode batch (one lock round, ancestors' signatures shared), then
        record the batch's rows and entries (``PublishedBatch``). A batch equal to the previous one whose radix
        nodes are all untouched (``_Snapshot``, identity checks in C loops) costs no per-request Python.

        ``seq_lens``: the batch's host sequence lengths, kept with it so the backend can tell that the batch it
        plans is this one. ``splits``: the radix cache's split count (``sglang_patches.publish.radix_splits``), or
        None if unknown; ``split_log``: the ids of the nodes split most recently, the last one being split number
        ``splits`` (``radix_split_log``). Radix nodes change only when split (inserts add nodes, eviction never
        touches locked ones), so a request's chain changed only if its ``last_node`` did or its chain passes
        through a node split since the last batch: only those requests (and new ones) are read, and the rest keep
        their entries (cost in proportion to the change). Without a log that covers the splits since the last
        batch, every chain is read."""
        snap = self._snap
        moved = self._split_since(snap, root, splits, split_log)
        stable = moved is not None
        if (
            snap is not None
            and snap.root is root
            and not moved
            and _unchanged(snap, idxs, rids, generations, last_nodes, stable)
        ):
            with self.lock:
                if self._snap is snap:
                    snap.reqs, snap.recached = reqs, recached
                    self._republish(snap, seq_lens)
                    self.publish_route = ROUTE_UNCHANGED
                    return
        self.full_reads += 1
        self.publish_route = ROUTE_FULL
        idxs = list(map(int, idxs))
        memo: dict[int, Signature | None] = {}
        if stable:
            # C-level maps over the batch; Python only for the requests that changed
            same = map(operator.eq, map(self._read_as.get, idxs), zip(rids, generations, last_nodes, strict=True))
            todo = list(itertools.compress(itertools.count(), map(operator.not_, same)))
            if moved:  # and the requests whose chains pass through a split node
                rows_of_node = self._rows_of_node
                hit = set().union(*(rows_of_node.get(node_id, ()) for node_id in moved))
                if hit:
                    todo = sorted(set(todo).union(i for i, idx in enumerate(idxs) if idx in hit))
                    with self.lock:  # rows outside this batch: their entries are stale, read them when they return
                        for idx in hit.difference(idxs):
                            self._pop_entry(idx)
        else:
            todo = range(len(idxs))
        read = [(idxs[i], rids[i], generations[i], last_nodes[i]) for i in todo]
        with self.lock:
            changed = self._read_rows(read, root, memo)
        fresh = new_entries(changed)  # outside the lock: the backend may be reading the table
        with self.lock:
            self._set_entries(fresh)
            self.published += len(changed)
            batch_entries = tuple(map(self.entries.get, idxs))
            if (
                snap is not None
                and self._snap is snap
                and snap.root is root
                and idxs == snap.idxs
                and rids == snap.rids
                and generations == snap.gens
                and all(map(operator.is_, batch_entries, snap.batch.entries or ()))
            ):
                # the same requests with the same entries (splits elsewhere in the tree): the same batch
                self._snap = _snapshot(root, idxs, rids, generations, last_nodes, snap.batch, splits, reqs, recached)
                self._republish(self._snap, seq_lens)
                return
            if is_wave(len(changed), len(idxs)):
                self.retire(snap)
            serial = self.batch.serial + 1 if self.batch is not None else 0
            absent = _absent(batch_entries)
            gens = np.array(generations, dtype=np.int64) if generations and None not in generations else None
            rows = np.array(idxs, dtype=np.int64)
            cached = self._row_paths.cached_of(rows)
            for a in (rows, cached, gens):
                if a is not None:
                    a.setflags(write=False)
            distinct, paths = self._tally_of(rows, idxs, batch_entries, len(changed), None)
            self.batch = PublishedBatch(rows, tuple(rids), serial, batch_entries, cached, gens, absent, seq_lens,
                                        distinct, paths, self._tally, self._tally.version)
            self._snap = _snapshot(root, idxs, rids, generations, last_nodes, self.batch, splits, reqs, recached)

    def publish_rows(
        self,
        reqs: list,
        rows: np.ndarray,
        gens: np.ndarray,
        root: Any,
        splits: int | None,
        seq_lens: np.ndarray | None,
        split_log: Sequence[int | None] | None,
        recached: int | None,
        recache_log: Sequence[int | None] | None,
    ) -> bool:
        """``publish_batch`` for a changed batch, reading only the requests that can have changed; False (nothing
        done) where that cannot be told, and ``publish_batch`` reads the batch.

        ``rows``/``gens``: the batch's host ``req_pool_indices_cpu`` and those rows' ``ReqToTokenPool.req_generation``
        (int64 arrays, in ``reqs`` order). A request can have another chain than when its row was last read only if
        the row has a new occupant (its generation moved: SGLang bumps it whenever it hands a row out), if the cache
        re-cached it (``recache_log``: the rows ``cache_unfinished_req`` was called for, the last one being call number
        ``recached``), or if its chain passes through a node split since (``split_log``, as in ``publish_batch``). So
        those rows are read and the others keep their entries; the batch's arrays are made from ``rows`` and
        ``gens`` with no pass over the request objects but the request ids.

        With no batch of this radix tree published yet (the first one, or a new root: ``flush_cache`` replaces it and
        zeroes the pool's generations) every row of the batch is read the same way, as re-cached ones are."""
        snap = self._snap
        if recached is None or recache_log is None or rows.shape[0] != len(reqs) or rows.shape[0] == 0:
            return False
        fresh = snap is None or snap.root is not root
        if fresh:
            moved: tuple = ()
            recached_rows = rows.tolist()
        else:
            moved = self._split_since(snap, root, splits, split_log)
            if snap.recached is None or moved is None or not 0 <= recached - snap.recached <= len(recache_log):
                return False
            recached_rows = newest(recache_log, recached - snap.recached)
            if None in recached_rows:
                return False
        with self.lock:
            if self._snap is not snap:
                return False
            if fresh:  # (the compiled read takes rows within the per-row arrays only; later steps' rows grow them
                self._row_room(int(rows.max()) + 1)  # rarely: a bound table has room for its pool, reserve_rows)
            core = host_core.loaded_batch()
            done = NotImplemented if core is None else core.publish_read(
                self, reqs, rows, gens, root, moved, recached_rows, ChainEntry, _COMPILED_READ_ROWS)
            self.publish_route = ROUTE_ROWS
            if done is NotImplemented:
                if core is not None:
                    self.python_reads += 1
                    self.publish_route = ROUTE_ROWS_PYTHON
                done = self._publish_read(reqs, rows, gens, root, moved, recached_rows)
            if done is False:  # rows and requests out of step: read everything
                return False
            changed, read_rows = done
            self.published += changed
            self.by_rows += 1
            last = None if fresh else snap.batch
            before = self._tally.by_row
            wave = is_wave(changed, rows.shape[0])
            # the tally holds the last batch's rows (a wave is counted afresh): it can move by the change
            moving = last is not None and not wave and len(before) == last.rows.shape[0]
            # the batch's own arrays (rows C-contiguous, as the compiled pick needs; cached lengths as the entries
            # written above left them: ``_row_room`` made room for the rows)
            rows, gens, cached = _batch_arrays(rows, gens, self._row_paths.cached)
            batch_entries, rids, absent, joined, left = self._pick(rows, last.rows if moving else None)
            if (
                changed == 0
                and last is not None
                and last.entries is not None
                and last.gens is not None
                and same_ints(rows, last.rows)
                and same_ints(gens, last.gens)
                and all(map(operator.is_, batch_entries, last.entries))
            ):
                # the same requests with the same entries (a new list, a re-caching that moved nothing): the same batch
                self._snap = _rows_snapshot(root, last, splits, reqs, recached)
                self._republish(self._snap, seq_lens)
                return True
            serial = self.batch.serial + 1 if self.batch is not None else 0
            moves = None
            if wave:
                self.retire(snap)
            elif moving:
                moves = (list(left), [*joined, *read_rows])
            distinct, paths = self._tally_of(rows, None, batch_entries, changed, moves)
            self.batch = PublishedBatch(rows, rids, serial, batch_entries, cached, gens, absent,
                                        seq_lens, distinct, paths, self._tally, self._tally.version)
            self._snap = _rows_snapshot(root, self.batch, splits, reqs, recached)
        return True

    def _publish_read(
        self, reqs: list, rows: np.ndarray, gens: np.ndarray, root: Any, moved: tuple, recached_rows: list,
    ) -> tuple[int, list[int]] | bool:
        """``publish_rows``' reading of a changed batch (under the lock): the rows that can have changed (a new
        generation, re-cached, or through a node split since: ``moved``) are read and get new entries where their
        chains changed. (entries made, the rows read in batch order), or False (rows marked, nothing read) where a
        request's ``req_pool_idx`` is not its row. The reference of ``kernels/host_batch.c`` ``pat_publish_read``,
        which does the same in one call where it takes the batch."""
        self._row_room(int(rows.max()) + 1)
        hit: set[int] = set()
        if moved:
            rows_of_node = self._rows_of_node
            hit = set().union(*(rows_of_node.get(node_id, ()) for node_id in moved))
        # rows to read whatever their generation: marked as read for no generation (read again later if not in this
        # batch: never wrong, at most one extra read)
        self._mark_unread(hit.union(recached_rows))
        read = _requests_at(reqs, *_rows_to_read(rows, gens, self._row_gen))
        if read is None:
            return False
        if hit:
            for idx in hit.difference(rows.tolist()):  # rows outside this batch: stale, read when they return
                self._pop_entry(idx)
        memo: dict[int, Signature | None] = {}
        changed = self._read_rows(read, root, memo)
        self._set_entries(new_entries(changed))
        return len(changed), [t[0] for t in read]

    def _pick(
        self, rows: np.ndarray, before: np.ndarray | None
    ) -> tuple[tuple, tuple, int, Iterable[int], Iterable[int]]:
        """``_pick_batch`` of the batch ``rows`` (C-contiguous int64, room made for them) against the last batch's
        rows ``before`` (the tally's, distinct), over the table's per-row lists, compiled where it can be (under the
        lock)."""
        core = host_core.loaded_batch()
        if core is None:
            return _pick_batch(rows, self._row_entry, self._row_rid, before)
        self._mark_stamp += 2
        return core.pick_batch(rows, self._row_entry, self._row_rid, before, self._row_mark, self._mark_stamp)

    def _tally_of(
        self, rows: np.ndarray, rows_list: list[int] | None, entries: tuple, changed: int,
        moves: tuple[list[int], list[int]] | None,
    ) -> tuple[int, _LazyPaths]:
        """The batch's distinct cached tokens (moving ``_tally`` to it) and its lazy paths (under the lock, after its
        entries were written). ``rows_list``: ``rows.tolist()``, or None to make it where it is needed. ``changed``:
        how many of its rows got a new entry; ``moves``: (rows that left, rows touched: joined or read again) when the
        tally can move by the change alone. A wave (``is_wave``) is counted afresh from the batch's paths, which its
        ``_LazyPaths`` then keeps."""
        tally = self._tally
        if moves is not None and not is_wave(changed, rows.shape[0]):
            return tally.update_changes(*moves, self.entries), _LazyPaths(self._row_paths, rows, entries, self.lock)
        if rows_list is None:
            rows_list = rows.tolist()
        if is_wave(changed, len(rows_list)) and len(set(rows_list)) == len(rows_list):
            value = self._row_paths.paths(rows)
            return tally.rebuild(rows_list, entries, value[0], value[1], value[2]), _LazyPaths(
                self._row_paths, rows, entries, self.lock, value
            )
        if moves is not None:
            distinct = tally.update_changes(*moves, self.entries)
        else:
            distinct = tally.update(rows_list, entries)
        return distinct, _LazyPaths(self._row_paths, rows, entries, self.lock)

    def _split_since(
        self, snap: _Snapshot | None, root: Any, splits: int | None, split_log: Sequence[int | None] | None
    ) -> tuple | None:
        """Ids of the radix nodes split since ``snap`` (empty: none), or None if not known."""
        if splits is None or snap is None or snap.root is not root or snap.splits is None:
            return None
        gap = splits - snap.splits
        if gap == 0:
            return ()
        if split_log is None or not 0 < gap <= len(split_log):
            return None
        moved = tuple(newest(split_log, gap))
        return None if None in moved else moved

    def republish_same(
        self,
        reqs: list,
        root: Any,
        splits: int | None,
        recached: int | None,
        rows: np.ndarray,
        generations: np.ndarray | None,
        seq_lens: np.ndarray | None,
    ) -> bool:
        """Publish the last batch again, with new lengths, if nothing it was read from can have changed; False
        (nothing done) otherwise, and ``publish_batch`` reads the batch. The common decode step, in O(1) Python and
        three array ops: no request object is read.

        What must hold, each checked: ``reqs`` is the very list object the last batch was read from (SGLang 0.5.17
        rebinds ``ScheduleBatch.reqs`` to a new list whenever requests join or leave: ``filter_batch``,
        ``merge_batch``, a new batch object; never edits it in place); ``rows`` (the batch's host
        ``req_pool_indices_cpu``, the mirror of the rows the forward reads) equal the published rows; the rows'
        ``generations`` (``ReqToTokenPool.req_generation``, bumped whenever a row is handed to another request)
        equal the published ones; the radix cache split no node (``splits``) and re-cached no unfinished request
        (``recached``: the one call that moves a running request's ``last_node``) since. Without either count
        (another cache class) there is no shortcut."""
        snap = self._snap
        if (
            snap is None
            or snap.reqs is not reqs
            or snap.root is not root
            or splits is None
            or snap.splits != splits
            or recached is None
            or snap.recached != recached
        ):
            return False
        published = snap.batch
        if not same_ints(rows, published.rows):
            return False
        if generations is not None:
            if published.gens is None or not same_ints(generations[published.rows], published.gens):
                return False
        elif published.gens is not None:
            return False
        with self.lock:
            if self._snap is not snap:
                return False
            self._republish(snap, seq_lens)
            self.unread += 1
            self.publish_route = ROUTE_UNCHANGED
        return True

    def _republish(self, snap: _Snapshot, seq_lens: np.ndarray | None) -> None:
        """The snapshot's batch again (same entries tuple: the backend reuses its forest), with new lengths (a
        ``copy_with``, not ``dataclasses.replace``: its ``__init__`` costs ~10 us, every unchanged step)."""
        new = copy_with(snap.batch, serial=snap.batch.serial + 1, seq_lens=seq_lens)
        snap.batch = new
        self.batch = new
        self.reused += 1

    def count_bound(self, shape: BoundShape | None) -> None:
        """Keep the dispatch gate's node terms for ``shape`` (``planner.bound_shape`` of the backend's heads) with the
        node counts from now on (``PublishedBatch.bound_terms``); None: none. A PAT backend sets it when it binds."""
        with self.lock:
            if shape != self._tally.shape:
                self._tally.set_shape(shape)

    def reserve_rows(self, rows: int) -> None:
        """Room for rows ``0..rows-1`` now (a pool's whole ``req_to_token``): the compiled changed-batch read declines
        rows beyond the per-row arrays (its Python version grows them), so a server's table is sized for its pool
        once, when a backend binds it, instead of growing in the steps that first reach new rows."""
        with self.lock:
            self._row_room(rows)

    def _row_room(self, rows: int) -> None:
        """The per-row arrays and lists hold rows ``0..rows-1`` (under the lock)."""
        have = self._row_gen.shape[0]
        if rows <= have:
            return
        size = max(rows, 2 * have, 64)
        grown = np.full(size, -1, dtype=np.int64)
        grown[:have] = self._row_gen
        self._row_gen = grown
        mark = np.full(size, -1, dtype=np.int64)
        mark[: self._row_mark.shape[0]] = self._row_mark
        self._row_mark = mark
        self._row_rid.extend([None] * (size - len(self._row_rid)))
        self._row_entry.extend([None] * (size - len(self._row_entry)))
        self._row_paths.room(size)

    def _mark_unread(self, rows: set[int]) -> None:
        """Mark ``rows`` as read for no generation (-2), so that ``publish_rows`` reads them again (under the lock)."""
        gen = self._row_gen
        n = gen.shape[0]
        if len(rows) > _FEW:
            marked = np.fromiter(rows, dtype=np.int64, count=len(rows))
            gen[marked[(marked >= 0) & (marked < n)]] = -2
            return
        for row in rows:  # the common case, a few joiners: no array made
            if 0 <= row < n:
                gen[row] = -2

    def _reread(
        self, idx: int, rid: Hashable, gen: int | None, node: Any, root: Any, memo: dict[int, Signature | None]
    ) -> Signature | None:
        """Read row ``idx``'s chain (under the lock): the read is noted, an unreadable chain drops the row's entry;
        the chain's signature where the row needs a new entry, else None."""
        sig = chain_signature(node, root, memo) if root is not None else None
        old = self.entries.get(idx)
        self._note_read(idx, rid, gen, node)
        if sig is None:
            self._pop_entry(idx)
            return None
        if old is None or old.rid != rid or old.generation != gen or old.signature != sig:
            return sig
        return None

    def _read_rows(self, read: list[tuple[int, Hashable, int | None, Any]], root: Any,
                   memo: dict[int, Signature | None]) -> list[tuple[int, Hashable, int | None, Signature]]:
        """``_reread`` of each (row, rid, generation, last node) of ``read``, in order (under the lock): the rows that
        need a new entry, with their signatures. A wave of distinct rows is read at once (``_read_wave``)."""
        if len(read) > _WAVE and _distinct(read):
            return self._read_wave(read, root, memo)
        changed = []
        for idx, rid, gen, node in read:
            sig = self._reread(idx, rid, gen, node, root, memo)
            if sig is not None:
                changed.append((idx, rid, gen, sig))
        return changed

    def _read_wave(self, read: list[tuple[int, Hashable, int | None, Any]], root: Any,
                   memo: dict[int, Signature | None]) -> list[tuple[int, Hashable, int | None, Signature]]:
        """``_read_rows`` of distinct rows: the same state as their ``_reread`` in turn, with the reads noted in C
        loops and one array write (the rows' reads do not touch each other's rows). Under the lock."""
        idxs = [r[0] for r in read]
        sigs = wave_signatures([r[3] for r in read], root, memo) if root is not None else [None] * len(read)
        olds = list(map(self.entries.get, idxs))
        self._read_as.update(zip(idxs, (r[1:] for r in read), strict=True))  # (rid, generation, last node) each
        self._row_room_each(idxs)
        self._row_gen[idxs] = [-1 if r[2] is None else r[2] for r in read]
        row_rid = self._row_rid
        for idx, r in zip(idxs, read, strict=True):
            row_rid[idx] = r[1]
        changed = []
        for (idx, rid, gen, _), sig, old in zip(read, sigs, olds, strict=True):
            if sig is None:
                self._pop_entry(idx)
            elif old is None or old.rid != rid or old.generation != gen or old.signature != sig:
                changed.append((idx, rid, gen, sig))
        return changed

    def _row_room_each(self, idxs: list[int]) -> None:
        """``_row_room(idx + 1)`` for each of ``idxs`` in turn (the arrays grow as the rows' own calls would grow
        them), in one check when they all fit already."""
        if idxs and max(idxs) >= self._row_gen.shape[0]:
            for idx in idxs:
                self._row_room(idx + 1)

    def _set_entries(self, made: Wave | list[tuple[int, ChainEntry]]) -> None:
        """``_set_entry`` of each (row, entry) of ``new_entries``' output, in order (under the lock); a wave's row
        paths in one write."""
        if not isinstance(made, Wave):
            for idx, entry in made:
                self._set_entry(idx, entry)
            return
        self._row_room_each(made.rows)
        core = host_core.loaded_batch()
        if core is None or core.set_wave(self.entries, self._row_entry, self._rows_of_node, made.rows,
                                         made.entries) is NotImplemented:
            self._set_wave(made)
        self._row_paths.set_many(made)

    def _set_wave(self, made: Wave) -> None:
        """``_set_entries``' loop over a wave in Python (the reference of ``kernels/host_batch.c`` ``pat_set_wave``)."""
        entries, row_entry, unindex, index = self.entries, self._row_entry, self._unindex, self._index
        for idx, entry in zip(made.rows, made.entries, strict=True):
            old = entries.get(idx)
            if old is not None:
                unindex(idx, old)
            entries[idx] = entry
            row_entry[idx] = entry
            index(idx, entry)

    def _note_read(self, idx: int, rid: Hashable, gen: int | None, node: Any) -> None:
        """Row ``idx`` was read as (rid, generation, last node) (under the lock)."""
        self._read_as[idx] = (rid, gen, node)
        self._row_room(idx + 1)
        self._row_gen[idx] = -1 if gen is None else gen
        self._row_rid[idx] = rid

    def _set_entry(self, idx: int, entry: ChainEntry) -> None:
        """Record ``entry`` for row ``idx``, keeping the node -> rows index (under the lock)."""
        old = self.entries.get(idx)
        if old is not None:
            self._unindex(idx, old)
        self.entries[idx] = entry
        self._row_room(idx + 1)
        self._row_entry[idx] = entry
        self._row_paths.set(idx, entry)
        self._index(idx, entry)

    def _index(self, idx: int, entry: ChainEntry) -> None:
        """Add row ``idx`` to the node -> rows index under every node of ``entry``'s chain (under the lock)."""
        rows_of_node = self._rows_of_node
        for node_id, _, _ in entry.signature:
            rows = rows_of_node.get(node_id)
            if rows is None:
                rows_of_node[node_id] = {idx}
            else:
                rows.add(idx)

    def _pop_entry(self, idx: int) -> None:
        """Forget row ``idx``'s entry (under the lock)."""
        old = self.entries.pop(idx, None)
        if idx < len(self._row_entry):
            self._row_entry[idx] = None
        self._read_as.pop(idx, None)
        if idx < self._row_gen.shape[0]:
            self._row_gen[idx] = -1
        if old is None:
            return
        self._row_paths.clear(idx)
        self._unindex(idx, old)

    def _unindex(self, idx: int, old: ChainEntry) -> None:
        """Take row ``idx`` out of the node -> rows index of its old entry's nodes (under the lock)."""
        rows_of_node = self._rows_of_node
        for node_id, _, _ in old.signature:
            rows = rows_of_node.get(node_id)
            if rows is not None:
                rows.discard(idx)
                if not rows:
                    del rows_of_node[node_id]

    def publish(self, req_pool_idx: int, rid: Hashable, generation: int | None, last_node: Any, root: Any) -> None:
        """Record the request's chain; drop the entry if it cannot be read (the backend then falls back)."""
        sig = chain_signature(last_node, root) if root is not None else None
        with self.lock:
            self._snap = None
            old = self.entries.get(req_pool_idx)
            if sig is None:
                self._pop_entry(req_pool_idx)
                return
            if old is not None and old.rid == rid and old.generation == generation and old.signature == sig:
                return  # unchanged since the last step: no device copies
        with self.lock:
            self._set_entry(req_pool_idx, ChainEntry(rid, generation, sig))
            self._note_read(req_pool_idx, rid, generation, last_node)
            self.published += 1

    def drop(self, req_pool_idx: int) -> None:
        with self.lock:
            self._snap = None
            self._pop_entry(req_pool_idx)

    def clear(self) -> None:
        with self.lock:
            self._snap = None
            self.entries.clear()
            self._read_as.clear()
            self._row_gen = np.full(0, -1, dtype=np.int64)
            self._row_mark = np.full(0, -1, dtype=np.int64)
            self._row_rid = []
            self._row_entry = []
            self._rows_of_node.clear()
            self._row_paths = _RowPaths()
            self._tally = _Tally(self._tally.shape)
            self._retired = []
            self.published = 0
            self.batch = None


def _pick_batch(
    rows: np.ndarray, row_entry: list, row_rid: list, before: np.ndarray | None
) -> tuple[tuple, tuple, int, Iterable[int], Iterable[int]]:
    """(entries, request ids, absent, joined, left) of the batch ``rows`` (int64, each a row of the per-row lists):
    its rows' entries and request ids as tuples in batch order, how many of the entries are None, and, against the
    last batch's rows ``before`` (int64, distinct), the rows that joined and those that left (empty where ``before``
    is None). The contract of ``kernels/host_batch.c`` ``pat_pick_batch`` (which gives joined and left as lists, in
    another order), its fallback and reference."""
    rows_list = rows.tolist()
    if len(rows_list) > 1:  # one itemgetter over the rows gives both tuples (of one row: the item itself)
        pick = operator.itemgetter(*rows_list)
        entries, rids = pick(row_entry), pick(row_rid)
    else:
        entries, rids = (row_entry[rows_list[0]],), (row_rid[rows_list[0]],)
    if before is None:
        return entries, rids, _absent(entries), (), ()
    now, then = set(rows_list), set(before.tolist())
    return entries, rids, _absent(entries), now.difference(then), then.difference(now)


def _distinct(read: Sequence[tuple]) -> bool:
    """Whether the rows (first items) of ``read`` are distinct (a wave's batched writes assume it)."""
    return len({r[0] for r in read}) == len(read)


def new_entries(
    changed: list[tuple[int, Hashable, int | None, Signature]],
) -> Wave | list[tuple[int, ChainEntry]]:
    """The entries of ``changed`` (row, rid, generation, signature), for ``ChainTable._set_entries``: a ``Wave`` of
    distinct rows made at once, or (a few rows) one ``ChainEntry`` each."""
    if len(changed) > _WAVE and _distinct(changed):
        return make_entries(changed)
    return [(idx, ChainEntry(rid, gen, sig)) for idx, rid, gen, sig in changed]


def _requests_at(
    reqs: list, positions: list[int], at: list[int], gens: list[int]
) -> list[tuple[int, Hashable, int, Any]] | None:
    """(row, rid, generation, last node) of the requests at ``positions`` of the batch (``at``/``gens``: their rows
    and generations, ``_rows_to_read``), picked with C loops; None if a request's ``req_pool_idx`` is not its row."""
    if not positions:
        return []
    picked = [reqs[i] for i in positions]
    if list(map(_POOL_IDX, picked)) != at:
        return None
    return list(zip(at, map(_RID, picked), gens, map(_LAST_NODE, picked), strict=True))


# A changed batch's passes over its rows, each a few numpy calls of 2-8 us on the 2-core VM when they run cold between
# two decode steps, where the work itself is a loop over 256 integers: one call each of the host core's extension module
# (``host_core.loaded_glue``, ``kernels/host_glue.c``) where it loads; these numpy versions are the fallback (also for
# arrays it does not take: NotImplemented) and its reference in tests/test_host_core.py.


def gens_at(rows: np.ndarray, table: np.ndarray) -> np.ndarray | None:
    """``table[rows]`` (the pool's generations of a decode batch's rows, read-only), or None where a row is negative
    (a row the pool did not hand out: the batch is not read by rows) or there are no rows."""
    got = host_core.glue_call("gens_at", rows, table)
    if got is not NotImplemented:
        return got
    if rows.shape[0] == 0 or int(rows.min()) < 0:
        return None
    gens = table[rows]
    gens.setflags(write=False)
    return gens


def _rows_to_read(rows: np.ndarray, gens: np.ndarray, row_gen: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """The positions in the batch whose row was last read for another generation (``row_gen[rows] != gens``), with
    their rows and generations, as lists (every row within ``row_gen``)."""
    got = host_core.glue_call("rows_to_read", rows, gens, row_gen)
    if got is not NotImplemented:
        return got
    todo = (row_gen[rows] != gens).nonzero()[0]
    return todo.tolist(), rows[todo].tolist(), gens[todo].tolist()


def _batch_arrays(rows: np.ndarray, gens: np.ndarray, cached: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A published batch's own arrays: copies of ``rows`` and ``gens`` and the rows' cached lengths ``cached[rows]``,
    C-contiguous int64 and read-only (every row within ``cached``)."""
    got = host_core.glue_call("batch_arrays", rows, gens, cached)
    if got is not NotImplemented:
        return got
    out = (np.array(rows, dtype=np.int64), np.array(gens, dtype=np.int64), cached[rows])
    for a in out:
        a.setflags(write=False)
    return out


_POOL_IDX = operator.attrgetter("req_pool_idx")
_RID = operator.attrgetter("rid")
_LAST_NODE = operator.attrgetter("last_node")


def _unchanged(snap: _Snapshot, idxs: list, rids: list, gens: list, nodes: list, stable: bool) -> bool:
    """True if the batch (idxs, rids, gens, last nodes) is the snapshot's and no radix node on its chains changed
    (``stable``: the cache split no node since the snapshot, so the last nodes' identity is enough)."""
    if snap.idxs is None:  # taken by ``publish_rows``: no per-request lists to compare with
        return False
    if idxs != snap.idxs or rids != snap.rids or gens != snap.gens or not all(map(operator.is_, nodes, snap.nodes)):
        return False
    if stable:
        return True
    if snap.splits is not None:  # taken with a split count (no ancestors recorded), which has moved since
        return False
    try:
        values, parents = list(map(_VALUE, nodes)), list(map(_PARENT, nodes))
    except AttributeError:
        return False
    if not all(map(operator.is_, values, snap.values)) or not all(map(operator.is_, parents, snap.parents)):
        return False
    return all(getattr(n, "value", None) is v and getattr(n, "parent", None) is p for n, v, p in snap.anc)


def _snapshot(
    root: Any,
    idxs: list,
    rids: list,
    gens: list,
    nodes: list,
    batch: PublishedBatch,
    splits: int | None = None,
    reqs: list | None = None,
    recached: int | None = None,
) -> _Snapshot | None:
    """The snapshot of a batch just published (None if its nodes are not radix nodes with value and parent). With a
    split count the ancestors need no record (nothing changes them until the count moves)."""
    if splits is not None:  # nodes change only by splits, which the count and log track: no values or parents kept
        return _Snapshot(
            root, list(idxs), list(rids), list(gens), list(nodes), [], [], [], batch, splits, reqs, recached
        )
    try:
        values, parents = list(map(_VALUE, nodes)), list(map(_PARENT, nodes))
    except AttributeError:
        return None
    anc: list[tuple[Any, Any, Any]] = []
    seen: set[int] = set()
    for node in parents:
        while node is not None and node is not root and id(node) not in seen:
            seen.add(id(node))
            parent = getattr(node, "parent", None)
            anc.append((node, getattr(node, "value", None), parent))
            node = parent
    return _Snapshot(root, list(idxs), list(rids), list(gens), list(nodes), values, parents, anc, batch, None)


def _rows_snapshot(root: Any, batch: PublishedBatch, splits: int | None, reqs: list, recached: int) -> _Snapshot:
    """The snapshot ``publish_rows`` leaves: no per-request lists, so a ``publish_batch`` after it reads its batch in
    full (``_unchanged``); ``republish_same`` and ``publish_rows`` need only the counts, the list and the batch."""
    return _Snapshot(root, None, None, None, None, [], [], [], batch, splits, reqs, recached)


CHAIN_TABLE = ChainTable()
"""The table of batches whose pool no PAT backend has bound (off unless enabled by hand, e.g. in tests)."""

# id(pool) -> (reference to the pool, its table). Weak where the pool allows it, so a pool's table goes
# with the pool and a new pool at a recycled address is never handed a dead pool's table.
_POOL_TABLES: dict[int, tuple[Any, ChainTable]] = {}
_POOL_LOCK = threading.Lock()


def _ref(pool: Any) -> Any:
    try:
        return weakref.ref(pool)
    except TypeError:  # not weak-referenceable: keep it alive (pools live as long as their scheduler anyway)
        return lambda: pool


def chain_table_for(pool: Any, table: ChainTable | None = None) -> ChainTable | None:
    """The chain table of the ``ReqToTokenPool`` ``pool``, or ``None`` if none is bound.

    With ``table`` given, bind it to ``pool`` (replacing any earlier binding) and return it; the PAT
    backend does this for its model runner's pool, with a fresh table unless one was passed in.
    """
    if pool is None:
        return table
    key = id(pool)
    if table is None:  # the per-batch lookup: a dict read (atomic) and the binding's own check, no lock
        found = _POOL_TABLES.get(key)
        if found is None:
            return None
        if found[0]() is pool:
            return found[1]
    with _POOL_LOCK:
        found = _POOL_TABLES.get(key)
        if found is not None and found[0]() is not pool:
            del _POOL_TABLES[key]  # a dead pool's address, reused
            found = None
        if table is None:
            return found[1] if found is not None else None
        for k in [k for k, (ref, _) in _POOL_TABLES.items() if ref() is None]:
            del _POOL_TABLES[k]
        _POOL_TABLES[key] = (_ref(pool), table)
        return table
