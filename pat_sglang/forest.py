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

import itertools
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


@dataclass(eq=False)
class ForestArrays:
    """The forest as flat int64 arrays (node ``i`` of ``PrefixForest.nodes`` is index ``i``), for the planner.

    Built once per forest (by the vectorised builders, or on first use from ``nodes``); the nodes are treated as
    read-only afterwards."""

    tok: np.ndarray  # [N] tokens per node
    parent: np.ndarray  # [N] parent node, -1 for roots
    depth: np.ndarray  # [N]
    q: np.ndarray  # [N] requests per node
    req_ptr: np.ndarray  # [N + 1] indptr into req_flat
    req_flat: np.ndarray  # [E] each node's sorted requests, nodes in order
    entry_node: np.ndarray  # [E] the node of each req_flat entry
    ends_here: np.ndarray  # bool [E]: the entry's node is the request's last (deepest) node
    ending: np.ndarray  # [N] requests whose last node this is
    slot_ptr: np.ndarray  # [N + 1] indptr into slots_flat
    slots_flat: np.ndarray | None  # int64, every node's slots, nodes in order; None: made from slots32 on first use
    slot_max: int  # -1 if there are no slots
    req32: np.ndarray  # req_flat as int32
    slots32: np.ndarray | None  # slots_flat as int32; None if a slot does not fit
    shared_q: np.ndarray  # q of the nodes with more than one request
    shared_tok: np.ndarray  # tok of those nodes
    unique_tokens: int
    request_tokens: int
    nodes: list[ForestNode] | None = field(repr=False, default=None)  # the list these arrays describe, once made

    @staticmethod
    def from_nodes(nodes: list[ForestNode], num_requests: int, request_lengths: np.ndarray) -> ForestArrays:
        n = len(nodes)
        tok = np.fromiter((x.slots.shape[0] for x in nodes), dtype=np.int64, count=n)
        parent = np.fromiter((x.parent for x in nodes), dtype=np.int64, count=n)
        depth = np.fromiter((x.depth for x in nodes), dtype=np.int64, count=n)
        q = np.fromiter((len(x.requests) for x in nodes), dtype=np.int64, count=n)
        req_ptr = _indptr(q)
        every_request = itertools.chain.from_iterable(x.requests for x in nodes)
        req_flat = np.fromiter(every_request, dtype=np.int64, count=int(req_ptr[-1]))
        slots_flat = (
            np.concatenate([x.slots for x in nodes]).astype(np.int64, copy=False) if n else np.zeros(0, np.int64)
        )
        return ForestArrays.build(tok, parent, depth, q, req_ptr, req_flat, slots_flat, num_requests,
                                  request_lengths, nodes)

    def slots64(self) -> np.ndarray:
        """``slots_flat``, made from ``slots32`` the first time if the forest was built without it."""
        if self.slots_flat is None:
            self.slots_flat = self.slots32.astype(np.int64)
        return self.slots_flat

    def to_nodes(self) -> list[ForestNode]:
        """The ``ForestNode`` list these arrays describe (slots are views of ``slots_flat``)."""
        parents = self.parent.tolist()
        children: list[list[int]] = [[] for _ in parents]
        for i, p in enumerate(parents):
            if p >= 0:
                children[p].append(i)
        sp = self.slot_ptr.tolist()
        rp = self.req_ptr.tolist()
        reqs = self.req_flat.tolist()
        flat = self.slots64()
        return list(
            map(
                ForestNode,
                [flat[a:b] for a, b in zip(sp[:-1], sp[1:], strict=True)],
                [reqs[a:b] for a, b in zip(rp[:-1], rp[1:], strict=True)],
                parents,
                children,
                self.depth.tolist(),
            )
        )

    @staticmethod
    def build(tok, parent, depth, q, req_ptr, req_flat, slots_flat, num_requests, request_lengths, nodes):
        entry_node = np.repeat(np.arange(tok.shape[0]), q)
        last = np.full(num_requests, -1, dtype=np.int64)
        np.maximum.at(last, req_flat, entry_node)  # nodes are topological: the deepest has the largest index
        ends_here = last[req_flat] == entry_node
        ending = np.bincount(entry_node[ends_here], minlength=tok.shape[0])
        slot_max = int(slots_flat.max()) if slots_flat.shape[0] else -1
        shared = q > 1
        return ForestArrays(
            tok=tok,
            parent=parent,
            depth=depth,
            q=q,
            req_ptr=req_ptr,
            req_flat=req_flat,
            entry_node=entry_node,
            ends_here=ends_here,
            ending=ending,
            slot_ptr=_indptr(tok),
            slots_flat=slots_flat,
            slot_max=slot_max,
            req32=req_flat.astype(np.int32),
            slots32=slots_flat.astype(np.int32) if slot_max <= np.iinfo(np.int32).max else None,
            shared_q=q[shared],
            shared_tok=tok[shared],
            unique_tokens=int(tok.sum()),
            request_tokens=int(np.asarray(request_lengths).sum()),
            nodes=nodes,
        )


