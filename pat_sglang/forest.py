"""The prefix forest: which KV token ranges the decode requests of one step share.

Role in pack-forward-merge: the input of the *pack* stage. Every request's KV is a row of slot indices
in a *slot table* (SGLang's ``req_to_token[req_pool_idx]``, or the caller's
``kv_indices[kv_indptr[b]:kv_indptr[b + 1]]``). A node is a token range ``[start, start + tok)`` that all
its requests hold with the same slots at the same positions of their rows; a request's KV is the union of
the ranges on its root-to-leaf path (consecutive, from position 0). Nodes never carry slots: the planner
addresses KV as ranges of one member's row (``kv_begin``, positions in the slot table) and the forward
kernel reads the slot indices there, on the device. Host work is per node and request, never per token.

Three ways in:
* ``PrefixForest.from_paths(...)``: the serving path. Per request, the radix nodes of its cached prefix as
  (node key, tokens) from the root down; nodes with the same key are one node. Beyond its cached prefix a
  request owns a private leaf up to its sequence length. No slot is read.
* ``PrefixForest.from_flat(kv_indptr, kv_indices)``: the FlashInfer/SGLang flat convention. Sharing is found
  from identical leading slots (requests that share a cached prefix hold the same physical slots at the
  front of their rows); the forest keeps the host copy of the table for queries.
* ``PrefixForest.from_chains(chains, tails)``: per request, (node id, slots) runs plus a private tail (tests,
  the trace replay); the slots are laid out into a table and the runs checked against each other.

All produce the canonical form: a node never has exactly one child with the same requests (such chains
are fused: their ranges are contiguous in every member's row), and no node is empty. ``canonical_key()``
is equal for two forests that describe the same sharing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from . import host_core

_INT32_MAX = int(np.iinfo(np.int32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)
_PER_NODE = frozenset(("q", "rep", "req32", "shared"))  # PrefixForest._get's first group of derived arrays
_KEY_BITS = 48  # from_paths sorts entries by (depth, key) as one int64 when keys are below 2**48
# from_paths(index=True)'s structure value: (radix keys of the shared nodes, the kept node of each, each kept node's
# deepest radix key and its depth on the paths (kept nodes are in (depth, key) order), each request's first private
# radix key or -1)
RADIX_INDEX = "radix_index"


@dataclass(frozen=True)
class ForestNode:
    """A read-only view of one node (printing, tests); the forest itself is its arrays."""

    start: int  # position of the node's first token in each member's row
    num_tokens: int
    requests: list[int]
    parent: int
    children: list[int]
    depth: int
    slots: np.ndarray | None  # the node's slot indices when the forest holds a host slot table


class PrefixForest:
    """Nodes as flat int64 arrays in topological order (a parent precedes its children).

    ``tok``, ``start``, ``parent``, ``depth``: per node. ``req_ptr``/``req_flat``: each node's requests, sorted.
    ``row_base``: per request, the position of its row's first entry in the slot table. ``request_lengths``: KV
    tokens per request. ``slot_table``: the host copy of the table, when the forest was built from slots.
    ``slot_max``: the largest slot the rows hold (what a plan can read) when the constructor found it (``from_flat``:
    its input check), else ``None``. Immutable: a step with grown sequences makes a new forest (``with_lengths``) that
    shares the structure."""

    __slots__ = (
        "tok", "start", "parent", "depth", "req_ptr", "req_flat", "row_base", "request_lengths", "slot_table",
        "_derived", "slot_max",
    )

    def __init__(
        self,
        tok: np.ndarray,
        start: np.ndarray,
        parent: np.ndarray,
        depth: np.ndarray,
        req_ptr: np.ndarray,
        req_flat: np.ndarray,
        row_base: np.ndarray,
        request_lengths: np.ndarray,
        slot_table: np.ndarray | None = None,
        _derived: dict | None = None,
        slot_max: int | None = None,
    ) -> None:
        self.tok = tok
        self.start = start
        self.parent = parent
        self.depth = depth
        self.req_ptr = req_ptr
        self.req_flat = req_flat
        self.row_base = row_base
        self.request_lengths = request_lengths
        self.slot_table = slot_table
        self._derived = {} if _derived is None else _derived  # structure-only values, shared by with_lengths
        self.slot_max = slot_max if slot_table is not None else None

    # ------------------------------------------------------------------ sizes and derived arrays
    @property
    def num_requests(self) -> int:
        return int(self.row_base.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.tok.shape[0])

    def _get(self, name: str):
        d = self._derived
        if name not in d:
            if name in _PER_NODE:
                q = self.req_ptr[1:] - self.req_ptr[:-1]
                d.update(q=q, rep=self.req_flat[self.req_ptr[:-1]], req32=self.req_flat.astype(np.int32), shared=q > 1)
            else:  # where requests end: the planner needs these only when it inlines a node
                entry_node = np.repeat(np.arange(self.num_nodes), self.q)
                last = np.full(self.num_requests, -1, dtype=np.int64)
                np.maximum.at(last, self.req_flat, entry_node)  # topological: the deepest node has the largest index
                ends_here = last[self.req_flat] == entry_node
                d.update(
                    entry_node=entry_node,
                    ends_here=ends_here,
                    ending=np.bincount(entry_node[ends_here], minlength=self.num_nodes),
                    last_node=last,
                )
        return d[name]

    @property
    def q(self) -> np.ndarray:
        """Requests per node."""
        return self._get("q")

    @property
    def rep(self) -> np.ndarray:
        """A member request of each node (its smallest), whose row the planner reads the node through."""
        return self._get("rep")

    @property
    def entry_node(self) -> np.ndarray:
        return self._get("entry_node")

    @property
    def ends_here(self) -> np.ndarray:
        """Per ``req_flat`` entry: the entry's node is the request's last (deepest) node."""
        return self._get("ends_here")

    @property
    def ending(self) -> np.ndarray:
        """Per node: the requests whose last node it is."""
        return self._get("ending")

    @property
    def last_node(self) -> np.ndarray:
        """Per request: its deepest node."""
        return self._get("last_node")

    @property
    def req32(self) -> np.ndarray:
        return self._get("req32")

    @property
    def shared(self) -> np.ndarray:
        return self._get("shared")

    def kv_begin(self) -> np.ndarray:
        """Per node: the slot-table position of its first token, read through its ``rep`` row."""
        return self.row_base[self.rep] + self.start

    # ------------------------------------------------------------------ queries (tests, printing, statistics)
    def unique_tokens(self) -> int:
        return int(self.tok.sum())

    def shared_tokens(self) -> int:
        """Tokens in nodes with more than one request."""
        return int(self.tok[self.shared].sum())

    def request_tokens(self) -> int:
        return int(self.request_lengths.sum())

    def shared_reads(self) -> int:
        """Token reads per-request decode spends on shared nodes."""
        return int((self.tok * self.q)[self.shared].sum())

    def node_slots(self, i: int) -> np.ndarray | None:
        if self.slot_table is None:
            return None
        b = int(self.row_base[self.rep[i]] + self.start[i])
        return self.slot_table[b : b + int(self.tok[i])].astype(np.int64)

    def request_slots(self, r: int) -> np.ndarray:
        """Slots of request ``r`` in order (the host slot table's row; needs a forest built from slots)."""
        if self.slot_table is None:
            raise ValueError("this forest holds no slot table (built from radix paths): slots live on the device")
        b = int(self.row_base[r])
        return self.slot_table[b : b + int(self.request_lengths[r])].astype(np.int64)

    @property
    def nodes(self) -> list[ForestNode]:
        """Read-only node views, made on each read (not for the per-step path)."""
        parents = self.parent.tolist()
        children: list[list[int]] = [[] for _ in parents]
        for i, p in enumerate(parents):
            if p >= 0:
                children[p].append(i)
        rp, reqs = self.req_ptr.tolist(), self.req_flat.tolist()
        return [
            ForestNode(s, t, reqs[rp[i] : rp[i + 1]], parents[i], children[i], d, self.node_slots(i))
            for i, (s, t, d) in enumerate(zip(self.start.tolist(), self.tok.tolist(), self.depth.tolist(), strict=True))
        ]

    def canonical_key(self) -> frozenset:
        """Equal for two forests that describe the same sharing: per node its requests, its token range and (when
        the forest holds slots) its slots."""
        rp, reqs = self.req_ptr.tolist(), self.req_flat.tolist()
        out = []
        for i, (s, t) in enumerate(zip(self.start.tolist(), self.tok.tolist(), strict=True)):
            slots = self.node_slots(i)
            out.append((tuple(reqs[rp[i] : rp[i + 1]]), s, s + t, None if slots is None else tuple(slots.tolist())))
        return frozenset(out)

    def __repr__(self) -> str:
        return f"PrefixForest({self.num_nodes} nodes, {self.num_requests} requests, {self.request_tokens()} tokens)"

    # ------------------------------------------------------------------ the decode step
    def with_lengths(self, lengths: np.ndarray) -> PrefixForest | None:
        """This forest with every request's private leaf ending at ``lengths[r]`` (the next decode step: one token
        longer), sharing all structure; ``None`` if some request has no private leaf (ends in a shared node) or
        a leaf would be empty. O(requests) numpy, independent of context length."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape[0] != self.num_requests:
            raise ValueError(f"{lengths.shape[0]} lengths for {self.num_requests} requests")
        leaf = self.last_node
        private = self._derived.get("private_leaves")  # a structure value: once per structure, not per step
        if private is None:
            private = self._derived["private_leaves"] = bool((self.q[leaf] == 1).all())
        if not private:
            return None
        leaf_tok = lengths - self.start[leaf]
        if leaf_tok.min() < 1:
            return None
        tok = self.tok.copy()
        tok[leaf] = leaf_tok
        return PrefixForest(
            tok, self.start, self.parent, self.depth, self.req_ptr, self.req_flat, self.row_base, lengths,
            None, self._derived,
        )

    # ------------------------------------------------------------------ construction
    @staticmethod
    def private(lengths: np.ndarray, row_base: np.ndarray) -> PrefixForest:
        """No sharing: one node per request, its whole row."""
        lengths = np.asarray(lengths, dtype=np.int64)
        n = lengths.shape[0]
        if n == 0:
            raise ValueError("empty batch: no requests")
        if (lengths < 1).any():
            raise ValueError(f"request {int(np.flatnonzero(lengths < 1)[0])} has no KV tokens (sequence length 0)")
        ar = np.arange(n, dtype=np.int64)
        return PrefixForest(
            lengths.copy(), np.zeros(n, np.int64), np.full(n, -1, np.int64), np.zeros(n, np.int64),
            np.arange(n + 1, dtype=np.int64), ar, np.asarray(row_base, dtype=np.int64), lengths,
        )

    @staticmethod
    def from_paths(
        entry_req: np.ndarray,
        entry_key: np.ndarray,
        entry_len: np.ndarray,
        seq_lens: np.ndarray,
        row_base: np.ndarray,
        slot_table: np.ndarray | None = None,
        index: bool = False,
    ) -> PrefixForest:
        """Build from radix paths: entry ``e`` says request ``entry_req[e]`` passes through the node with integer key
        ``entry_key[e]`` of ``entry_len[e]`` tokens; a request's entries are consecutive, root first, and requests
        in increasing order. What lies beyond a request's entries (up to ``seq_lens[r]``) is its private leaf.
        Numpy over the entries: cost grows with nodes and requests, not tokens.

        ``index``: also record, when every request has a private leaf, where the radix keys sit in the forest
        (``RADIX_INDEX`` in the structure values: what ``forest_edit.RadixIndex`` edits the forest with).

        Compiled where the host extension module loads (``kernels/host_paths.c``: the same arrays in one call, ~60
        numpy calls fewer); the numpy version below is its fallback, its reference in the tests, and gives every
        error."""
        seq = np.asarray(seq_lens, dtype=np.int64)
        e_req = np.asarray(entry_req, dtype=np.int64)
        e_key = np.asarray(entry_key, dtype=np.int64)
        e_len = np.asarray(entry_len, dtype=np.int64)
        got = host_core.glue_call("forest_from_paths", e_req, e_key, e_len, seq, index)
        if got is not NotImplemented and got is not None:
            *arrays, radix_index = got
            forest = PrefixForest(*arrays, np.asarray(row_base, np.int64), seq, slot_table)
            if radix_index is not None:
                forest._derived[RADIX_INDEX] = radix_index
            return forest
        n_req = seq.shape[0]
        if n_req == 0:
            raise ValueError("empty batch: no requests")
        if (seq < 1).any():
            raise ValueError(f"request {int(np.flatnonzero(seq < 1)[0])} has no KV tokens (sequence length 0)")
        keep = e_len > 0
        if not keep.all():
            e_req, e_key, e_len = e_req[keep], e_key[keep], e_len[keep]
        n_ent = e_req.shape[0]
        if n_ent == 0:  # nothing cached: one private leaf per request
            ar = np.arange(n_req, dtype=np.int64)
            return PrefixForest(seq.copy(), np.zeros(n_req, np.int64), np.full(n_req, -1, np.int64),
                                np.zeros(n_req, np.int64), np.arange(n_req + 1, dtype=np.int64), ar,
                                np.asarray(row_base, np.int64), seq, slot_table)
        if (e_req[1:] < e_req[:-1]).any() or e_req[0] < 0 or e_req[-1] >= n_req:
            raise ValueError("path entries must be grouped by request, in request order")
        # Positions: a request's entries tile [0, cached) of its row, root first.
        counts = np.bincount(e_req, minlength=n_req)
        first = np.cumsum(counts) - counts  # first entry of each request
        first_e = first[e_req]
        e_end = np.cumsum(e_len)
        e_end -= (e_end - e_len)[first_e]
        e_depth = np.arange(n_ent) - first_e
        with_path = counts > 0
        last = np.maximum(first + counts - 1, 0)  # last entry of each request (where it has any)
        first_c = np.minimum(first, n_ent - 1)
        cached = np.where(with_path, e_end[last], 0)
        if (cached > seq).any():
            r = int(np.flatnonzero(cached > seq)[0])
            raise ValueError(f"request {r}: cached path of {int(cached[r])} tokens exceeds its length {int(seq[r])}")

        # Radix nodes: entries grouped by (depth, key), so parents come first and a node's requests are in order.
        if int(e_key.max()) >= 1 << _KEY_BITS:
            order = np.lexsort((e_key, e_depth))
            sorted_key = np.stack([e_depth[order], e_key[order]], axis=1)
            head = np.r_[True, (sorted_key[1:] != sorted_key[:-1]).any(axis=1)]
        else:
            sorted_key = (e_depth << _KEY_BITS) + e_key
            order = sorted_key.argsort(kind="stable")
            sorted_key = sorted_key[order]
            head = np.empty(n_ent, dtype=bool)
            head[:1] = True
            np.not_equal(sorted_key[1:], sorted_key[:-1], out=head[1:])
        node_sorted = np.cumsum(head) - 1  # node of each entry, in sorted order
        node_of_entry = np.empty(n_ent, np.int64)
        node_of_entry[order] = node_sorted
        first_of_node = order[head]  # one entry of each node: its position, length and parent are the node's
        e_parent = np.empty(n_ent, np.int64)  # the node of the entry before, on the same path
        e_parent[0] = -1
        e_parent[1:] = node_of_entry[:-1]
        e_parent[e_depth == 0] = -1
        at = first_of_node[node_sorted]
        node_keys = np.sort(e_key[first_of_node])
        if (e_end[at] != e_end[order]).any() or (e_len[at] != e_len[order]).any() or (
            e_parent[at] != e_parent[order]
        ).any() or (node_keys[1:] == node_keys[:-1]).any():
            raise ValueError("radix paths disagree: a node key has two positions, lengths or parents")
        bounds = np.flatnonzero(head)
        q_node = np.empty(bounds.shape[0], np.int64)
        q_node[:-1] = bounds[1:] - bounds[:-1]
        q_node[-1] = n_ent - bounds[-1]

        # Canonical form, read off the paths. A request's nodes are private (q = 1) from some depth on (a child's
        # requests are among its parent's): they and its private tail are one leaf. A shared node is absorbed into
        # its child when the child has all its requests (then it is its only child); what is kept are the other
        # shared nodes ("kept"), each reaching back over its absorbed ancestors, and one leaf per request.
        shared = q_node > 1
        node_parent = e_parent[first_of_node]
        has_parent = node_parent >= 0
        absorbed = np.zeros(q_node.shape[0], dtype=bool)
        absorbed[node_parent[has_parent & shared & (q_node == q_node[np.maximum(node_parent, 0)])]] = True
        kept = shared & ~absorbed
        kept_id = np.cumsum(kept) - 1
        kept_e = kept[node_of_entry]
        # Per entry, over the kept entries before it on its path (segmented scans: requests are consecutive and
        # ends grow along a path, so one running maximum offset by request restarts at each request).
        span = int(seq.max()) + 1
        offset = e_req * span
        end_scan = np.maximum.accumulate(np.where(kept_e, e_end, 0) + offset)  # end of the last kept entry so far
        idx_scan = np.maximum.accumulate(np.where(kept_e, np.arange(n_ent), -1))  # index of the last kept entry
        prev_end = np.empty(n_ent, np.int64)
        prev_end[:1] = 0
        prev_end[1:] = end_scan[:-1]
        prev_end = np.where(e_depth > 0, prev_end, offset) - offset
        prev_idx = np.empty(n_ent, np.int64)
        prev_idx[:1] = -1
        prev_idx[1:] = idx_scan[:-1]
        kept_before = np.cumsum(kept_e)
        kept_depth = kept_before - kept_e - (kept_before - kept_e)[first_e]
        # kept shared nodes, read through their first entry
        k_first = first_of_node[kept]
        k_prev = prev_idx[k_first]
        k_parent = np.where(k_prev >= first_e[k_first], kept_id[node_of_entry[np.maximum(k_prev, 0)]], -1)
        k_start = prev_end[k_first]
        # leaves: from the end of the request's last kept node (its last shared node, never absorbed)
        leaf_start = np.where(with_path, end_scan[last] - offset[last], 0)
        leaf_req = np.flatnonzero(seq > leaf_start)
        l_path = with_path[leaf_req]
        l_last = last[leaf_req]
        l_first = first_c[leaf_req]
        l_prev = idx_scan[l_last]
        l_parent = np.where(l_path & (l_prev >= l_first), kept_id[node_of_entry[np.maximum(l_prev, 0)]], -1)
        l_depth = np.where(l_path, kept_before[l_last] - (kept_before - kept_e)[l_first], 0)
        l_start = leaf_start[leaf_req]
        tok = np.concatenate([e_end[k_first] - k_start, seq[leaf_req] - l_start])
        start = np.concatenate([k_start, l_start])
        parent = np.concatenate([k_parent, l_parent])
        depth = np.concatenate([kept_depth[k_first], l_depth])
        q = np.concatenate([q_node[kept], np.ones(leaf_req.shape[0], np.int64)])
        req_flat = np.concatenate([e_req[order[kept_e[order]]], leaf_req])
        forest = PrefixForest(tok, start, parent, depth, _indptr(q), req_flat, np.asarray(row_base, np.int64), seq,
                              slot_table)
        if index and leaf_req.shape[0] == n_req:
            # Shared radix nodes lead every path they are on (a child's requests are among its parent's), and the
            # deepest on a path is kept, so each shared entry's kept node (the one its chain was absorbed into) is
            # the next kept entry on its path; a request's first private entry follows its shared ones.
            shared_e = shared[node_of_entry]
            next_kept = np.where(kept_e, np.arange(n_ent), n_ent - 1)
            next_kept = np.minimum.accumulate(next_kept[::-1])[::-1]
            chain_e = first_of_node[shared]
            n_shared = np.bincount(e_req[shared_e], minlength=n_req)
            private_at = first + n_shared
            has_private = n_shared < counts
            forest._derived[RADIX_INDEX] = (
                e_key[chain_e], kept_id[node_of_entry[next_kept[chain_e]]], e_key[k_first], e_depth[k_first],
                np.where(has_private, e_key[np.minimum(private_at, n_ent - 1)], -1),
            )
        return forest

    @staticmethod
    def from_flat(kv_indptr: Sequence[int] | np.ndarray, kv_indices: Sequence[int] | np.ndarray) -> PrefixForest:
        """Build from the flat convention: request ``r``'s row is ``kv_indices[kv_indptr[r]:kv_indptr[r + 1]]``.
        The forest keeps ``kv_indices`` as its slot table (int32/int64 inputs without a copy) and ``slot_max``, the
        largest slot of its rows, checked (``ValueError`` where one is negative). ``flat_forest_scanning`` is this
        with the slot check left running beside the caller's next work."""
        forest, settle = flat_forest_scanning(kv_indptr, kv_indices)
        settle()
        return forest

    @staticmethod
    def from_chains(
        chains: Sequence[Sequence[tuple[Hashable, np.ndarray]]], tails: Sequence[np.ndarray]
    ) -> PrefixForest:
        """Build from radix-tree chains: ``chains[r]`` lists (node id, slots) from the root down for request
        ``r``; ``tails[r]`` holds its private slots beyond the last cached node. Runs of one node id must hold
        the same slots (checked)."""
        if len(chains) != len(tails):
            raise ValueError(f"chains ({len(chains)}) and tails ({len(tails)}) differ in length")
        num_requests = len(chains)
        if num_requests == 0:
            raise ValueError("empty batch: no requests")
        key_of: dict[tuple[int, Hashable], int] = {}  # (parent key, node id) -> key: ids are per parent
        e_req, e_key, e_len, rows = [], [], [], []
        for r, (chain, tail) in enumerate(zip(chains, tails, strict=True)):
            parent = -1
            runs = []
            for node_id, slots in chain:
                slots = _as_int64(slots, f"chain slots of request {r}")
                if slots.shape[0] == 0:
                    continue
                key = key_of.setdefault((parent, node_id), len(key_of))
                e_req.append(r)
                e_key.append(key)
                e_len.append(slots.shape[0])
                runs.append(slots)
                parent = key
            runs.append(_as_int64(tail, f"tail of request {r}"))
            row = np.concatenate(runs)
            if row.shape[0] == 0:
                raise ValueError(f"request {r} has no KV tokens (sequence length 0)")
            rows.append(row)
        lengths = np.array([x.shape[0] for x in rows], dtype=np.int64)
        row_base = np.cumsum(lengths) - lengths
        table = np.concatenate(rows)
        forest = PrefixForest.from_paths(
            np.array(e_req, np.int64), np.array(e_key, np.int64), np.array(e_len, np.int64), lengths, row_base, table
        )
        # Every member of a node must hold the node's slots where its rep does.
        pos = _ranges(forest.start[forest.entry_node], forest.tok[forest.entry_node])
        reps = forest.rep[forest.entry_node]
        mine = np.repeat(forest.row_base[forest.req_flat], forest.tok[forest.entry_node]) + pos
        theirs = np.repeat(forest.row_base[reps], forest.tok[forest.entry_node]) + pos
        bad = np.flatnonzero(table[mine] != table[theirs])
        if bad.shape[0]:
            raise ValueError("a radix node has different slots for two requests")
        return forest


def flat_forest_scanning(
    kv_indptr: Sequence[int] | np.ndarray, kv_indices: Sequence[int] | np.ndarray
) -> tuple[PrefixForest, Callable[[], int]]:
    """``PrefixForest.from_flat``'s forest, and ``settle()``, which returns its checked slot maximum (``ValueError``
    where a slot is negative) and sets ``forest.slot_max`` to it. Until ``settle()`` has returned, ``slot_max`` is
    provisional (0) and part of the slot check may be running on the compiled library's worker thread:
    ``pat_sglang.plan`` plans the forest meanwhile (a plan does not depend on the slots' values) and settles before it
    returns. Call ``settle()`` once the forest is no longer being planned, on every path.

    The maximum is taken over the forest's own ranges (each node once): every other position of a row was found
    equal to one of those, so this covers every slot a plan can read. Compiled (``host_core``, where it loads): no
    two rows starting alike (nothing shared), the private forest off the lengths, and the check one pass over the
    table up to ``kv_indptr[-1]`` (which the rows tile) on the worker thread; else the forest in one call
    (``host_core.flat_forest``: it reads each row once, comparing the rows of a group over the tokens they share and
    taking each shared node's maximum from the last row it compared, in cache), and the private leaves of 1024 slots
    or more (each read once, from memory) on the worker. Else numpy (``_flat_forest``, then ``_read_max``: the same
    arrays and maximum): rows whose first slot no other row has are not compared at all, the others over about the
    tokens they share, one tree level at a time, then the maximum in a second pass over the unique tokens."""
    indptr = _as_int64(kv_indptr, "kv_indptr", check_negative=False)
    indices = _as_index_array(kv_indices, "kv_indices")
    lengths = _check_indptr(indptr, indices.shape[0])
    core = host_core.loaded()
    starts = indptr[:-1]
    first = np.sort(indices[starts])
    private = bool((first[1:] != first[:-1]).all())
    if core is None:
        forest = _flat_forest(indices, indptr, lengths, private)
        top = _read_max(forest, indices, "kv_indices")
        forest.slot_max = top
        return forest, lambda: top
    if private:  # the private forest, read off the lengths (no compiled call: it would sort and walk 256 nodes)
        scan = core.scan(indices, np.zeros(1, np.int64), indptr[-1:])
        forest = _flat_forest(indices, indptr, lengths, private)
        shared_top = 0
    else:
        arrays, shared_top, scan = core.flat_forest_scanning(indices, starts, lengths)
        names = ("tok", "start", "parent", "depth", "req_ptr", "req_flat")
        derived = {name: value for name, value in arrays.items() if name not in names}  # what _get would compute
        forest = PrefixForest(*(arrays[name] for name in names), starts, lengths, indices, derived)
    forest.slot_max = 0  # provisional until settle()

    def settle() -> int:
        forest.slot_max = _checked_top(max(shared_top, scan.result()), indices, "kv_indices")
        return forest.slot_max

    return forest, settle


# ---------------------------------------------------------------------------------------------- flat rows
# Slots between the sampled positions that bound a node's end before the exact comparison. A sample costs a cache
# line (~1.7 ns here), an exact slot ~0.2 ns, and a row's window overshoots its end by half a stride on average, so
# the best stride is about sqrt(17 * span): ~256 for rows of 2k-4k tokens (64 cost ~10% more at 256 x 4k).
_SAMPLE = 256


def _flat_forest(ind: np.ndarray, indptr: np.ndarray, lengths: np.ndarray, private: bool = False) -> PrefixForest:
    """The canonical forest of the rows ``ind[indptr[r]:indptr[r + 1]]`` (all non-empty; slots not yet checked),
    built one tree level at a time over all groups at once. ``private``: the caller found the rows' first slots
    distinct.

    Shared prefixes are identical slot runs from position 0, so rows whose first slot no other row has share
    nothing: they are grouped by first slot (O(batch)) and, when every group is a single row, the forest is the
    private one without reading further. Otherwise a group is a set of requests that agree on their first
    ``start`` slots and share the slot at ``start``; it is one node, which ends where two of its rows first differ
    or a row ends. Members are kept in request order, so a group's first member is its smallest request. Rows agree
    on ``[start, x)`` pairwise iff every two neighbours (in any order) do, so the node end is the minimum over
    neighbouring rows of their first difference (``_node_ends``: compares only rows of groups of two or more, over
    about the node's tokens). The rows of a node's children are then grouped by their slot at the node end."""
    num_requests = lengths.shape[0]
    starts = indptr[:-1]
    if private:
        change = None  # no need to sort the first slots again
    else:
        first = ind[starts]
        members = first.argsort(kind="stable")
        keys = first[members]
        change = keys[1:] != keys[:-1]
    if change is None or change.all():  # no two rows start alike: one private node per request
        return PrefixForest(
            lengths.copy(), np.zeros(num_requests, np.int64), np.full(num_requests, -1, np.int64),
            np.zeros(num_requests, np.int64), np.arange(num_requests + 1, dtype=np.int64),
            np.arange(num_requests, dtype=np.int64), starts, lengths, ind,
        )
    gptr = _boundaries(change, num_requests)
    gstart = np.zeros(gptr.shape[0] - 1, dtype=np.int64)
    gparent = np.full(gptr.shape[0] - 1, -1, dtype=np.int64)
    levels = []  # per level and group: (start, end, parent, members, number of members)
    num_nodes = 0
    narrow = ind.dtype == np.int32
    while gstart.shape[0]:
        num_groups = gstart.shape[0]
        gsize = gptr[1:] - gptr[:-1]
        gid = np.arange(num_groups).repeat(gsize)
        mlen = lengths[members]
        end = np.minimum.reduceat(mlen, gptr[:-1])
        multi = gsize > 1
        if num_groups < members.shape[0]:  # some group has two rows or more
            _node_ends(ind, starts, members, gid, gsize, gstart, end, multi)
        levels.append((gstart, end, gparent, members, gsize))
        # children: members that go on past the node end, grouped by (node, slot at the end)
        cont = mlen > end[gid]
        if not cont.any():
            num_nodes += num_groups
            break
        members, cgid = members[cont], gid[cont]
        cend = end[cgid]
        slot = ind[starts[members] + cend]
        if narrow:  # one int64 key (node, slot as unsigned: slots are checked later)
            key = (cgid << 32) | slot.view(np.uint32)
            order = key.argsort(kind="stable")
            key = key[order]
            change = key[1:] != key[:-1]
        else:
            order = np.lexsort((slot, cgid))
            slot = slot[order]
            change = (cgid[order][1:] != cgid[order][:-1]) | (slot[1:] != slot[:-1])
        members, cgid = members[order], cgid[order]
        level_base, num_nodes = num_nodes, num_nodes + num_groups
        if change.all():  # every child alone: private leaves to the rows' ends, nothing more to compare
            single = np.ones(members.shape[0], np.int64)
            levels.append((end[cgid], lengths[members], level_base + cgid, members, single))
            num_nodes += members.shape[0]
            break
        gptr = _boundaries(change, members.shape[0])
        head = cgid[gptr[:-1]]
        gstart = end[head]
        gparent = level_base + head

    # --- canonical order: depth-first, children by their smallest request (= a lexicographic sort of the
    # smallest requests along each node's root path). Nodes are numbered in level order until then.
    sizes = [lv[0].shape[0] for lv in levels]
    start = np.concatenate([lv[0] for lv in levels])
    end = np.concatenate([lv[1] for lv in levels])
    parent = np.concatenate([lv[2] for lv in levels])
    mem = np.concatenate([lv[3] for lv in levels])  # each node's members, in request order, nodes in level order
    q = np.concatenate([lv[4] for lv in levels])
    smallest = mem[_indptr(q)[:-1]]
    depth = np.repeat(np.arange(len(levels)), sizes)
    path_key = np.full((len(levels), num_nodes), -1, dtype=np.int64)  # row d: the smallest request at depth d
    path_key[depth, np.arange(num_nodes)] = smallest
    at = sizes[0]
    for d, size in enumerate(sizes[1:], 1):  # a node's key extends its parent's (parents are in earlier levels)
        ids = slice(at, at + size)
        path_key[:d, ids] = path_key[:d, parent[ids]]
        at += size
    order = np.lexsort(path_key[::-1])
    new_id = np.empty(num_nodes + 1, dtype=np.int64)
    new_id[order] = np.arange(num_nodes)
    new_id[num_nodes] = -1  # what a root's parent (-1) maps to
    # members in canonical node order: a stable sort by node keeps each node's members in request order
    req_flat = mem[np.repeat(new_id[:num_nodes], q).argsort(kind="stable")]
    start = start[order]
    return PrefixForest(end[order] - start, start, new_id[parent[order]], depth[order], _indptr(q[order]), req_flat,
                        starts, lengths, ind)


def _node_ends(
    ind: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    gid: np.ndarray,
    gsize: np.ndarray,
    gstart: np.ndarray,
    end: np.ndarray,
    multi: np.ndarray,
) -> None:
    """Lower ``end`` (per group: its shortest row's end) of every group of two or more rows to the first position
    where two of its neighbouring rows differ, in two passes over the rows of those groups, read from the group start:
    their slots every ``_SAMPLE`` positions bound each group's end from above (a sampled difference is a real one),
    then the rows are compared slot by slot up to that bound (the end is found there, or it is the bound). Each row is
    read over about its group's node tokens plus at most ``_SAMPLE``, through copies, not its whole length."""
    mg: slice | np.ndarray
    if multi.all():  # as at the first level of a batch with sharing: no selection
        mem, sg, mg = members, gid, slice(None)
    else:
        sel = multi[gid]
        mem, sg, mg = members[sel], gid[sel], np.flatnonzero(multi)
    row = starts[mem] + gstart[sg]  # where each row's run in its group begins in ind
    same = sg[1:] == sg[:-1]  # neighbouring rows in one group: the pairs compared
    pair_ptr = _indptr(gsize[mg] - 1)[:-1]  # each multi group's first pair (pairs are in group order)
    span = (end - gstart)[sg[1:]]  # per neighbouring pair: slots up to its group's shortest row end (>= 1)
    # Both passes read each row from its group start, where the rows of a group agree (they were grouped by that
    # slot): a pair's first difference in a window is never at column 0, so argmax = 0 means "none in the window".
    n_samples = (int(span.max()) - 1) // _SAMPLE + 1  # sample 0 is the group start
    if n_samples > 4:  # below that the exact pass over the whole window costs less than the sampling
        vals = _gather_rows(ind, row, n_samples, _SAMPLE)
        k = (vals[1:] != vals[:-1]).argmax(axis=1)
        k[k == 0] = n_samples  # no sampled difference: n_samples * _SAMPLE >= span
        # samples past a pair's window (its group's shortest row) may read anything: the bound is at most span
        bound = np.minimum(k * _SAMPLE, span)
    else:
        bound = span
    width = np.minimum.reduceat(bound[same], pair_ptr)  # per multi group: compare [start, start + width)
    rows = _gather_rows(ind, row, int(width.max()))
    k = (rows[1:] != rows[:-1]).argmax(axis=1)
    k[k == 0] = rows.shape[1]  # no difference within the window
    end[mg] = gstart[mg] + np.minimum(width, np.minimum.reduceat(k[same], pair_ptr))


def _gather_rows(ind: np.ndarray, row_start: np.ndarray, width: int, step: int = 1) -> np.ndarray:
    """``ind[s : s + width * step : step]`` for each ``s`` in ``row_start``, as rows of one array; entries past the
    end of ``ind`` are 0 (callers ignore them)."""
    n = ind.shape[0]
    span = (width - 1) * step + 1  # slots a row covers
    if int(row_start.max()) + span <= n:
        return _windows(ind, n - span + 1, width, step)[row_start]
    over = row_start + span > n  # rows that run past the end: read from a padded copy of the tail
    tail_rows = row_start[over]
    base = min(int(tail_rows.min()), n)
    count = int(tail_rows.max()) - base + 1
    tail = np.zeros(count + span - 1, dtype=ind.dtype)
    tail[: n - base] = ind[base:]
    out = np.empty((row_start.shape[0], width), dtype=ind.dtype)
    if not over.all():
        out[~over] = _windows(ind, n - span + 1, width, step)[row_start[~over]]
    out[over] = _windows(tail, count, width, step)[tail_rows - base]
    return out


def _windows(arr: np.ndarray, count: int, width: int, step: int) -> np.ndarray:
    """The read-only view ``w[i, j] = arr[i + j * step]``, ``i < count`` (``as_strided`` without its overhead)."""
    item = arr.strides[0]
    view = np.ndarray(shape=(count, width), dtype=arr.dtype, buffer=arr, strides=(item, item * step))
    view.flags.writeable = False
    return view


# ---------------------------------------------------------------------------------------------- helpers
def _boundaries(change: np.ndarray, n: int) -> np.ndarray:
    """indptr of the runs of a sorted sequence of length ``n`` whose neighbour changes are ``change``."""
    starts = np.ones(n + 1, dtype=bool)  # position i > 0 starts a run where change[i - 1]; 0 and n always bound
    starts[1:n] = change
    return np.flatnonzero(starts)


def _indptr(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` over (starts, lengths)."""
    ends = lengths.cumsum()
    total = int(ends[-1]) if ends.shape[0] else 0
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total) + (starts - (ends - lengths)).repeat(lengths)


def _as_int64(x: Sequence[int] | np.ndarray, name: str, check_negative: bool = True) -> np.ndarray:
    """``x`` as a 1-D int64 array; ``check_negative=False`` leaves the sign to the caller (``kv_indptr``: starts at
    0 and never decreases, checked by ``_check_indptr``)."""
    if hasattr(x, "detach"):  # torch tensor, any device
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] and arr.dtype != np.int64 and arr.dtype != np.int32 and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if check_negative and arr.shape[0] and int(arr.min()) < 0:
        raise ValueError(f"{name} holds a negative index ({int(arr.min())})")
    return arr


def _check_indptr(indptr: np.ndarray, num_indices: int) -> np.ndarray:
    """The row lengths of a valid ``kv_indptr`` (all >= 1) over ``num_indices`` indices; ``ValueError`` otherwise."""
    if indptr.shape[0] < 2:
        raise ValueError("empty batch: kv_indptr needs at least two entries")
    if indptr[0] != 0:
        raise ValueError(f"kv_indptr must start at 0, got {int(indptr[0])}")
    lengths = indptr[1:] - indptr[:-1]
    shortest = int(lengths.min())
    if shortest < 0:
        raise ValueError("kv_indptr must be non-decreasing")
    if indptr[-1] > num_indices:
        raise ValueError(f"kv_indptr ends at {int(indptr[-1])} but kv_indices has {num_indices} entries")
    if shortest == 0:
        raise ValueError(f"request {int(np.flatnonzero(lengths == 0)[0])} has no KV tokens (sequence length 0)")
    return lengths


def _as_index_array(x: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """``_as_int64`` that keeps int32 and int64 arrays as they are and does not scan them: their values are checked
    where they are read (``_read_max``)."""
    if hasattr(x, "detach"):  # torch tensor, any device
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.int32 and arr.dtype != np.int64:
        return _as_int64(arr, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


_CHECK_BLOCK = 128  # slots per block when _read_max gathers a node range in blocks


def _read_max(forest: PrefixForest, ind: np.ndarray, name: str) -> int:
    """The largest slot in the forest's node ranges (read through each node's ``rep`` row); ``ValueError`` if one is
    negative. The maximum of the unsigned view is the maximum when no slot is negative, and above the signed range
    when one is. Reads the unique tokens only: the whole rows (which tile the table up to ``kv_indptr[-1]``) when
    they are most of it, else each node's range in blocks (a range of ``n >= _CHECK_BLOCK`` slots as ``ceil(n /
    _CHECK_BLOCK)`` blocks, the last one overlapping its neighbour; shorter ranges slot by slot)."""
    unsigned = ind.view(np.uint32 if ind.dtype == np.int32 else np.uint64)
    total = int(forest.request_lengths.sum())
    tok = forest.tok
    if 2 * int(tok.sum()) >= total:
        top = int(unsigned[:total].max())
    else:
        begin = forest.kv_begin()
        long = tok >= _CHECK_BLOCK
        top = 0
        if long.any():
            lb, lt = begin[long], tok[long]
            nblk = (lt + (_CHECK_BLOCK - 1)) // _CHECK_BLOCK
            first = np.repeat(_indptr(nblk)[:-1], nblk)
            at = np.arange(first.shape[0]) - first  # block index inside its range
            blk = np.minimum(np.repeat(lb, nblk) + at * _CHECK_BLOCK, np.repeat(lb + lt - _CHECK_BLOCK, nblk))
            top = int(_gather_rows(unsigned, blk, _CHECK_BLOCK).max())
        if not long.all():
            short = ~long
            top = max(top, int(unsigned[_ranges(begin[short], tok[short])].max()))
    return _checked_top(top, ind, name)


def _checked_top(top: int, ind: np.ndarray, name: str) -> int:
    """``top``, the unsigned maximum of slots of ``ind``: ``ValueError`` where it is above the signed range (one of
    those slots is negative)."""
    if top > (_INT32_MAX if ind.dtype == np.int32 else _INT64_MAX):
        raise ValueError(f"{name} holds a negative index ({int(ind.min())})")
    return top
