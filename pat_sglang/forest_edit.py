"""Last step's prefix forest edited for a changed decode batch: cost in proportion to the requests that came and went.

Role in pack-forward-merge: an input of *pack*, the same forest ``PrefixForest.from_paths`` builds (node for node, in
its order), made without reading the batch's paths: from the joiners' paths and last step's forest.

The canonical forest of a batch whose every request has a private leaf is its kept shared nodes (``K`` of them,
first, in ``from_paths``' order) and one leaf per request (node ``K + r``). A request's place in it is one number, its
*attach* node (the deepest kept node on its path, the parent of its leaf; -1 for a root leaf): its leaf starts where
that node ends, and the kept nodes it is a member of are that node and its ancestors. So when requests leave and
join, the new forest is the old kept nodes (less those left with one request, plus those requests come to share) with
each member list recomputed from the attach numbers, plus one leaf per request: three compiled passes over the batch
(``host_core``: which requests survive, where every request sits, then the forest's arrays with the derived ones the
planner reads; ~30 numpy calls where the compiled host work does not load), and Python only for the joining requests'
paths (a few radix nodes each, read from their signatures) and the kept nodes (tens). ``from_paths`` costs ~55 numpy
calls plus gathering the batch's paths. Where the extension module loads, all of the edit after the survivors is one
call (``kernels/host_glue.c`` ``edit_common``: the member counts, the joiners' places, where every request sits, new
kept nodes, dissolved ones, the fusion check and, where the kept nodes stay, the forest's arrays); the Python steps
below are its reference and fallback.

``RadixIndex`` holds what that needs, made from a ``from_paths(index=True)`` build: per radix key of a shared node
the kept node whose chain holds it, per kept node its deepest radix key, and per request its attach node and its
*first private* radix key (the first node of its path beyond its attach node, -1 if none). An edit is refused (the
caller builds from the paths) unless all of these hold, which is when ``from_paths`` of the new batch gives the same
kept nodes, less those left unshared and plus those newly shared (below), and when it costs less than a rebuild:

* at most ``max(EDIT_JOINERS_MIN, EDIT_JOINERS_PER_REQUEST * batch)`` joiners (a wave of arrivals, a batch replaced
  at once): each joiner costs a walk of its path and maybe a new kept node, so past that count building from the paths
  costs about as much; checked first on the rows new to the batch (a lower bound), then on the entries;
* survivors are the old batch's requests with the very same published entry (``ChainEntry`` identity: a request
  whose chain was read again, after a radix split, counts as leaving and joining), in the same relative order;
* a joiner's path runs through whole kept chains, each one a child of the last, each ending at its kept node's token
  end, then (if it goes on) into radix nodes outside the kept chains;
* every request still has a private leaf (its length beyond its attach node's end).

A kept node left with one request (or none: then its kept descendants too) is no longer shared: it is dropped, and
its request's leaf reaches up to the end of its nearest kept ancestor, its private part starting at the first radix
key of the topmost node dropped (``_Kept.without``). A kept node left with all of its parent's requests is fused into
it, as ``from_paths`` makes them one node (``_Kept.fused``, after the compiled edit's placements).
Requests that come to share a radix node beyond their attach node share their first private key (radix nodes below a
node lie on its paths only), so a joiner whose first private key another request of the new batch has (one sort over
the batch finds them all) makes a new kept node: their common radix chain from that key, under their attach node,
placed in ``from_paths``' (depth, key) order (``_Kept.with_nodes``); if some of them share a further node below it (a
second new level) the edit is refused. Anything else (no index, a stale or missing path, a joiner ending inside or at
a shared node, an empty leaf) is refused and built from the paths, which makes a new index. Before it returns, an edit
checks its member counts against the kept nodes' (one ``bincount``): a wrong attach number is refused, never planned.
Tests drive random join / leave / split sequences and compare every edited forest with ``from_paths`` of the same
batch (``tests/test_forest_edit.py``).
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import host_core
from .forest import RADIX_INDEX, PrefixForest, _indptr

# Past this many joiners per request of the batch, and at least EDIT_JOINERS_MIN, the edit is refused before any of
# its work and the forest built from the paths. With the edit in one compiled call (``edit_common``) a joiner costs
# ~1 us: in the gated Mooncake replay at batch 256 x 1k (2-core VM) edits of 24-78 joiners took 100-197 us and one of
# 157 joiners 287 us, builds from the paths 248-399 us (docs/perf/host/2026-12-05-fiftyseventh-vm-edit-joiners.txt);
# the edit walked them in Python at 4-15 us a joiner when 1/16 was set (2026-11-30-eighteenth-edit-worst.txt).
EDIT_JOINERS_PER_REQUEST = 1 / 2
EDIT_JOINERS_MIN = 8


def max_edit_joiners(num_requests: int) -> float:
    """The most joiners an edit of a batch of ``num_requests`` real requests takes (``EDIT_JOINERS_*``)."""
    return max(EDIT_JOINERS_MIN, EDIT_JOINERS_PER_REQUEST * num_requests)


def survivors(entries: tuple, old_entries: tuple, rows: np.ndarray,
              old_rows: np.ndarray) -> tuple[np.ndarray, list[int], list[int], bool] | None:
    """Which requests of a changed batch are last batch's: per entry of ``entries`` (``ChainEntry`` objects, at
    pool ``rows``) the index of the very same entry object in ``old_entries`` (at ``old_rows``) in the same row, or -1
    (an entry is made for one request in one row, so it is the same request with the same path: a request whose chain
    was read again counts as leaving and joining); the joiners (the -1s) and the old entries that did not survive, as
    ascending lists; whether the survivors keep their relative order. ``rows``/``old_rows``: int64, at least as many
    as the entries (the first are read), the real requests' rows (distinct). None where a row is negative. Compiled
    (``host_core`` ``survivors``) where it loads, else ``_survivors``."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    old_rows = np.ascontiguousarray(old_rows, dtype=np.int64)
    core = host_core.loaded_batch()
    if core is None:
        return _survivors(entries, old_entries, rows, old_rows)
    return core.survivors(entries, old_entries, rows, old_rows)