class PrefixForest:
    """Nodes in topological order (a parent always precedes its children).

    The vectorised builders (``from_flat``, ``from_chains``, ``with_grown_leaves``) make the flat arrays
    (``ForestArrays``) first and the ``ForestNode`` list only when ``nodes`` is first read; the planner and the
    backend's per-step path never read it. A forest built from a node list (``PrefixForest(nodes, ...)``) makes
    its arrays on first use. Either way the forest is read-only once both exist."""

    __slots__ = ("_nodes", "_fa", "num_requests", "request_lengths")

    def __init__(self, nodes: list[ForestNode] | None, num_requests: int, request_lengths: np.ndarray) -> None:
        self._nodes = nodes
        self._fa: ForestArrays | None = None
        self.num_requests = num_requests
        self.request_lengths = request_lengths  # int64 [num_requests], KV tokens per request

    @classmethod
    def _of_arrays(cls, fa: ForestArrays, num_requests: int, request_lengths: np.ndarray) -> PrefixForest:
        forest = cls(None, num_requests, request_lengths)
        forest._fa = fa
        return forest

    @property
    def nodes(self) -> list[ForestNode]:
        if self._nodes is None:
            self._nodes = self._fa.to_nodes()
            self._fa.nodes = self._nodes
        return self._nodes

    @nodes.setter
    def nodes(self, value: list[ForestNode]) -> None:
        self._nodes = value

    def __repr__(self) -> str:
        n = len(self._nodes) if self._nodes is not None else self._fa.tok.shape[0]
        return f"PrefixForest({n} nodes, {self.num_requests} requests, {int(self.request_lengths.sum())} tokens)"

    # ------------------------------------------------------------------ construction
    @staticmethod
    def from_flat(kv_indptr: Sequence[int] | np.ndarray, kv_indices: Sequence[int] | np.ndarray) -> PrefixForest:
        indptr = _as_int64(kv_indptr, "kv_indptr")
        indices = _as_index_array(kv_indices, "kv_indices")
        num_requests = _check_indptr(indptr, indices.shape[0])
        lengths = np.diff(indptr)
        empty = np.flatnonzero(lengths == 0)
        if empty.shape[0]:
            raise ValueError(f"request {int(empty[0])} has no KV tokens (sequence length 0)")
        return _flat_forest(indices, indptr[: num_requests + 1], lengths)

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
        forest = _chains_forest(chains, tails)
        if forest is None:  # inputs the fast path does not take (or bad ones): the checked path, exact errors
            forest = _chains_forest_checked(chains, tails)
        return forest

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

    def _arrays(self) -> ForestArrays:
        """The forest as flat arrays (cached; the nodes must not be edited after the first call)."""
        arrays = self._fa
        nodes = self._nodes
        if arrays is None or (
            nodes is not None and (arrays.nodes is not nodes or len(nodes) != arrays.tok.shape[0])
        ):
            arrays = ForestArrays.from_nodes(nodes, self.num_requests, self.request_lengths)
            self._fa = arrays
        return arrays

    def with_grown_leaves(
        self, leaf_nodes: np.ndarray, new_slots: np.ndarray, last_slots: np.ndarray | None = None
    ) -> PrefixForest:
        """A new forest: this one with ``new_slots[i]`` appended to node ``leaf_nodes[i]`` (a node of exactly one
        request, which in canonical form is a leaf) and that request one token longer. The common decode step.

        ``last_slots`` (optional): first replace each leaf's current last slot with ``last_slots[i]`` (the backend's
        placeholders for tokens not yet known on the host when the leaf was grown). Equal to ``from_flat`` on the
        grown rows; the flat arrays are updated with numpy (no per-leaf Python) and this forest is not changed."""
        fa = self._arrays()
        leaf = np.asarray(leaf_nodes, dtype=np.int64)
        k = leaf.shape[0]
        new = _as_int64(new_slots, "new_slots")
        if new.shape[0] != k:
            raise ValueError(f"{k} leaves but {new.shape[0]} new slots")
        n_nodes = fa.tok.shape[0]
        if k and (int(leaf.min()) < 0 or int(leaf.max()) >= n_nodes):
            raise ValueError(f"leaf node index outside 0..{n_nodes - 1}")
        if k and (fa.q[leaf] != 1).any():
            raise ValueError("with_grown_leaves: every grown node must hold exactly one request")
        grow = np.zeros(n_nodes, dtype=np.int64)
        grow[leaf] = 1
        if int(grow.sum()) != k:
            raise ValueError("with_grown_leaves: a leaf node is listed twice")
        top = int(new.max()) if k else -1  # the largest slot written
        last = None
        if last_slots is not None:
            last = _as_int64(last_slots, "last_slots")
            if last.shape[0] != k:
                raise ValueError(f"{k} leaves but {last.shape[0]} last slots")
            if k:
                top = max(top, int(last.max()))
        # Work on the int32 slots (what the planner reads) while everything fits; int64 only beyond.
        narrow = fa.slots32 is not None and top <= _INT32_MAX
        src = fa.slots32 if narrow else fa.slots64()
        gone = False  # the largest slot was replaced
        if last is not None and k:
            old_last = fa.slot_ptr[leaf + 1] - 1
            gone = bool((src[old_last] == fa.slot_max).any())
            src = src.copy()
            src[old_last] = last
        tok = fa.tok + grow
        slot_ptr = _indptr(tok)
        total = src.shape[0] + k
        flat = np.empty(total, dtype=src.dtype)
        new_pos = slot_ptr[leaf + 1] - 1
        keep = np.ones(total, dtype=bool)
        keep[new_pos] = False
        flat[keep] = src
        flat[new_pos] = new
        if not gone:
            slot_max = max(fa.slot_max, top)
        elif top >= fa.slot_max:  # every slot kept is at most the old largest
            slot_max = top
        else:
            slot_max = int(flat.max())
        if narrow:
            slots32, slots64 = flat, None
        else:
            slots32, slots64 = (flat.astype(np.int32) if slot_max <= _INT32_MAX else None), flat
        lengths = self.request_lengths.copy()
        reqs = fa.req_flat[fa.req_ptr[leaf]]
        lengths[reqs] += 1
        grown = ForestArrays(
            tok=tok,
            parent=fa.parent,
            depth=fa.depth,
            q=fa.q,
            req_ptr=fa.req_ptr,
            req_flat=fa.req_flat,
            entry_node=fa.entry_node,
            ends_here=fa.ends_here,
            ending=fa.ending,
            slot_ptr=slot_ptr,
            slots_flat=slots64,
            slot_max=slot_max,
            req32=fa.req32,
            slots32=slots32,
            shared_q=fa.shared_q,
            shared_tok=fa.shared_tok,
            unique_tokens=fa.unique_tokens + k,
            request_tokens=fa.request_tokens + k,
            nodes=None,
        )
        return PrefixForest._of_arrays(grown, self.num_requests, lengths)

    def canonical_key(self) -> frozenset:
        """A value equal for two forests that describe the same sharing of the same slots."""

        def path_key(i: int) -> tuple:
            out = []
            while i >= 0:
                out.append(tuple(self.nodes[i].slots.tolist()))
                i = self.nodes[i].parent
            return tuple(reversed(out))

        return frozenset((path_key(i), tuple(n.requests)) for i, n in enumerate(self.nodes))


