"""The prefix forest: which KV runs the decode requests of one step share.

Role in pack-forward-merge: this is the input of the *pack* stage. Each node owns a run of KV token
slots (indices into SGLang's per-layer token pools) and knows which requests of the batch pass through
it; a request's KV is the concatenation of the slots on its root-to-leaf path. The planner turns nodes
into packs (one KV read serving many queries).

Two ways in:
* ``PrefixForest.from_flat(kv_indptr, kv_indices)``: the FlashInfer/SGLang flat convention. Sharing is
  detected by identical leading slots (requests that share a cached prefix hold the same physical
  slots at the front of their ``req_to_token`` rows).
* ``PrefixForest.from_chains(chains)``: per request, a chain of (node id, slots) from the radix tree
  followed by a private tail. Nodes with the same id are one node.

Both produce the canonical form: a node never has exactly one child with the same request set (such
chains are fused), and no node is empty. Two forests describing the same sharing compare equal with
``canonical_key()``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ForestNode:
    """One KV segment shared by ``requests`` (sorted request indices of the batch)."""

    slots: np.ndarray  # int64 token-slot indices, in sequence order
    requests: list[int]
    parent: int = -1
    children: list[int] = field(default_factory=list)
    depth: int = 0

    @property
    def num_tokens(self) -> int:
        return int(self.slots.shape[0])


@dataclass
class PrefixForest:
    """Nodes in topological order (a parent always precedes its children)."""

    nodes: list[ForestNode]
    num_requests: int
    request_lengths: np.ndarray  # int64 [num_requests], KV tokens per request

    # ------------------------------------------------------------------ construction
    @staticmethod
    def from_flat(kv_indptr: Sequence[int] | np.ndarray, kv_indices: Sequence[int] | np.ndarray) -> PrefixForest:
        indptr = _as_int64(kv_indptr, "kv_indptr")
        indices = _as_int64(kv_indices, "kv_indices")
        num_requests = _check_indptr(indptr, indices.shape[0])
        seqs = [indices[indptr[r] : indptr[r + 1]] for r in range(num_requests)]
        builder = _Builder(num_requests)
        builder.split(seqs, list(range(num_requests)), start=0, parent=-1)
        return builder.finish(np.diff(indptr))

    @staticmethod
    def from_chains(
        chains: Sequence[Sequence[tuple[Hashable, np.ndarray]]], tails: Sequence[np.ndarray]
    ) -> PrefixForest:
        """Build from radix-tree chains: ``chains[r]`` lists (node id, slots) from the root down for request
        ``r``; ``tails[r]`` holds its private slots beyond the last cached node."""
        if len(chains) != len(tails):
            raise ValueError(f"chains ({len(chains)}) and tails ({len(tails)}) differ in length")
        num_requests = len(chains)
        if num_requests == 0:
            raise ValueError("empty batch: no requests")
        builder = _Builder(num_requests)
        by_id: dict[tuple[int, Hashable], int] = {}
        lengths = np.zeros(num_requests, dtype=np.int64)
        for r, (chain, tail) in enumerate(zip(chains, tails, strict=True)):
            parent = -1
            for node_id, slots in chain:
                slots = _as_int64(slots, f"chain slots of request {r}")
                if slots.shape[0] == 0:
                    continue
                key = (parent, node_id)
                idx = by_id.get(key)
                if idx is None:
                    idx = builder.add(slots, parent)
                    by_id[key] = idx
                elif not np.array_equal(builder.nodes[idx].slots, slots):
                    raise ValueError(f"radix node {node_id!r} has different slots for request {r}")
                builder.nodes[idx].requests.append(r)
                lengths[r] += slots.shape[0]
                parent = idx
            tail = _as_int64(tail, f"tail of request {r}")
            if tail.shape[0] > 0:
                idx = builder.add(tail, parent)
                builder.nodes[idx].requests.append(r)
                lengths[r] += tail.shape[0]
            if lengths[r] == 0:
                raise ValueError(f"request {r} has no KV tokens (sequence length 0)")
        return builder.finish(lengths)

    # ------------------------------------------------------------------ queries
    def request_slots(self, r: int) -> np.ndarray:
        """Slots of request ``r`` in order (concatenation of its path)."""
        path = [i for i, n in enumerate(self.nodes) if r in n.requests]
        path.sort(key=lambda i: self.nodes[i].depth)
        if not path:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.nodes[i].slots for i in path])

    def unique_tokens(self) -> int:
        return int(sum(n.num_tokens for n in self.nodes))

    def shared_tokens(self) -> int:
        """Tokens in nodes with more than one request."""
        return int(sum(n.num_tokens for n in self.nodes if len(n.requests) > 1))

    def request_tokens(self) -> int:
        return int(self.request_lengths.sum())

    def canonical_key(self) -> frozenset:
        """A value equal for two forests that describe the same sharing of the same slots."""

        def path_key(i: int) -> tuple:
            out = []
            while i >= 0:
                out.append(tuple(self.nodes[i].slots.tolist()))
                i = self.nodes[i].parent
            return tuple(reversed(out))

        return frozenset((path_key(i), tuple(n.requests)) for i, n in enumerate(self.nodes))


class _Builder:
    def __init__(self, num_requests: int) -> None:
        self.num_requests = num_requests
        self.nodes: list[ForestNode] = []

    def add(self, slots: np.ndarray, parent: int) -> int:
        depth = 0 if parent < 0 else self.nodes[parent].depth + 1
        self.nodes.append(ForestNode(slots=slots, requests=[], parent=parent, depth=depth))
        idx = len(self.nodes) - 1
        if parent >= 0:
            self.nodes[parent].children.append(idx)
        return idx

    def split(self, seqs: list[np.ndarray], reqs: list[int], start: int, parent: int) -> None:
        """All of ``reqs`` agree on ``seqs[r][:start]``; emit the common run after it, then recurse."""
        live = [r for r in reqs if seqs[r].shape[0] > start]
        if not live:
            return
        first = seqs[live[0]]
        end = min(seqs[r].shape[0] for r in live)
        for r in live[1:]:
            diff = np.flatnonzero(seqs[r][start:end] != first[start:end])
            if diff.shape[0]:
                end = start + int(diff[0])
        node = parent
        if end > start:
            node = self.add(first[start:end].copy(), parent)
            self.nodes[node].requests.extend(live)
        groups: dict[int, list[int]] = {}
        for r in live:
            if seqs[r].shape[0] > end:
                groups.setdefault(int(seqs[r][end]), []).append(r)
        for group in groups.values():
            self.split(seqs, group, end, node)

    def finish(self, lengths: np.ndarray) -> PrefixForest:
        if self.num_requests == 0:
            raise ValueError("empty batch: no requests")
        lengths = np.asarray(lengths, dtype=np.int64)
        empty = np.flatnonzero(lengths == 0)
        if empty.shape[0]:
            raise ValueError(f"request {int(empty[0])} has no KV tokens (sequence length 0)")
        for n in self.nodes:
            n.requests.sort()
        return PrefixForest(_fuse_chains(self.nodes), self.num_requests, lengths)


def _fuse_chains(nodes: list[ForestNode]) -> list[ForestNode]:
    """Canonical form: fuse a node into its only child when both hold the same requests, and renumber in
    topological order."""
    alive = [True] * len(nodes)
    for i, n in enumerate(nodes):
        if not alive[i]:
            continue
        while len(n.children) == 1 and nodes[n.children[0]].requests == n.requests:
            c = n.children[0]
            child = nodes[c]
            n.slots = np.concatenate([n.slots, child.slots])
            n.children = child.children
            for g in n.children:
                nodes[g].parent = i
            alive[c] = False
    order: list[int] = []
    stack = [i for i, n in enumerate(nodes) if alive[i] and n.parent < 0][::-1]
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(reversed(nodes[i].children))
    new_id = {old: new for new, old in enumerate(order)}
    out = []
    for old in order:
        n = nodes[old]
        parent = new_id[n.parent] if n.parent >= 0 else -1
        depth = 0 if parent < 0 else out[parent].depth + 1
        out.append(ForestNode(n.slots, n.requests, parent, [new_id[c] for c in n.children], depth))
    return out


def _as_int64(x: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, any device
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] and int(arr.min()) < 0:
        raise ValueError(f"{name} holds a negative index ({int(arr.min())})")
    return arr


def _check_indptr(indptr: np.ndarray, num_indices: int) -> int:
    if indptr.shape[0] < 2:
        raise ValueError("empty batch: kv_indptr needs at least two entries")
    if indptr[0] != 0:
        raise ValueError(f"kv_indptr must start at 0, got {int(indptr[0])}")
    if np.any(np.diff(indptr) < 0):
        raise ValueError("kv_indptr must be non-decreasing")
    if indptr[-1] > num_indices:
        raise ValueError(f"kv_indptr ends at {int(indptr[-1])} but kv_indices has {num_indices} entries")
    return int(indptr.shape[0] - 1)