def _survivors(entries: tuple, old_entries: tuple, rows: np.ndarray,
               old_rows: np.ndarray) -> tuple[np.ndarray, list[int], list[int], bool] | None:
    """``survivors`` in numpy (the reference of ``kernels/host_batch.c`` ``pat_survivors``)."""
    n, n_old = len(entries), len(old_entries)
    rows, old_rows = rows[:n], old_rows[:n_old]
    if (n and int(rows.min()) < 0) or (n_old and int(old_rows.min()) < 0):
        return None
    top = max(int(rows.max()) if n else -1, int(old_rows.max()) if n_old else -1)
    table = np.full(top + 1, -1, dtype=np.int64)
    table[old_rows] = np.arange(n_old)
    cand = table[rows]
    same = np.fromiter(
        (k >= 0 and e is old_entries[k] for e, k in zip(entries, cand.tolist(), strict=True)), bool, n
    )
    old_of = np.where(same, cand, -1)
    stay = old_of[same]
    kept = np.zeros(n_old, dtype=bool)
    kept[stay] = True
    ordered = not (stay.shape[0] > 1 and bool((stay[1:] <= stay[:-1]).any()))
    return old_of, np.flatnonzero(~same).tolist(), np.flatnonzero(~kept).tolist(), ordered


@dataclass(eq=False)
class _Kept:
    """The kept nodes of a forest (its first ``K`` nodes) and their radix chains: what an edit keeps or thins."""

    tok: np.ndarray  # int64 [K], and start, parent (a kept node or -1), depth: the forest's first K nodes
    start: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    chain: dict[int, int]  # radix key of a shared node -> its kept node
    deepest: list[int]  # per kept node: its deepest radix key
    rank: list[tuple[int, int]]  # per kept node: (depth on the paths, key) of its deepest radix node: their order
    top: list[int]  # per kept node: its first radix key (where a request's private part starts if it dissolves)
    parents: list[int]  # ``parent`` as a list
    lineage: list[list[int]]  # at a + 1: kept node a and its ancestors ([] at 0: a root leaf)
    ancestors: np.ndarray  # int64 [K + 1, D]: ``lineage`` as rows padded with -1
    num_ancestors: np.ndarray  # int64 [K + 1]: the length of each lineage (the depth of a leaf under a at a + 1)
    end: np.ndarray  # int64 [K + 1]: end of kept node a at a + 1 (0 at 0: a root leaf starts at 0)
    # tok, start, parent, depth, end, num_ancestors, ancestors one after another in one int64 array (the fields above
    # are views of it): what ``host_core`` ``edit_forest`` passes in one pointer
    packed: np.ndarray

    @staticmethod
    def make(tok: list[int], start: list[int], parents: list[int], depth: list[int], chain: dict[int, int],
             deepest: list[int], rank: list[tuple[int, int]], top: list[int]) -> _Kept:
        """The kept nodes with these per-node values (lists: the arrays are made from them in one conversion, or in
        one call of the host core's extension module, ``kernels/host_glue.c`` ``kept_pack``, where it loads)."""
        glue = host_core.loaded_glue()
        if glue is not None:
            lineage, packed, *views, end, num_ancestors, ancestors = glue.kept_pack(tok, start, parents, depth)
            return _Kept(*views, chain, deepest, rank, top, parents, lineage, ancestors, num_ancestors, end, packed)
        lineage: list[list[int]] = [[]]
        for k, p in enumerate(parents):  # parents first (topological order)
            lineage.append([k, *lineage[p + 1]])
        num_kept, rows = len(parents), len(lineage)
        width = max(1, max(map(len, lineage)))
        packed = np.array(list(itertools.chain(
            tok, start, parents, depth,
            [0], map(operator.add, start, tok),  # end
            [0], [d + 1 for d in depth],  # num_ancestors
            *([*line, *[-1] * (width - len(line))] for line in lineage),  # ancestors
        )), dtype=np.int64)
        views = [packed[i * num_kept : (i + 1) * num_kept] for i in range(4)]
        at = 4 * num_kept
        end, num_ancestors = packed[at : at + rows], packed[at + rows : at + 2 * rows]
        ancestors = packed[at + 2 * rows :].reshape(rows, width)
        return _Kept(*views, chain, deepest, rank, top, parents, lineage, ancestors, num_ancestors, end, packed)

    def without(self, gone: list[int]) -> tuple[_Kept, np.ndarray]:
        """These kept nodes without ``gone`` (each with its kept descendants among them), and per attach node
        (at a + 1) the new index of its nearest kept ancestor-or-self that stays (-1 for none)."""
        num_kept = len(self.parents)
        stays = [True] * num_kept
        for k in gone:
            stays[k] = False
        new_id = list(itertools.accumulate(stays, initial=0))  # new index of kept node k: new_id[k] where it stays
        moved = [-1]
        for k, p in enumerate(self.parents):  # parents first: a gone node takes its parent's answer
            moved.append(new_id[k] if stays[k] else moved[p + 1])
        remap = np.array(moved, dtype=np.int64)
        return _Kept.make(
            list(itertools.compress(self.tok.tolist(), stays)), list(itertools.compress(self.start.tolist(), stays)),
            [moved[p + 1] for p in itertools.compress(self.parents, stays)],
            list(itertools.compress(self.depth.tolist(), stays)),
            {key: new_id[k] for key, k in self.chain.items() if stays[k]},
            [key for key, stay in zip(self.deepest, stays, strict=True) if stay],
            [r for r, stay in zip(self.rank, stays, strict=True) if stay],
            [key for key, stay in zip(self.top, stays, strict=True) if stay],
        ), remap

    def fused(self, q: list[int]) -> tuple[_Kept, np.ndarray, list[int]] | None:
        """These kept nodes with every one that holds all of its parent's ``q`` requests fused into that parent (one
        node over both radix chains, as ``from_paths`` makes it), in ``from_paths``' order: (the kept nodes, per attach
        node at a + 1 its new index, the member counts); ``None`` where no node fuses. A parent fused with its child
        has no request of its own beyond the child's, so no request attaches to it: each one attached to the child
        keeps its first private key, below the fused node's end."""
        num_kept = len(self.parents)
        into = list(range(num_kept))  # the node each one becomes part of (parents first, so a chain folds at its top)
        for k, p in enumerate(self.parents):
            if p >= 0 and q[k] >= q[p]:
                into[k] = into[p]
        if all(t == k for k, t in enumerate(into)):
            return None
        tok, deepest, rank = self.tok.tolist(), list(self.deepest), list(self.rank)
        for k, t in enumerate(into):  # down each fused chain: the tokens add up, the deepest radix node is the last
            if t != k:
                tok[t] += tok[k]
                deepest[t], rank[t] = deepest[k], rank[k]
        # from_paths' order is by rank (depth on the paths, key of the deepest radix node): parents before children
        order = sorted((rank[k], k) for k, t in enumerate(into) if t == k)
        new_id = [0] * num_kept
        for at, (_, k) in enumerate(order):
            new_id[k] = at
        remap = np.array([-1, *(new_id[t] for t in into)], dtype=np.int64)
        start, old_parent = self.start.tolist(), self.parents
        parent = [-1 if old_parent[k] < 0 else new_id[into[old_parent[k]]] for _, k in order]
        depth: list[int] = []
        for p in parent:  # parents come first in this order
            depth.append(0 if p < 0 else depth[p] + 1)
        kept = _Kept.make([tok[k] for _, k in order], [start[k] for _, k in order], parent, depth,
                          {key: new_id[into[k]] for key, k in self.chain.items()}, [deepest[k] for _, k in order],
                          [rank[k] for _, k in order], [self.top[k] for _, k in order])
        return kept, remap, [q[k] for _, k in order]

    def with_nodes(self, new: list[_NewNode]) -> tuple[_Kept, np.ndarray, list[int]]:
        """These kept nodes and ``new`` ones (parents among these), in ``from_paths``' order: (the kept nodes, per
        attach node at a + 1 its new index, the new nodes' indices)."""
        num_kept = len(self.parents)
        order = sorted([(r, i) for i, r in enumerate(self.rank)] + [(n.rank, num_kept + i) for i, n in enumerate(new)])
        new_id = [0] * (num_kept + len(new))
        for at, (_, i) in enumerate(order):
            new_id[i] = at
        remap = np.array([-1, *new_id[:num_kept]], dtype=np.int64)
        ends, old_tok, old_start, old_depth = self.end.tolist(), self.tok.tolist(), self.start.tolist(), \
            self.depth.tolist()
        tok, start, parent, depth, deepest, rank, top = [], [], [], [], [], [], []
        for _, i in order:
            if i < num_kept:
                p = self.parents[i]
                tok.append(old_tok[i])
                start.append(old_start[i])
                depth.append(old_depth[i])
                deepest.append(self.deepest[i])
                rank.append(self.rank[i])
                top.append(self.top[i])
            else:
                n = new[i - num_kept]
                p = n.parent
                tok.append(n.tok)
                start.append(ends[p + 1])
                depth.append(0 if p < 0 else old_depth[p] + 1)
                deepest.append(n.chain[-1])
                rank.append(n.rank)
                top.append(n.chain[0])
            parent.append(-1 if p < 0 else new_id[p])
        chain = {key: new_id[k] for key, k in self.chain.items()}
        for i, n in enumerate(new):
            for key in n.chain:
                chain[key] = new_id[num_kept + i]
        return _Kept.make(tok, start, parent, depth, chain, deepest, rank, top), remap, new_id[num_kept:]