def _chains_forest_checked(
    chains: Sequence[Sequence[tuple[Hashable, np.ndarray]]], tails: Sequence[np.ndarray]
) -> PrefixForest:
    """``from_chains`` for any input: converts and checks every run as it goes, raising the first problem."""
    num_requests = len(chains)
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


_FAST_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))
_INT32_MAX = int(np.iinfo(np.int32).max)


def _chains_forest(
    chains: Sequence[Sequence[tuple[Hashable, np.ndarray]]], tails: Sequence[np.ndarray]
) -> PrefixForest | None:
    """``from_chains`` for 1-D int32/int64 numpy runs with cheap checks (a repeated node's runs compared as
    bytes, negatives checked once at the end); None if the input is anything else or fails a check (the caller
    then takes the checked path, which raises the error)."""
    num_requests = len(chains)
    builder = _Builder(num_requests)
    nodes = builder.nodes
    by_id: dict[tuple[int, Hashable], int] = {}
    lengths = np.zeros(num_requests, dtype=np.int64)
    stored_bytes: dict[int, bytes] = {}  # node -> its slots' bytes, once another request repeats the node
    ndarray = np.ndarray
    for r, (chain, tail) in enumerate(zip(chains, tails, strict=True)):
        parent = -1
        total = 0
        for node_id, slots in chain:
            if type(slots) is not ndarray or slots.ndim != 1 or slots.dtype not in _FAST_DTYPES:
                return None
            n = slots.shape[0]
            if n == 0:
                continue
            key = (parent, node_id)
            idx = by_id.get(key)
            if idx is None:
                idx = builder.add(slots.astype(np.int64, copy=False), parent)
                by_id[key] = idx
            else:
                stored = nodes[idx].slots
                if stored is not slots:
                    if stored.shape[0] != n:
                        return None
                    if slots.dtype is stored.dtype or slots.dtype == stored.dtype:  # memcmp of the runs
                        raw = stored_bytes.get(idx)
                        if raw is None:
                            raw = stored_bytes[idx] = stored.tobytes()
                        if slots.tobytes() != raw:
                            return None
                    elif not np.array_equal(stored, slots):
                        return None
            nodes[idx].requests.append(r)
            total += n
            parent = idx
        if type(tail) is not ndarray or tail.ndim != 1 or tail.dtype not in _FAST_DTYPES:
            return None
        if tail.shape[0]:
            idx = builder.add(tail.astype(np.int64, copy=False), parent)
            nodes[idx].requests.append(r)
            total += tail.shape[0]
        if total == 0:
            return None
        lengths[r] = total
    if nodes and int(np.concatenate([n.slots for n in nodes]).min()) < 0:
        return None
    return builder.finish(lengths)


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
        nodes = _fuse_chains(self.nodes)
        # The planner's flat arrays, made here from the fused nodes (the first plan_forest does not rebuild them).
        forest = PrefixForest(nodes, self.num_requests, lengths)
        forest._fa = ForestArrays.from_nodes(nodes, self.num_requests, lengths)
        return forest


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


