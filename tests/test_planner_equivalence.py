"""The fast (numpy) planner and forest builders against a frozen copy of the original per-item Python code.

``_ref_*`` below are the implementations of ``plan_forest``, ``PrefixForest.from_flat`` and
``PrefixForest.from_chains`` as they were before vectorisation, kept verbatim as an oracle: the fast paths must
produce bit-identical plans (same item order, partial numbering and merge map) and identical forests (same node
order, slots, requests, parents, children and depths).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pat_sglang.config import DeviceSpec, HeadConfig, TileTable, load_tile_table
from pat_sglang.forest import ForestNode, PrefixForest, _as_int64, _check_indptr
from pat_sglang.planner import (
    ITEM_FIELDS,
    ITEM_KV_BEGIN,
    ITEM_KV_END,
    ITEM_REQ_BEGIN,
    ITEM_REQ_END,
    ITEM_TILE,
    ITEM_TILE_M,
    MAX_ITEMS,
    MIN_SPLIT_TOKENS,
    PackInfo,
    PackPlan,
    PlanStats,
    plan_forest,
    target_ctas,
)
from pat_sglang.workloads import STANDARD_WORKLOADS, layout_tree, random_tree, tree_batch

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------- reference oracle
def _ref_plan_forest(
    forest: PrefixForest,
    heads: HeadConfig,
    device: DeviceSpec | None = None,
    tiles: TileTable | None = None,
    min_split_tokens: int = MIN_SPLIT_TOKENS,
) -> PackPlan:
    device = device or DeviceSpec()
    tiles = tiles or load_tile_table(device.arch)
    reqs_per_block = max(1, tiles.max_m // heads.group)

    packs = _ref_choose_packs(forest, heads, reqs_per_block)

    blocks: list[tuple[int, list[int]]] = []
    for p, (_, _, reqs) in enumerate(packs):
        for b in range(0, len(reqs), reqs_per_block):
            blocks.append((p, reqs[b : b + reqs_per_block]))
    pack_tokens = [sum(forest.nodes[n].num_tokens for n in nodes) for nodes, _, _ in packs]
    work_tokens = sum(pack_tokens[p] for p, _ in blocks) * heads.num_kv_heads
    split_tokens = max(min_split_tokens, math.ceil(work_tokens / target_ctas(device, tiles, heads)))
    splits = [max(1, math.ceil(t / split_tokens)) for t in pack_tokens]

    partials_of = np.zeros(forest.num_requests, dtype=np.int64)
    for p, (_, _, reqs) in enumerate(packs):
        partials_of[reqs] += splits[p]

    kv_slots: list[np.ndarray] = []
    kv_offset = [0]
    for nodes, _, _ in packs:
        kv_slots.append(np.concatenate([forest.nodes[n].slots for n in nodes]))
        kv_offset.append(kv_offset[-1] + kv_slots[-1].shape[0])

    item_rows: list[tuple[int, int, int, int, int, int]] = []
    for blk, (p, reqs) in enumerate(blocks):
        tile = tiles.tile_for(len(reqs) * heads.group)
        n_tok = pack_tokens[p]
        for s in range(splits[p]):
            b = kv_offset[p] + (n_tok * s) // splits[p]
            e = kv_offset[p] + (n_tok * (s + 1)) // splits[p]
            item_rows.append((-(e - b), tile, b, e, p, blk))
    item_rows.sort()

    items = np.zeros((len(item_rows), ITEM_FIELDS), dtype=np.int32)
    item_req: list[int] = []
    item_dst: list[int] = []
    slots_of: list[list[int]] = [[] for _ in range(forest.num_requests)]
    next_partial = 0
    for i, (_, tile, b, e, _, blk) in enumerate(item_rows):
        reqs = blocks[blk][1]
        items[i, ITEM_KV_BEGIN] = b
        items[i, ITEM_KV_END] = e
        items[i, ITEM_REQ_BEGIN] = len(item_req)
        items[i, ITEM_REQ_END] = len(item_req) + len(reqs)
        items[i, ITEM_TILE] = tile
        items[i, ITEM_TILE_M] = tiles.tile_ms[tile]
        for r in reqs:
            item_req.append(r)
            if partials_of[r] == 1:
                item_dst.append(-1)
            else:
                item_dst.append(next_partial)
                slots_of[r].append(next_partial)
                next_partial += 1

    if len(item_rows) > MAX_ITEMS:
        raise ValueError(f"plan has {len(item_rows)} work items; the forward grid holds at most {MAX_ITEMS}")
    merge_indptr = np.zeros(forest.num_requests + 1, dtype=np.int32)
    merge_indptr[1:] = np.cumsum([len(s) for s in slots_of])
    merge_partials = np.array([s for lst in slots_of for s in lst], dtype=np.int32)

    all_slots = np.concatenate(kv_slots)
    if all_slots.shape[0] and int(all_slots.max()) > np.iinfo(np.int32).max:
        raise ValueError("KV slot index does not fit in int32")

    tok_bytes = heads.kv_token_bytes
    stats = PlanStats(
        kv_bytes_planned=int(sum(r[3] - r[2] for r in item_rows)) * tok_bytes,
        kv_bytes_per_request=forest.request_tokens() * tok_bytes,
        kv_bytes_unique=forest.unique_tokens() * tok_bytes,
        partial_bytes=next_partial * heads.partial_bytes,
        num_items=len(item_rows),
        num_partials=next_partial,
    )
    infos = []
    for p, (nodes, _, reqs) in enumerate(packs):
        n_blocks = math.ceil(len(reqs) / reqs_per_block)
        tile_m = tiles.tile_ms[tiles.tile_for(min(len(reqs), reqs_per_block) * heads.group)]
        infos.append(PackInfo(nodes, pack_tokens[p], reqs, splits[p], n_blocks, tile_m))

    def i32(a: np.ndarray | list[int]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))

    return PackPlan(
        heads=heads,
        num_requests=forest.num_requests,
        tile_ms=tiles.tile_ms,
        items=torch.from_numpy(items),
        kv_slots=i32(all_slots),
        item_req=i32(item_req),
        item_dst=i32(item_dst),
        merge_indptr=torch.from_numpy(merge_indptr),
        merge_partials=torch.from_numpy(merge_partials),
        num_partials=next_partial,
        max_slot=int(all_slots.max()) if all_slots.shape[0] else -1,
        packs=infos,
        stats=stats,
    )


def _ref_choose_packs(
    forest: PrefixForest, heads: HeadConfig, reqs_per_block: int
) -> list[tuple[list[int], int, list[int]]]:
    packs: list[tuple[list[int], int, list[int]]] = []
    inherited: dict[int, list[int]] = {}
    tok_bytes = heads.kv_token_bytes
    for i, node in enumerate(forest.nodes):
        path = inherited.pop(i, []) + [i]
        q = len(node.requests)
        tokens = sum(forest.nodes[n].num_tokens for n in path)
        if q == 1:
            packs.append((path, tokens, list(node.requests)))
            continue
        row_blocks = math.ceil(q / reqs_per_block)
        saved = (q - row_blocks) * tokens * tok_bytes
        cost = q * heads.partial_bytes
        if saved > cost:
            packs.append((path, tokens, list(node.requests)))
            continue
        continuing: set[int] = set()
        for c in node.children:
            inherited[c] = path
            continuing.update(forest.nodes[c].requests)
        ending = [r for r in node.requests if r not in continuing]
        if ending:
            packs.append((path, tokens, ending))
    return packs


def _ref_from_flat(kv_indptr, kv_indices) -> PrefixForest:
    indptr = _as_int64(kv_indptr, "kv_indptr")
    indices = _as_int64(kv_indices, "kv_indices")
    num_requests = _check_indptr(indptr, indices.shape[0])
    seqs = [indices[indptr[r] : indptr[r + 1]] for r in range(num_requests)]
    builder = _RefBuilder(num_requests)
    builder.split(seqs, list(range(num_requests)), start=0, parent=-1)
    return builder.finish(np.diff(indptr))


def _ref_from_chains(
    chains: Sequence[Sequence[tuple[Hashable, np.ndarray]]], tails: Sequence[np.ndarray]
) -> PrefixForest:
    if len(chains) != len(tails):
        raise ValueError(f"chains ({len(chains)}) and tails ({len(tails)}) differ in length")
    num_requests = len(chains)
    if num_requests == 0:
        raise ValueError("empty batch: no requests")
    builder = _RefBuilder(num_requests)
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


class _RefBuilder:
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
        return PrefixForest(_ref_fuse_chains(self.nodes), self.num_requests, lengths)


def _ref_fuse_chains(nodes: list[ForestNode]) -> list[ForestNode]:
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


# ---------------------------------------------------------------------------------------------- comparisons
PLAN_TENSORS = ("items", "kv_slots", "item_req", "item_dst", "merge_indptr", "merge_partials")


def assert_same_plan(got: PackPlan, want: PackPlan) -> None:
    for name in PLAN_TENSORS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape, name
        assert torch.equal(a, b), name
    assert got.heads == want.heads
    assert got.num_requests == want.num_requests
    assert got.tile_ms == want.tile_ms
    assert got.num_partials == want.num_partials
    assert got.max_slot == want.max_slot
    assert got.stats == want.stats
    assert len(got.packs) == len(want.packs)
    for a, b in zip(got.packs, want.packs, strict=True):
        assert a == b
        assert all(type(x) is int for x in a.nodes + a.requests)
        assert type(a.num_tokens) is int and type(a.splits) is int
        assert type(a.row_blocks) is int and type(a.tile_m) is int


def assert_same_forest(got: PrefixForest, want: PrefixForest) -> None:
    assert got.num_requests == want.num_requests
    assert got.request_lengths.dtype == want.request_lengths.dtype == np.int64
    np.testing.assert_array_equal(got.request_lengths, want.request_lengths)
    assert len(got.nodes) == len(want.nodes)
    for i, (a, b) in enumerate(zip(got.nodes, want.nodes, strict=True)):
        assert a.slots.dtype == np.int64, i
        np.testing.assert_array_equal(a.slots, b.slots, err_msg=f"node {i}")
        assert a.requests == b.requests, i
        assert all(type(r) is int for r in a.requests), i
        assert a.parent == b.parent and a.children == b.children and a.depth == b.depth, i
    assert got.canonical_key() == want.canonical_key()


def _heads(group: int, head_dim: int = 128, num_kv_heads: int = 8) -> HeadConfig:
    return HeadConfig(num_kv_heads * group, num_kv_heads, head_dim, torch.bfloat16)


def check_all(batch, heads: HeadConfig, device: DeviceSpec | None = None, min_split: int = MIN_SPLIT_TOKENS) -> None:
    fast = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    slow = _ref_from_flat(batch.kv_indptr, batch.kv_indices)
    assert_same_forest(fast, slow)
    chains, tails = batch.chains()
    assert_same_forest(PrefixForest.from_chains(chains, tails), _ref_from_chains(chains, tails))
    want = _ref_plan_forest(slow, heads, device, min_split_tokens=min_split)
    assert_same_plan(plan_forest(fast, heads, device, min_split_tokens=min_split), want)
    # a forest whose nodes were built by the reference code plans the same as well
    assert_same_plan(plan_forest(slow, heads, device, min_split_tokens=min_split), want)


# ---------------------------------------------------------------------------------------------- tests
@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    group=st.sampled_from([1, 2, 4, 8]),
    head_dim=st.sampled_from([64, 128, 256]),
    page_size=st.sampled_from([1, 16]),
    num_kv_heads=st.sampled_from([1, 2, 8]),
)
def test_random_big_trees(seed: int, group: int, head_dim: int, page_size: int, num_kv_heads: int) -> None:
    rng = np.random.default_rng(seed)
    tree = random_tree(
        rng, max_depth=6, max_requests=256, max_len=4096, page_size=page_size, max_request_tokens=300_000
    )
    check_all(layout_tree(tree, page_size=page_size, rng=rng), _heads(group, head_dim, num_kv_heads))


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    group=st.sampled_from([1, 2, 4, 8]),
    sm_count=st.sampled_from([1, 8, 78, 132]),
    min_split=st.sampled_from([1, 16, 256, 1 << 20]),
)
def test_random_small_trees(seed: int, group: int, sm_count: int, min_split: int) -> None:
    """Short nodes, so the profit model inlines (chains of inlined nodes included)."""
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=8, max_requests=64, max_len=48, p_inner_request=0.3, p_duplicate=0.2)
    check_all(layout_tree(tree, rng=rng), _heads(group), DeviceSpec(sm_count=sm_count), min_split)


@pytest.mark.parametrize("name", sorted(STANDARD_WORKLOADS))
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_standard_workloads(name: str, page_size: int, group: int) -> None:
    check_all(tree_batch(STANDARD_WORKLOADS[name], page_size=page_size, rng=5), _heads(group))


def test_bench_tree() -> None:
    batch = tree_batch([(1, 2048), (4, 1024), (32, 512), (256, 128)], rng=0)
    for group in (1, 4, 8):
        check_all(batch, _heads(group))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), alphabet=st.sampled_from([2, 3, 50]))
def test_adversarial_flat(seed: int, alphabet: int) -> None:
    """Arbitrary rows from a tiny slot alphabet: same slot at the same position after different prefixes,
    prefixes of other rows, duplicates, int64 and list inputs."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    base = [rng.integers(0, alphabet, int(rng.integers(1, 30))) for _ in range(int(rng.integers(1, 4)))]
    seqs = []
    for _ in range(n):
        s = base[int(rng.integers(0, len(base)))]
        s = s[: int(rng.integers(1, s.shape[0] + 1))]
        if rng.random() < 0.5:
            s = np.concatenate([s, rng.integers(0, alphabet, int(rng.integers(0, 8)))])
        seqs.append(s.astype(np.int64))
    indptr = np.cumsum([0] + [s.shape[0] for s in seqs])
    indices = np.concatenate(seqs)
    fast = PrefixForest.from_flat(indptr, indices)
    assert_same_forest(fast, _ref_from_flat(indptr, indices))
    assert_same_forest(PrefixForest.from_flat(indptr.tolist(), indices.astype(np.int32).tolist()), fast)
    small = DeviceSpec(sm_count=4)
    for group in (1, 8):
        heads = _heads(group)
        assert_same_plan(plan_forest(fast, heads, small), _ref_plan_forest(fast, heads, small))


