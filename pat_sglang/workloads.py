"""Synthetic decode batches: prefix trees laid out in a KV pool, exactly as the benchmark anchors define them.

Role in pack-forward-merge: none at run time. Tests and benchmarks build the *input* of the pack stage here:
the flat ``kv_indptr`` / ``kv_indices`` of one decode step (SGLang/FlashInfer convention) whose requests share
KV prefixes in a known tree shape, plus random ``q`` and KV pools in SGLang's layout.

Workload definition (as in the FlashInfer H100 anchor run of 2026-11-24, docs/perf/): ``levels`` lists (nodes,
tokens per node) from the root level down; node ``j`` of a level with ``n`` nodes hangs under node
``j * n_parent // n`` of the level above; one request per node of the last level, whose KV is the concatenation of
its root-to-leaf path.

KV slots come from a pool: with ``page_size == 1`` every token gets a slot drawn from a random permutation of
the pool; with ``page_size > 1`` every node gets whole pages (the pool's pages in a random permutation; the
slots of one page are contiguous, consecutive pages of a node are scattered). Interior nodes must then be a
whole number of pages (a radix cache shares whole pages only); leaves, the private tails, may end mid-page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .forest import PrefixForest

Levels = list[tuple[int, int]]

# The named workloads of the anchors file (a and d take the batch size / length as parameters).
STANDARD_WORKLOADS: dict[str, Levels] = {
    "a32": [(1, 4096), (32, 256)],
    "a64": [(1, 4096), (64, 256)],
    "a128": [(1, 4096), (128, 256)],
    "a256": [(1, 4096), (256, 256)],
    "b": [(1, 2048), (8, 1024), (128, 512)],
    "c": [(16, 1024), (256, 1024)],
    "d64x4096": [(64, 4096)],
    "d256x1024": [(256, 1024)],
    "e": [(1, 1024), (2, 512), (4, 512), (8, 256), (32, 128), (128, 64)],
}

# Human-readable labels, as the anchors file prints them.
WORKLOAD_LABELS: dict[str, str] = {
    "a32": "a: 4096 shared + 256 own, bs 32",
    "a64": "a: 4096 shared + 256 own, bs 64",
    "a128": "a: 4096 shared + 256 own, bs 128",
    "a256": "a: 4096 shared + 256 own, bs 256",
    "b": "b: 2048 / 8x1024 / 512 own, bs 128",
    "c": "c: 16 prompts x16 samples, 1024+1024",
    "d64x4096": "d: no sharing, 64 x 4096",
    "d256x1024": "d: no sharing, 256 x 1024",
    "e": "e: 6 levels",
}


def workload_a(bs: int) -> Levels:
    """A 4096-token shared prefix and 256 private tokens per request."""
    return [(1, 4096), (bs, 256)]


def workload_d(bs: int, length: int) -> Levels:
    """No sharing: ``bs`` requests of ``length`` private tokens."""
    return [(bs, length)]


@dataclass
class Tree:
    """A prefix tree: node ``i`` has ``parents[i]`` (-1 = root; parents precede children) and ``lengths[i]``
    tokens; request ``r`` reads the path from a root down to node ``request_nodes[r]`` (a leaf or not)."""

    parents: list[int]
    lengths: list[int]
    request_nodes: list[int]

    def __post_init__(self) -> None:
        if len(self.parents) != len(self.lengths):
            raise ValueError(f"parents ({len(self.parents)}) and lengths ({len(self.lengths)}) differ in length")
        for i, p in enumerate(self.parents):
            if not -1 <= p < i:
                raise ValueError(f"node {i}: parent {p} must be -1 or an earlier node")
        if any(n < 0 for n in self.lengths):
            raise ValueError("node lengths must be >= 0")
        if not self.request_nodes:
            raise ValueError("a tree needs at least one request")
        for r, n in enumerate(self.request_nodes):
            if not 0 <= n < len(self.parents):
                raise ValueError(f"request {r} ends at node {n}, which does not exist")

    @property
    def num_nodes(self) -> int:
        return len(self.parents)

    @property
    def num_requests(self) -> int:
        return len(self.request_nodes)

    def path(self, node: int) -> list[int]:
        """Node ids from the root down to ``node``."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def has_children(self) -> list[bool]:
        out = [False] * self.num_nodes
        for p in self.parents:
            if p >= 0:
                out[p] = True
        return out

    def request_lengths(self) -> list[int]:
        return [sum(self.lengths[n] for n in self.path(r)) for r in self.request_nodes]

    def unique_tokens(self) -> int:
        """Tokens of the nodes some request reads (each once)."""
        used: set[int] = set()
        for r in self.request_nodes:
            used.update(self.path(r))
        return sum(self.lengths[n] for n in used)

    def request_tokens(self) -> int:
        return sum(self.request_lengths())


