"""Last step's prefix forest edited for a changed decode batch: cost in proportion to the requests that came and went.

Role in pack-forward-merge: an input of *pack*, the same forest ``PrefixForest.from_paths`` builds (node for node, in
its order), made without reading the batch's paths when the batch's shared structure did not change.

The canonical forest of a batch whose every request has a private leaf is its kept shared nodes (``K`` of them,
first, in ``from_paths``' order) and one leaf per request (node ``K + r``). A request's place in it is one number, its
*attach* node (the deepest kept node on its path, the parent of its leaf; -1 for a root leaf): its leaf starts where
that node ends, and the kept nodes it is a member of are that node and its ancestors. So when requests leave and
join and the kept nodes stay what they were (same ranges, same chains of radix nodes), the new forest is the old kept
nodes with each member list recomputed from the attach numbers, plus one leaf per request: about 25 numpy calls over
the batch, and Python only for the joining requests' paths (a few radix nodes each). ``from_paths`` costs ~55 numpy
calls plus gathering the batch's paths.

``RadixIndex`` holds what that needs, made from a ``from_paths(index=True)`` build: per radix key of a shared node
the kept node whose chain holds it, per kept node its deepest radix key, and per request its attach node and its
*first private* radix key (the first node of its path beyond its attach node, -1 if none). An edit is refused (the
caller builds from the paths) unless all of these hold, which is when ``from_paths`` of the new batch gives the same
kept nodes:

* survivors are the old batch's requests with the very same published entry (``ChainEntry`` identity: a request
  whose chain was read again, after a radix split, counts as leaving and joining), in the same relative order;
* a joiner's path runs through whole kept chains, each one a child of the last, each ending at its kept node's token
  end, then (if it goes on) into a radix node no other request of the new batch starts its private part with: two
  requests share a radix node beyond their attach nodes only if they share the first one (radix nodes below a node
  lie on its paths only); an edit that would make such a node shared is refused;
* every kept node keeps at least two requests, and none gets all of its parent's requests (then ``from_paths`` would
  fuse them): counted from the attach numbers;
* every request still has a private leaf (its length beyond its attach node's end).

Anything else (no index, a stale or missing path, a joiner ending inside or at a shared node, a node that becomes
shared or private) is refused and built from the paths, which makes a new index. Tests drive random join / leave /
split sequences and compare every edited forest with ``from_paths`` of the same batch (``tests/test_forest_edit.py``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .forest import RADIX_INDEX, PrefixForest
from .planner import copy_with


@dataclass(eq=False)
class RadixIndex:
    """Where a forest's requests and shared radix keys sit (see the module docstring). ``entries`` and ``rows`` are the
    published entries (``ChainEntry``) and pool rows of its real requests; requests past them are padding (CUDA-graph
    batches), without a path: root leaves."""

    forest: PrefixForest
    entries: tuple
    rows: np.ndarray  # int64 [len(entries)]
    chain: dict[int, int]  # radix key of a shared node -> its kept node
    deepest: list[int]  # per kept node: its deepest radix key
    kept_parent: list[int]  # per kept node: its parent kept node, or -1
    lineage: list[list[int]]  # at a + 1: kept node a and its ancestors ([] at 0: a root leaf)
    q: list[int]  # per kept node: its requests
    attach: np.ndarray  # int64 per request: its leaf's parent (a kept node), or -1
    first_private: np.ndarray  # int64 per request: its first radix key beyond its attach node, or -1
    ancestors: np.ndarray  # int64 [K + 1, D]: ``lineage`` as rows padded with -1
    num_ancestors: np.ndarray  # int64 [K + 1]: the length of each lineage (the depth of a leaf under a at a + 1)
    kept_end: np.ndarray  # int64 [K + 1]: end of attach node a at a + 1 (0 for a root leaf)

    @staticmethod
    def of(forest: PrefixForest, entries: tuple, rows: np.ndarray) -> RadixIndex | None:
        """The index of a forest ``from_paths(index=True)`` built from ``entries`` (the first requests, at pool
        ``rows``); ``None`` without one."""
        raw = forest._derived.get(RADIX_INDEX)
        if raw is None or not entries:
            return None
        chain_keys, chain_ids, deepest, first_private = raw
        num_kept = forest.num_nodes - forest.num_requests
        kept_parent = forest.parent[:num_kept].tolist()
        lineage: list[list[int]] = [[]]
        for k, p in enumerate(kept_parent):  # parents first (topological order)
            lineage.append([k, *lineage[p + 1]])
        kept_depth = forest.depth[:num_kept]
        width = max(1, num_kept and int(kept_depth.max()) + 1)
        ancestors = np.full((num_kept + 1, width), -1, dtype=np.int64)
        for a, line in enumerate(lineage):
            ancestors[a, : len(line)] = line
        num_ancestors = np.zeros(num_kept + 1, dtype=np.int64)
        num_ancestors[1:] = kept_depth + 1
        kept_end = np.zeros(num_kept + 1, dtype=np.int64)
        kept_end[1:] = forest.start[:num_kept] + forest.tok[:num_kept]
        return RadixIndex(
            forest, entries, np.array(rows[: len(entries)], dtype=np.int64),
            dict(zip(chain_keys.tolist(), chain_ids.tolist(), strict=True)), deepest.tolist(), kept_parent, lineage,
            forest.q[:num_kept].tolist(), forest.parent[num_kept:], first_private, ancestors, num_ancestors,
            kept_end,
        )

    def edit(self, entries: tuple, rows: np.ndarray, seq_lens: np.ndarray, row_base: np.ndarray) -> RadixIndex | None:
        """The index (and ``.forest``) of the batch ``entries`` (every one a ``ChainEntry``, at pool ``rows``; the
        batch's further requests are padding) with lengths ``seq_lens`` and rows at ``row_base``: this forest edited,
        equal to ``from_paths`` of the batch's paths; ``None`` where the edit is refused (the module docstring)."""
        n_real = len(entries)
        old_rows = self.rows
        new_rows = np.asarray(rows[:n_real], dtype=np.int64)
        if not n_real or new_rows.shape[0] != n_real:
            return None
        # survivors: the old request in the same pool row, with the very same entry (an entry is made for one row;
        # a row new to the batch looks up -1, the last old entry, which is never a new request's entry)
        table = np.full(max(int(old_rows.max()), int(new_rows.max())) + 1, -1, dtype=np.int64)
        table[old_rows] = np.arange(old_rows.shape[0])
        cand = table[new_rows]
        same = np.fromiter(map(operator.is_, entries, map(self.entries.__getitem__, cand.tolist())), bool, n_real)
        old_of = np.where(same, cand, -1)
        stay = old_of[same]
        if stay.shape[0] > 1 and (stay[1:] <= stay[:-1]).any():
            return None  # survivors reordered
        q = list(self.q)
        lineage = self.lineage
        stays = np.zeros(old_rows.shape[0], dtype=bool)
        stays[stay] = True
        for a in self.attach[np.flatnonzero(~stays)].tolist():  # the leavers' kept nodes lose them
            for k in lineage[a + 1]:
                q[k] -= 1
        joiners = np.flatnonzero(~same).tolist()
        placed = []
        for j in joiners:
            spot = self._place(entries[j])
            if spot is None:
                return None
            placed.append(spot)
            for k in lineage[spot[0] + 1]:
                q[k] += 1
        for k, p in enumerate(self.kept_parent):
            if q[k] < 2 or (p >= 0 and q[k] >= q[p]):
                return None  # a kept node turns private, or its parent would be fused into it
        n = len(seq_lens)
        at = np.maximum(old_of, 0)
        attach = np.full(n, -1, dtype=np.int64)  # padding: root leaves
        attach[:n_real] = np.where(same, self.attach[at], -1)
        first_private = np.full(n, -1, dtype=np.int64)
        first_private[:n_real] = np.where(same, self.first_private[at], -1)
        for j, (a, key) in zip(joiners, placed, strict=True):
            if key >= 0 and (first_private == key).any():
                return None  # a radix node beyond the attach nodes would be shared
            attach[j] = a
            first_private[j] = key
        forest = self._forest(attach, q, seq_lens, row_base)
        if forest is None:
            return None
        return copy_with(self, forest=forest, entries=entries, rows=new_rows, q=q, attach=attach,
                         first_private=first_private)

    def _place(self, entry: Any) -> tuple[int, int] | None:
        """(attach node, first private key) of a joining request's path, or ``None`` if it is not whole kept chains
        followed by radix nodes outside them."""
        chain, deepest, kept_parent = self.chain, self.deepest, self.kept_parent
        kept_end = self.kept_end
        attach, inside, end = -1, -1, 0
        for key, length in zip(entry.keys.tolist(), entry.lengths.tolist(), strict=True):
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

    def _forest(self, attach: np.ndarray, q: list[int], seq_lens: np.ndarray, row_base: np.ndarray
                ) -> PrefixForest | None:
        """The forest of the kept nodes (``q`` requests each) and one leaf per request under ``attach``; ``None``
        if a leaf would be empty or the members do not add up to ``q``."""
        old = self.forest
        n = attach.shape[0]
        num_kept = len(q)
        seq = np.asarray(seq_lens, dtype=np.int64)
        row = attach + 1
        leaf_start = self.kept_end[row]
        leaf_tok = seq - leaf_start
        if int(leaf_tok.min()) < 1:
            return None
        if num_kept:
            anc = self.ancestors[row]
            node = anc[anc >= 0]  # per request, its kept nodes (request-major)
            kept_q = np.bincount(node, minlength=num_kept)
            if kept_q.tolist() != q:
                return None
            key = node * n + np.repeat(np.arange(n, dtype=np.int64), self.num_ancestors[row])
            key.sort()
            req_flat = np.concatenate([key - (key // n) * n, np.arange(n, dtype=np.int64)])
            counts = np.concatenate([kept_q, np.ones(n, dtype=np.int64)])
        else:
            req_flat = np.arange(n, dtype=np.int64)
            counts = np.ones(n, dtype=np.int64)
        req_ptr = np.zeros(num_kept + n + 1, dtype=np.int64)
        np.cumsum(counts, out=req_ptr[1:])
        k = slice(0, num_kept)
        return PrefixForest(
            np.concatenate([old.tok[k], leaf_tok]),
            np.concatenate([old.start[k], leaf_start]),
            np.concatenate([old.parent[k], attach]),
            np.concatenate([old.depth[k], self.num_ancestors[row]]),
            req_ptr,
            req_flat,
            np.asarray(row_base, dtype=np.int64),
            seq,
        )