@dataclass(frozen=True)
class _NewNode:
    """A radix chain that requests of one attach node come to share (``RadixIndex._shared``)."""

    parent: int  # the attach node they share it under (-1: the root)
    chain: list[int]  # its radix keys, root side first
    tok: int
    rank: tuple[int, int]  # (depth on the paths, key) of its deepest radix node
    members: list[int]
    next_private: list[int]  # per member: its first radix key below the chain, or -1


@dataclass(eq=False)
class RadixIndex:
    """Where a forest's requests and shared radix keys sit (see the module docstring). ``entries`` and ``rows`` are the
    published entries (``ChainEntry``) and pool rows of its real requests; requests past them are padding (CUDA-graph
    batches), without a path: root leaves."""

    forest: PrefixForest
    entries: tuple
    rows: np.ndarray  # int64 [len(entries)]
    kept: _Kept
    q: list[int]  # per kept node: its requests
    attach: np.ndarray  # int64 per request: its leaf's parent (a kept node), or -1
    first_private: np.ndarray  # int64 per request: its first radix key beyond its attach node, or -1

    @staticmethod
    def of(forest: PrefixForest, entries: tuple, rows: np.ndarray) -> RadixIndex | None:
        """The index of a forest ``from_paths(index=True)`` built from ``entries`` (the first requests, at pool
        ``rows``); ``None`` without one."""
        raw = forest._derived.get(RADIX_INDEX)
        if raw is None or not entries:
            return None
        chain_keys, chain_ids, deepest, deepest_depth, first_private = raw
        k = slice(0, forest.num_nodes - forest.num_requests)
        chain: dict[int, int] = {}
        top: dict[int, int] = {}
        for key, kept in zip(chain_keys.tolist(), chain_ids.tolist(), strict=True):  # root side first
            chain[key] = kept
            top.setdefault(kept, key)
        deepest_keys = deepest.tolist()
        rank = list(zip(deepest_depth.tolist(), deepest_keys, strict=True))
        kept = _Kept.make(forest.tok[k].tolist(), forest.start[k].tolist(), forest.parent[k].tolist(),
                          forest.depth[k].tolist(), chain, deepest_keys, rank,
                          [top[i] for i in range(len(top))])
        return RadixIndex(forest, entries, np.array(rows[: len(entries)], dtype=np.int64), kept,
                          forest.q[k].tolist(), forest.parent[k.stop :], first_private)

    def edit(self, entries: tuple, rows: np.ndarray, seq_lens: np.ndarray, row_base: np.ndarray) -> RadixIndex | None:
        """The index (and ``.forest``) of the batch ``entries`` (every one a ``ChainEntry``, at pool ``rows``; the
        batch's further requests are padding) with lengths ``seq_lens`` and rows at ``row_base``: this forest edited,
        equal to ``from_paths`` of the batch's paths; ``None`` where the edit is refused (the module docstring)."""
        n_real = len(entries)
        new_rows = np.asarray(rows[:n_real], dtype=np.int64)
        if not n_real or new_rows.shape[0] != n_real:
            return None
        found = survivors(entries, self.entries, new_rows, self.rows)
        if found is None:
            return None
        old_of, joiners, leavers, ordered = found
        if not ordered or len(joiners) > max_edit_joiners(n_real):
            return None  # survivors reordered, or a cheaper rebuild
        kept = self.kept
        seq = np.ascontiguousarray(seq_lens, dtype=np.int64)
        common = host_core.glue_call(
            "edit_common", old_of, joiners, leavers, entries, self.attach, self.first_private, kept.packed,
            kept.ancestors.shape[1], kept.chain, kept.deepest, self.q, seq, kept.top, kept.rank,
        )
        if common is None:
            return None
        if common is not NotImplemented:  # the edit in one call
            made, attach, first_private, q, fuses = common
            if isinstance(made, dict):  # the kept nodes stay: the forest's arrays
                forest = _forest_of(made, seq, row_base)
            else:  # kept nodes made or dissolved (the new ones' _Kept.make arguments), or some to fuse (None)
                if made is not None:
                    kept = _Kept.make(*made)
                fused = kept.fused(q) if fuses else None
                if fused is not None:
                    kept, remap, q = fused
                    attach = remap[attach + 1]
                forest = self._forest(kept, attach, q, seq, row_base)
                if forest is None:
                    return None
            return RadixIndex(forest, entries, new_rows, kept, q, attach, first_private)
        q = list(self.q)
        lineage = kept.lineage
        for a in self.attach[leavers].tolist():  # the leavers' kept nodes lose them
            for k in lineage[a + 1]:
                q[k] -= 1
        placed = []
        for j in joiners:
            spot = self._place(entries[j])
            if spot is None:
                return None
            placed.append(spot)
            for k in lineage[spot[0] + 1]:
                q[k] += 1
        attach, first_private, groups = self._places(old_of, joiners, placed, len(seq_lens))
        if groups:
            # A radix node beyond an attach node that requests come to share is a new kept node: their common chain.
            new = self._shared(groups, entries, attach)
            if new is None:
                return None
            kept, remap, ids = kept.with_nodes(new)
            attach = remap[attach + 1]
            grown = [0] * (len(q) + len(new))
            for k, count in enumerate(q):
                grown[int(remap[k + 1])] = count
            for node, made in zip(ids, new, strict=True):
                grown[node] = len(made.members)
                attach[made.members] = node
                first_private[made.members] = made.next_private
            q = grown
        gone = [k for k, count in enumerate(q) if count < 2]  # kept nodes left with one request or none
        if gone:
            # A kept node left with one request becomes part of that request's leaf, which then starts at the end of
            # its nearest staying ancestor, its private part at the first radix key of the topmost node gone.
            lineage = kept.lineage
            opens = np.full(len(q) + 1, -1, dtype=np.int64)
            for k in gone:
                p = kept.parents[k]
                if p < 0 or q[p] >= 2:
                    for d in range(len(q)):  # every node gone below it (its lineage passes through k)
                        if q[d] < 2 and k in lineage[d + 1]:
                            opens[d + 1] = kept.top[k]
            row = attach + 1
            fresh_start = opens[row]
            first_private = np.where(fresh_start >= 0, fresh_start, first_private)
            kept, remap = kept.without(gone)
            attach = remap[row]
            q = [count for count in q if count >= 2]
        fused = kept.fused(q)
        if fused is not None:  # a kept node with all of its parent's requests: the two are one node now
            kept, remap, q = fused
            attach = remap[attach + 1]
        forest = self._forest(kept, attach, q, seq_lens, row_base)
        if forest is None:
            return None
        return RadixIndex(forest, entries, new_rows, kept, q, attach, first_private)

    def _places(self, old_of: np.ndarray, joiners: list[int], placed: list[tuple[int, int]], n: int
                ) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]]:
        """Per request of the edited batch (``n``, padding included: root leaves) its attach node and first private
        key (a survivor's, at ``old_of``, from this index; a joiner's from ``placed``, in ``joiners`` order), and
        ``_groups`` of the joiners' keys. Compiled (``host_core`` ``edit_places``) where it loads, else
        ``_places_numpy``."""
        core = host_core.loaded()
        if core is None:
            return self._places_numpy(old_of, joiners, placed, n)
        return core.edit_places(old_of, self.attach, self.first_private, joiners, placed, n)

    def _places_numpy(self, old_of: np.ndarray, joiners: list[int], placed: list[tuple[int, int]], n: int
                      ) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]]:
        """``_places`` in numpy (the reference of ``kernels/host_edit.c`` ``pat_edit_places``)."""
        n_real = old_of.shape[0]
        same = old_of >= 0
        at = np.maximum(old_of, 0)
        attach = np.full(n, -1, dtype=np.int64)  # padding: root leaves
        attach[:n_real] = np.where(same, self.attach[at], -1)
        first_private = np.full(n, -1, dtype=np.int64)
        first_private[:n_real] = np.where(same, self.first_private[at], -1)
        for j, (a, key) in zip(joiners, placed, strict=True):
            attach[j] = a
            first_private[j] = key
        return attach, first_private, self._groups(first_private, [key for _, key in placed if key >= 0])

    @staticmethod
    def _groups(first_private: np.ndarray, keys: list[int]) -> dict[int, list[int]]:
        """A first private key of the joiners' (``keys``) that two requests or more now start with -> those requests
        (ascending): requests that come to share a radix node beyond their attach node share this key."""
        if len(keys) == 1:  # the common change: one joiner
            hit = np.flatnonzero(first_private == keys[0])
            return {keys[0]: hit.tolist()} if hit.shape[0] > 1 else {}
        if not keys:
            return {}
        # one sort for all the joiners: each key's requests are a run of the stably sorted first private keys
        order = np.argsort(first_private, kind="stable")
        distinct = sorted(set(keys))
        ordered = first_private[order]
        lo = np.searchsorted(ordered, distinct, "left").tolist()
        hi = np.searchsorted(ordered, distinct, "right").tolist()
        return {key: order[a:b].tolist() for key, a, b in zip(distinct, lo, hi, strict=True) if b - a > 1}

    @staticmethod
    def _shared(groups: dict[int, list[int]], entries: tuple, attach: np.ndarray) -> list[_NewNode] | None:
        """The kept node each group of requests (by the first private key they now share) makes: their common radix
        chain from that key, under their attach node; ``None`` if their paths disagree or some of them go on to
        share a further node (a second new level: left to ``from_paths``)."""
        made = []
        for key, members in groups.items():
            a = int(attach[members[0]])
            if members[-1] >= len(entries) or any(int(attach[m]) != a for m in members):
                return None
            paths = [_path(entries[m]) for m in members]
            starts = {keys.index(key) for keys, _ in paths}
            if len(starts) != 1:
                return None
            at = starts.pop()
            chain: list[int] = []
            tok = 0
            while True:
                here = [keys[at] if at < len(keys) else -1 for keys, _ in paths]
                if here[0] < 0 or here.count(here[0]) != len(here):
                    break
                lengths = {lens[at] for _, lens in paths}
                if len(lengths) != 1:
                    return None
                chain.append(here[0])
                tok += lengths.pop()
                at += 1
            below = [k for k in here if k >= 0]
            if len(set(below)) != len(below):
                return None
            made.append(_NewNode(a, chain, tok, (at - 1, chain[-1]), members, here))
        return made

    def _place(self, entry: Any) -> tuple[int, int] | None:
        """(attach node, first private key) of a joining request's path, or ``None`` if it is not whole kept chains
        followed by radix nodes outside them."""
        kept = self.kept
        chain, deepest, kept_parent, kept_end = kept.chain, kept.deepest, kept.parents, kept.end
        attach, inside, end = -1, -1, 0
        for key, _, length in reversed(entry.signature):  # root first: the node ids and tokens of ``_path``
            k = chain.get(key)
            if k is None:
                if inside >= 0:
                    return None  # leaves a kept chain before its kept node
                return attach, key
            if inside < 0:
                if kept_parent[k] != attach:
                    return None
                inside = k
            elif k != inside:
                return None
            end += length
            if key == deepest[k]:
                if end != int(kept_end[k + 1]):
                    return None
                attach, inside = k, -1
        if inside >= 0:
            return None
        return attach, -1

    @staticmethod
    def _forest(kept: _Kept, attach: np.ndarray, q: list[int], seq_lens: np.ndarray, row_base: np.ndarray
                ) -> PrefixForest | None:
        """The forest of the ``kept`` nodes (``q`` requests each) and one leaf per request under ``attach``; ``None``
        if a leaf would be empty or the members do not add up to ``q``. Compiled (``host_core`` ``edit_forest``,
        which makes the forest's derived arrays too) where it loads, else ``_forest_numpy``."""
        seq = np.ascontiguousarray(seq_lens, dtype=np.int64)
        row_base = np.asarray(row_base, dtype=np.int64)
        core = host_core.loaded()
        if core is None:
            return _forest_numpy(kept, attach, q, seq, row_base)
        arrays = core.edit_forest(kept.packed, kept.ancestors.shape[1], q, attach, seq)
        return None if arrays is None else _forest_of(arrays, seq, row_base)