def tree_from_levels(levels: Sequence[tuple[int, int]]) -> Tree:
    """The anchors' level tree: node ``j`` of a level with ``n`` nodes under node ``j * n_parent // n``."""
    if not levels:
        raise ValueError("levels must not be empty")
    parents: list[int] = []
    lengths: list[int] = []
    prev_base, prev_n = -1, 0
    for depth, (n, tokens) in enumerate(levels):
        if n < 1 or tokens < 0:
            raise ValueError(f"level {depth}: need >= 1 nodes and >= 0 tokens, got ({n}, {tokens})")
        if depth and n < prev_n:
            raise ValueError(f"level {depth} has {n} nodes, fewer than the {prev_n} above it")
        base = len(parents)
        for j in range(n):
            parents.append(-1 if depth == 0 else prev_base + j * prev_n // n)
            lengths.append(int(tokens))
        prev_base, prev_n = base, n
    return Tree(parents, lengths, list(range(prev_base, prev_base + prev_n)))


@dataclass
class DecodeBatch:
    """One decode step's KV layout. ``node_slots[i]`` are the slots of tree node ``i`` (int64)."""

    kv_indptr: torch.Tensor  # int32 [batch + 1]
    kv_indices: torch.Tensor  # int32 [total request tokens]
    num_slots: int  # pool size: every index is < num_slots
    tree: Tree
    node_slots: list[np.ndarray]
    page_size: int

    @property
    def batch(self) -> int:
        return int(self.kv_indptr.shape[0] - 1)

    def unique_tokens(self) -> int:
        return self.tree.unique_tokens()

    def request_tokens(self) -> int:
        return int(self.kv_indptr[-1])

    def chains(self) -> tuple[list[list[tuple[int, np.ndarray]]], list[np.ndarray]]:
        """Radix-like view for ``PrefixForest.from_chains``: per request, (node id, slots) of the nodes of its path;
        the last node becomes the request's private tail when it is a leaf that no other request ends at (a radix
        cache never shares a tail), otherwise it stays in the chain and the tail is empty."""
        inner = self.tree.has_children()
        ends = np.bincount(np.asarray(self.tree.request_nodes), minlength=self.tree.num_nodes)
        chains, tails = [], []
        for r in self.tree.request_nodes:
            path = self.tree.path(r)
            if inner[r] or ends[r] > 1:
                chains.append([(n, self.node_slots[n]) for n in path])
                tails.append(np.zeros(0, dtype=np.int64))
            else:
                chains.append([(n, self.node_slots[n]) for n in path[:-1]])
                tails.append(self.node_slots[path[-1]])
        return chains, tails


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def layout_tree(
    tree: Tree,
    page_size: int = 1,
    rng: np.random.Generator | int | None = 0,
    num_slots: int | None = None,
) -> DecodeBatch:
    """Allocate KV slots for every node of ``tree`` from a pool (see the module docstring) and flatten."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    gen = _rng(rng)
    interior = tree.has_children()
    if page_size > 1:
        for i, (n, inner) in enumerate(zip(tree.lengths, interior, strict=False)):
            if inner and n % page_size:
                raise ValueError(f"node {i} has children but {n} tokens, not a multiple of page_size {page_size}")
    pages_of = [-(-n // page_size) for n in tree.lengths]
    need = sum(pages_of) * page_size
    if num_slots is None:
        num_slots = need
    if num_slots < need:
        raise ValueError(f"pool of {num_slots} slots cannot hold {need} slots of pages")
    perm = gen.permutation(num_slots // page_size).astype(np.int64)
    node_slots: list[np.ndarray] = []
    at = 0
    within = np.arange(page_size, dtype=np.int64)
    for n, pages in zip(tree.lengths, pages_of, strict=False):
        mine = perm[at : at + pages]
        at += pages
        node_slots.append((mine[:, None] * page_size + within[None, :]).reshape(-1)[:n])
    seqs = [np.concatenate([node_slots[n] for n in tree.path(r)]) for r in tree.request_nodes]
    lens = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    indptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(lens)
    indices = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    if num_slots > np.iinfo(np.int32).max:
        raise ValueError("pool too large for int32 indices")
    return DecodeBatch(
        kv_indptr=torch.from_numpy(indptr.astype(np.int32)),
        kv_indices=torch.from_numpy(indices.astype(np.int32)),
        num_slots=int(num_slots),
        tree=tree,
        node_slots=node_slots,
        page_size=page_size,
    )


def tree_batch(
    levels: Sequence[tuple[int, int]],
    page_size: int = 1,
    rng: np.random.Generator | int | None = 0,
    num_slots: int | None = None,
) -> DecodeBatch:
    """The anchors' workload ``levels`` as one decode batch (``.kv_indptr``, ``.kv_indices``, ``.num_slots``)."""
    return layout_tree(tree_from_levels(levels), page_size, rng, num_slots)


def standard_batch(name: str, page_size: int = 1, rng: np.random.Generator | int | None = 0) -> DecodeBatch:
    if name not in STANDARD_WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(STANDARD_WORKLOADS)}")
    return tree_batch(STANDARD_WORKLOADS[name], page_size, rng)