def _indptr(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
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


def _as_index_array(x: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """``_as_int64`` (same checks and errors) that keeps int32 and int64 arrays as they are."""
    if hasattr(x, "detach"):  # torch tensor, any device
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.int32 and arr.dtype != np.int64:
        return _as_int64(arr, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] and int(arr.min()) < 0:
        raise ValueError(f"{name} holds a negative index ({int(arr.min())})")
    return np.ascontiguousarray(arr)


def _flat_forest(ind: np.ndarray, indptr: np.ndarray, lengths: np.ndarray) -> PrefixForest:
    """The canonical forest of the rows ``ind[indptr[r]:indptr[r + 1]]`` (all non-empty), built one tree level
    at a time over all groups at once.

    A group is a set of requests that agree on their first ``start`` slots and share the slot at ``start``; it is
    one node, which ends at the first position where two of its rows differ or a row ends. Members are kept in
    request order, so a group's first member is its smallest request. Two rows agree on ``[start, x)`` for all
    pairs iff every two neighbours (in any order) do, so the node end is the minimum over neighbouring rows of
    their first difference: one shifted comparison of the gathered rows. The rows of a node's children are then
    grouped by their slot at the node end."""
    num_requests = lengths.shape[0]
    starts = indptr[:-1]
    first = ind[starts]
    members = first.argsort(kind="stable")
    keys = first[members]
    gptr = _boundaries(keys[1:] != keys[:-1], num_requests)
    gstart = np.zeros(gptr.shape[0] - 1, dtype=np.int64)
    gparent = np.full(gptr.shape[0] - 1, -1, dtype=np.int64)
    levels = []  # per level: (start, end, parent, members, member indptr)
    num_nodes = 0
    while gstart.shape[0]:
        num_groups = gstart.shape[0]
        gsize = np.diff(gptr)
        gid = np.arange(num_groups).repeat(gsize)
        row_start = starts[members] + gstart[gid]  # where each member's run in this group begins in ind
        end = np.minimum.reduceat(lengths[members], gptr[:-1])
        multi = gsize > 1
        if multi.any():
            sel = np.flatnonzero(multi[gid])
            width = int((end - gstart)[multi].max())
            src = ind
            need = int(row_start[sel].max()) + width
            if need > ind.shape[0]:
                src = np.concatenate([ind, np.zeros(need - ind.shape[0], dtype=ind.dtype)])
            view = np.lib.stride_tricks.as_strided(
                src, shape=(src.shape[0] - width + 1, width), strides=(src.strides[0], src.strides[0])
            )
            rows = view[row_start[sel]]
            diff = rows[1:] != rows[:-1]
            at = diff.argmax(axis=1)
            at[~diff[np.arange(at.shape[0]), at]] = width  # no difference within the window
            pair_gid = gid[sel]
            same = pair_gid[1:] == pair_gid[:-1]
            pg = pair_gid[1:][same]
            np.minimum.at(end, pg, gstart[pg] + at[same])
        node_ids = num_nodes + np.arange(num_groups)
        levels.append((gstart, end, gparent, members, gptr))
        num_nodes += num_groups
        # children: members that go on past the node end, grouped by (node, slot at the end)
        cont = lengths[members] > end[gid]
        members, cgid = members[cont], gid[cont]
        cend = end[cgid]
        slot = ind[starts[members] + cend]
        order = np.lexsort((slot, cgid))
        members, cgid, slot = members[order], cgid[order], slot[order]
        gptr = _boundaries((cgid[1:] != cgid[:-1]) | (slot[1:] != slot[:-1]), members.shape[0])
        head = cgid[gptr[:-1]]
        gstart = end[head]
        gparent = node_ids[head]

    # --- canonical order: depth-first, children by their smallest request (= a lexicographic sort of the
    # smallest requests along each node's root path)
    depth_count = len(levels)
    path_key = np.full((depth_count, num_nodes), -1, dtype=np.int64)
    n_start, n_end, n_parent, n_depth, n_q, m_flat = [], [], [], [], [], []
    at = 0
    for d, (gs, ge, gp, mem, gp_ptr) in enumerate(levels):
        ids = np.arange(at, at + gs.shape[0])
        rep = mem[gp_ptr[:-1]]
        if d:
            path_key[:d, ids] = path_key[:d, gp]
        path_key[d, ids] = rep
        n_start.append(starts[rep] + gs)
        n_end.append(starts[rep] + ge)
        n_parent.append(gp)
        n_depth.append(np.full(gs.shape[0], d, dtype=np.int64))
        n_q.append(np.diff(gp_ptr))
        m_flat.append(mem)
        at += gs.shape[0]
    order = np.lexsort(path_key[::-1])
    new_id = np.empty(num_nodes, dtype=np.int64)
    new_id[order] = np.arange(num_nodes)
    parent = np.concatenate(n_parent)[order]
    parent = np.where(parent >= 0, new_id[parent], -1)
    depth = np.concatenate(n_depth)[order]
    q_all = np.concatenate(n_q)
    q = q_all[order]
    req_flat = np.concatenate(m_flat)[_ranges(_indptr(q_all)[:-1][order], q)].astype(np.int64)
    seg_start = np.concatenate(n_start)[order]
    tok = np.concatenate(n_end)[order] - seg_start
    slots_flat = ind[_ranges(seg_start, tok)].astype(np.int64)
    req_ptr = _indptr(q)

    fa = ForestArrays.build(tok, parent, depth, q, req_ptr, req_flat, slots_flat, num_requests, lengths, None)
    return PrefixForest._of_arrays(fa, num_requests, lengths)


def _boundaries(change: np.ndarray, n: int) -> np.ndarray:
    """indptr of the runs of a sorted sequence of length ``n`` whose neighbour changes are ``change``."""
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    out = np.empty(int(change.sum()) + 2, dtype=np.int64)
    out[0] = 0
    out[1:-1] = np.flatnonzero(change) + 1
    out[-1] = n
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` over (starts, lengths)."""
    ends = lengths.cumsum()
    total = int(ends[-1]) if ends.shape[0] else 0
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total) + (starts - (ends - lengths)).repeat(lengths)