_FOREST_ARRAYS = ("tok", "start", "parent", "depth", "req_ptr", "req_flat")


def _forest_of(arrays: dict[str, np.ndarray], seq: np.ndarray, row_base: np.ndarray) -> PrefixForest:
    """The forest of ``edit_forest``'s arrays (``kernels/host_glue.c``: the forest's and the derived ones that
    ``PrefixForest._get`` would compute) with the requests' lengths and row bases."""
    derived = {name: value for name, value in arrays.items() if name not in _FOREST_ARRAYS}
    return PrefixForest(*(arrays[name] for name in _FOREST_ARRAYS), np.asarray(row_base, dtype=np.int64), seq, None,
                        derived)


def _path(entry: Any) -> tuple[list[int], list[int]]:
    """A published entry's radix path, root first, as (node ids, tokens): its ``keys`` and ``lengths`` as lists, read
    from its signature (an entry's arrays are made on first read, ~6 numpy calls the edit would spend per joiner)."""
    sig = entry.signature[::-1]
    return [node_id for node_id, _, _ in sig], [tokens for _, _, tokens in sig]


def _forest_numpy(kept: _Kept, attach: np.ndarray, q: list[int], seq: np.ndarray, row_base: np.ndarray
                  ) -> PrefixForest | None:
    """``RadixIndex._forest`` in numpy (the reference of ``kernels/host_edit.c`` ``pat_edit_forest``); the planner
    makes the derived arrays on first read."""
    n = attach.shape[0]
    num_kept = len(q)
    row = attach + 1
    leaf_start = kept.end[row]
    leaf_tok = seq - leaf_start
    if int(leaf_tok.min()) < 1:
        return None
    if num_kept:
        anc = kept.ancestors[row]
        node = anc[anc >= 0]  # per request, its kept nodes (request-major)
        kept_q = np.bincount(node, minlength=num_kept)
        if kept_q.tolist() != q:
            return None
        key = node * n + np.repeat(np.arange(n, dtype=np.int64), kept.num_ancestors[row])
        key.sort()
        req_flat = np.concatenate([key - (key // n) * n, np.arange(n, dtype=np.int64)])
        counts = np.concatenate([kept_q, np.ones(n, dtype=np.int64)])
    else:
        req_flat = np.arange(n, dtype=np.int64)
        counts = np.ones(n, dtype=np.int64)
    return PrefixForest(
        np.concatenate([kept.tok, leaf_tok]),
        np.concatenate([kept.start, leaf_start]),
        np.concatenate([kept.parent, attach]),
        np.concatenate([kept.depth, kept.num_ancestors[row]]),
        _indptr(counts),
        req_flat,
        row_base,
        seq,
    )