@dataclass(frozen=True)
class ServingWindow:
    """The running batch of a closed-loop serving point of SGLang's ``generated-shared-prefix`` dataset, as a tree
    (``bench/tile_sweep.py`` makes them from the serving sweep's own workload definitions):
    ``num_groups`` system prompts of ``prefix_tokens`` each, ``prompts_per_group`` requests per group with
    ``question_tokens`` of their own, listed group by group (``ordered``, bench_serving's ``--gsp-ordered``) or
    shuffled (its default); the batch is ``batch`` consecutive requests of that list, each having generated
    0..``max_generated`` tokens so far (uniform: at steady state the requests of a window are at every stage)."""

    num_groups: int
    prompts_per_group: int
    batch: int
    prefix_tokens: int
    question_tokens: int
    max_generated: int
    ordered: bool = False

    def tree(self, rng: np.random.Generator | int | None = 0) -> Tree:
        """One node per system prompt present in the window, one leaf per request (question + generated tokens)."""
        gen = _rng(rng)
        total = self.num_groups * self.prompts_per_group
        if not 0 < self.batch <= total:
            raise ValueError(f"batch {self.batch} must be in 1..{total} (groups x prompts per group)")
        groups = np.repeat(np.arange(self.num_groups), self.prompts_per_group)
        if not self.ordered:
            gen.shuffle(groups)
        start = int(gen.integers(0, total - self.batch + 1))
        parents: list[int] = []
        lengths: list[int] = []
        node_of_group: dict[int, int] = {}
        leaves: list[int] = []
        for g in groups[start : start + self.batch].tolist():
            if g not in node_of_group:
                node_of_group[g] = len(parents)
                parents.append(-1)
                lengths.append(self.prefix_tokens)
            leaves.append(len(parents))
            parents.append(node_of_group[g])
            lengths.append(self.question_tokens + int(gen.integers(0, self.max_generated + 1)))
        return Tree(parents, lengths, leaves)