def test_ragged_tail_in_indices() -> None:
    """kv_indices may be longer than kv_indptr[-1] (a preallocated buffer)."""
    indptr = np.array([0, 3, 5])
    indices = np.array([4, 5, 6, 4, 9, 77, 78])
    assert_same_forest(PrefixForest.from_flat(indptr, indices), _ref_from_flat(indptr, indices))


def test_split_radix_chains() -> None:
    """Radix chains split finer than needed fuse to the same forest, in the same order."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        tree = random_tree(rng, max_depth=6, max_requests=48, max_len=48, page_size=1)
        batch = layout_tree(tree, rng=rng)
        chains, tails = batch.chains()
        finer = [
            [((nid, k), part) for nid, slots in chain for k, part in enumerate(np.array_split(slots, 2))]
            for chain in chains
        ]
        assert_same_forest(PrefixForest.from_chains(finer, tails), _ref_from_chains(finer, tails))


def test_chains_copied_int32_and_conflicts() -> None:
    """Per-request copies (as radix.py makes them), int32 runs, list tails, and bad chains raise the same errors."""
    rng = np.random.default_rng(12)
    for _ in range(10):
        tree = random_tree(rng, max_depth=5, max_requests=40, max_len=40)
        batch = layout_tree(tree, rng=rng)
        chains, tails = batch.chains()
        copied = [[(nid, s.astype(np.int32) if k % 2 else s.copy()) for k, (nid, s) in enumerate(c)] for c in chains]
        assert_same_forest(PrefixForest.from_chains(copied, tails), _ref_from_chains(copied, tails))
        listed = [t.tolist() for t in tails]
        assert_same_forest(PrefixForest.from_chains(copied, listed), _ref_from_chains(copied, listed))
    bad = [
        ([[("x", np.array([1, 2]))], [("x", np.array([1, 3]))]], [np.array([5]), np.array([6])]),
        ([[("x", np.array([1, 2]))], [("x", np.array([1, 2, 3]))]], [np.array([5]), np.array([6])]),
        ([[("x", np.array([1, 2]))], [("x", np.array([1, 2]))]], [np.array([5]), np.array([-6])]),
        ([[("x", np.array([1, 2]))], []], [np.array([5]), np.zeros(0, dtype=np.int64)]),
        ([[("x", np.array([1.0, 2.0]))]], [np.array([5])]),
    ]
    for chains, tails in bad:
        with pytest.raises(ValueError) as want:
            _ref_from_chains(chains, tails)
        with pytest.raises(ValueError, match=re.escape(str(want.value))):
            PrefixForest.from_chains(chains, tails)