def random_tree(
    rng: np.random.Generator | int | None,
    max_depth: int = 4,
    max_requests: int = 32,
    max_len: int = 256,
    page_size: int = 1,
    max_request_tokens: int | None = None,
    p_inner_request: float = 0.1,
    p_duplicate: float = 0.05,
) -> Tree:
    """A random, generally asymmetric prefix forest for tests.

    Depth 1..``max_depth`` (siblings may end at different depths), 1..``max_requests`` requests with differing
    query counts per subtree, node lengths 0..``max_len`` (interior ones a multiple of ``page_size``; a node may
    be empty). Some requests end at an interior node (their KV is a prefix of another request's) and some leaves
    hold two requests (identical KV), both legal inputs. If ``max_request_tokens`` is given, the sum of all
    requests' KV lengths stays under about that (lengths are scaled down). Every request has >= 1 token.
    """
    gen = _rng(rng)
    depth = int(gen.integers(1, max_depth + 1))
    target = int(gen.integers(1, max_requests + 1))
    parents: list[int] = []
    level_of: list[int] = []
    frontier: list[int] = []
    for _ in range(int(gen.integers(1, 4))):
        parents.append(-1)
        level_of.append(0)
        frontier.append(len(parents) - 1)
    # Grow: pick random frontier nodes to extend until the depth or the leaf budget is reached.
    leaves_budget = max(1, target)
    while frontier and len(frontier) < leaves_budget:
        i = int(gen.integers(0, len(frontier)))
        node = frontier[i]
        if level_of[node] + 1 >= depth:
            if all(level_of[f] + 1 >= depth for f in frontier):
                break
            continue
        frontier.pop(i)
        kids = int(gen.integers(1, 5))
        for _ in range(kids):
            parents.append(node)
            level_of.append(level_of[node] + 1)
            frontier.append(len(parents) - 1)
    has_kids = [False] * len(parents)
    for p in parents:
        if p >= 0:
            has_kids[p] = True
    lengths: list[int] = []
    for i in range(len(parents)):
        n = int(gen.integers(0, max_len + 1))
        if has_kids[i] and page_size > 1:
            n = (n // page_size) * page_size
        lengths.append(n)
    leaves = [i for i in range(len(parents)) if not has_kids[i]][:max_requests]
    request_nodes = list(leaves)
    inner = [i for i in range(len(parents)) if has_kids[i]]
    for i in inner:
        if len(request_nodes) < max_requests and gen.random() < p_inner_request:
            request_nodes.append(i)
    for leaf in leaves:
        if len(request_nodes) < max_requests and gen.random() < p_duplicate:
            request_nodes.append(leaf)
    gen.shuffle(request_nodes)
    tree = Tree(parents, lengths, request_nodes)
    if max_request_tokens is not None:
        total = tree.request_tokens()
        if total > max_request_tokens:
            scale = max_request_tokens / total
            for i in range(len(lengths)):
                n = int(lengths[i] * scale)
                if has_kids[i] and page_size > 1:
                    n = (n // page_size) * page_size
                lengths[i] = n
    # Every request needs KV: give an empty path a token in its last node (a tail if it is a leaf, else a page).
    for r in request_nodes:
        if sum(lengths[n] for n in tree.path(r)) == 0:
            lengths[r] = page_size if has_kids[r] else 1
    return Tree(parents, lengths, request_nodes)


def make_qkv(
    batch: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    num_slots: int,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (standard normal, never zero-filled) ``q [batch, hq, d]`` and KV pools ``[num_slots, hkv, d]``."""
    if num_q_heads % num_kv_heads:
        raise ValueError(f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    low = dtype in (torch.bfloat16, torch.float16)
    make = torch.float32 if low else dtype

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=make, device=device).to(dtype)

    q = randn(batch, num_q_heads, head_dim)
    k = randn(num_slots, num_kv_heads, head_dim)
    v = randn(num_slots, num_kv_heads, head_dim)
    return q, k, v


@dataclass
class RowBatch:
    """A decode batch laid out the way SGLang holds it: request ``r``'s KV slots at the front of row ``rows[r]`` of
    a 2-D slot table (``req_to_token``; row 0, SGLang's padding row, holds one slot), with room behind every request
    for the tokens later decode steps append (``grow``). ``forest``: the batch's sharing at ``seq_lens``, rows at
    ``row_base = rows * row_stride``, no host slot table (as the serving path builds it): plan it with
    ``plan_forest(forest, ..., slot_table=batch.slot_table(), row_stride=batch.row_stride)``."""

    table: np.ndarray  # int32 [num_rows, row_stride]
    rows: np.ndarray  # int64 [batch]
    seq_lens: np.ndarray  # int64 [batch]
    forest: PrefixForest
    num_slots: int  # every slot in the table is below this

    @property
    def row_stride(self) -> int:
        return int(self.table.shape[1])

    def slot_table(self) -> torch.Tensor:
        """The table flattened (int32, 1-D), as the plan addresses it: a view of ``table``."""
        return torch.from_numpy(self.table.reshape(-1))

    def grow(self, counts: Sequence[int] | np.ndarray) -> RowBatch:
        """Later decode steps: request ``r`` gets ``counts[r]`` new private slots (fresh, above ``num_slots``) after its
        last token, written into the same table (so a plan over ``slot_table()`` sees them). The forest is kept
        (the one planned); the lengths grow."""
        counts = np.asarray(counts, dtype=np.int64)
        fresh = self.num_slots
        for r, (row, n, k) in enumerate(zip(self.rows.tolist(), self.seq_lens.tolist(), counts.tolist(), strict=True)):
            if n + k > self.row_stride:
                raise ValueError(f"request {r} would grow past its row ({n} + {k} > {self.row_stride})")
            self.table[row, n : n + k] = fresh + np.arange(k)
            fresh += k
        return RowBatch(self.table, self.rows, self.seq_lens + counts, self.forest, fresh)

    def kv_flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kv_indptr, kv_indices) of the requests' rows at ``seq_lens`` (for ``naive_decode``)."""
        indptr = np.zeros(self.rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(self.seq_lens, out=indptr[1:])
        flat = np.concatenate([self.table[row, :n] for row, n in zip(self.rows, self.seq_lens, strict=True)])
        return torch.from_numpy(indptr), torch.from_numpy(flat.astype(np.int64))


def row_batch(
    batch: DecodeBatch, room: int, rng: np.random.Generator | int | None = 0, private_tail: bool = True
) -> RowBatch:
    """``batch`` laid out in SGLang's rows (see ``RowBatch``), rows shuffled, ``room`` free positions behind the
    longest request. ``private_tail``: every request also gets one slot of its own at its end (a decode step's new
    token), so every request ends in a private leaf; without it requests may end in shared nodes, as in ``batch``."""
    gen = _rng(rng)
    chains, tails = batch.chains()
    fresh = batch.num_slots
    if private_tail:
        tails = [np.concatenate([t, [fresh + i]]).astype(np.int64) for i, t in enumerate(tails)]
        fresh += len(tails)
    laid = PrefixForest.from_chains(chains, tails)
    n = laid.num_requests
    lengths = laid.request_lengths.astype(np.int64)
    stride = int(lengths.max()) + room
    rows = gen.permutation(np.arange(1, n + 1)).astype(np.int64)
    table = np.zeros((n + 1, stride), dtype=np.int32)
    for r in range(n):
        table[rows[r], : lengths[r]] = laid.request_slots(r)
    forest = PrefixForest(
        laid.tok, laid.start, laid.parent, laid.depth, laid.req_ptr, laid.req_flat, rows * stride, lengths.copy()
    )
    return RowBatch(table, rows, lengths.copy(), forest, fresh)


def same_stride_row_batches(
    rng: np.random.Generator, num_requests: int, count: int, room: int, **tree_args: object
) -> list[RowBatch]:
    """``count`` row batches of exactly ``num_requests`` requests over different ``random_tree(rng, **tree_args)``
    trees (other shapes, partials and merges), all with one row stride, their longest row + ``room``: one
    ``req_to_token`` shape serves every one of them, as the table a CUDA graph was captured with must."""
    laid: list[DecodeBatch] = []
    while len(laid) < count:
        decode = layout_tree(random_tree(rng, max_requests=num_requests, **tree_args), 1, rng)
        if row_batch(decode, room=0).forest.num_requests == num_requests:
            laid.append(decode)
    longest = [row_batch(d, room=0).row_stride for d in laid]
    stride = max(longest) + room
    return [row_batch(d, room=stride - m, rng=i) for i, (d, m) in enumerate(zip(laid, longest, strict=True))]

