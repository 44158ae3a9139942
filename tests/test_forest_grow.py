"""``PrefixForest.with_grown_leaves`` (the decode step's forest update) against ``from_flat`` on the grown rows:
same canonical key, same flat arrays and node lists, bit-identical plans; over random trees and many steps, with
placeholder last slots replaced later (the backend's deferred newest tokens), and through ``from_chains`` forests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import ForestArrays, PrefixForest
from pat_sglang.planner import plan_forest
from pat_sglang.workloads import layout_tree, random_tree, tree_batch

PLAN_TENSORS = ("items", "kv_slots", "item_req", "item_dst", "merge_indptr", "merge_partials")
ARRAY_FIELDS = ("tok", "parent", "depth", "q", "req_ptr", "req_flat", "entry_node", "ends_here", "ending",
                "slot_ptr", "req32", "shared_q", "shared_tok")
HEADS = (HeadConfig(8, 2, 64, torch.float32), HeadConfig(32, 8, 128, torch.bfloat16))
SENTINEL = 1 << 30


def _rows(batch) -> list[np.ndarray]:
    ip = batch.kv_indptr.numpy().astype(np.int64)
    ind = batch.kv_indices.numpy().astype(np.int64)
    return [ind[a:b].copy() for a, b in zip(ip[:-1], ip[1:], strict=True)]


def _flat(rows: list[np.ndarray]) -> PrefixForest:
    indptr = np.concatenate([[0], np.cumsum([r.shape[0] for r in rows])]).astype(np.int64)
    return PrefixForest.from_flat(indptr, np.concatenate(rows))


def _leaves(forest: PrefixForest) -> np.ndarray:
    """Per request, its single-request last node, or -1 (it ends in a shared node)."""
    fa = forest._arrays()
    last = np.full(forest.num_requests, -1, dtype=np.int64)
    last[fa.req_flat[fa.ends_here]] = fa.entry_node[fa.ends_here]
    ok = last >= 0
    ok[ok] = fa.q[last[ok]] == 1
    return np.where(ok, last, -1)


def assert_same(got: PrefixForest, want: PrefixForest) -> None:
    assert got.canonical_key() == want.canonical_key()
    g, w = got._arrays(), want._arrays()
    for name in ARRAY_FIELDS:
        assert np.array_equal(getattr(g, name), getattr(w, name)), name
    assert np.array_equal(g.slots64(), w.slots64())
    assert (g.slots32 is None) == (w.slots32 is None)
    if w.slots32 is not None:
        assert g.slots32.dtype == np.int32 and np.array_equal(g.slots32, w.slots32)
    assert (g.slot_max, g.unique_tokens, g.request_tokens) == (w.slot_max, w.unique_tokens, w.request_tokens)
    assert np.array_equal(got.request_lengths, want.request_lengths)
    assert len(got.nodes) == len(want.nodes)
    for a, b in zip(got.nodes, want.nodes, strict=True):
        assert np.array_equal(a.slots, b.slots)
        assert (a.requests, a.parent, a.children, a.depth) == (b.requests, b.parent, b.children, b.depth)
    # the planner's view (arrays made by the grower) against the flat builder's, for two head shapes
    for heads in HEADS:
        for device in (DeviceSpec(), DeviceSpec(sm_count=8)):
            p, q = plan_forest(got, heads, device), plan_forest(want, heads, device)
            assert (p.num_partials, p.max_slot) == (q.num_partials, q.max_slot)
            for name in PLAN_TENSORS:
                assert torch.equal(getattr(p, name), getattr(q, name)), name


def _grow_steps(forest: PrefixForest, rows: list[np.ndarray], rng: np.random.Generator, steps: int, next_slot: int,
                deferred: bool, check_every: int = 1) -> None:
    leaves = _leaves(forest)
    growing = np.flatnonzero(leaves >= 0)
    pending = None  # the true slots of last step's placeholders
    for step in range(steps):
        # Without placeholders a random subset of the single-request leaves grows (any subset is legal); with them,
        # all (as in the backend), each replacing last step's placeholder by its true slot.
        mine = growing[rng.random(growing.shape[0]) < 0.8] if step % 3 and not deferred else growing
        new_true = next_slot + np.arange(mine.shape[0], dtype=np.int64)
        next_slot += mine.shape[0]
        last = None
        if pending is not None:
            last = pending
            for r, t in zip(mine.tolist(), pending.tolist(), strict=True):
                rows[r][-1] = t  # the placeholder's true value, as the host learns it
        before = forest.canonical_key() if step % 7 == 0 else None
        new_vals = SENTINEL + np.arange(mine.shape[0], dtype=np.int64) if deferred else new_true
        grown = forest.with_grown_leaves(leaves[mine], new_vals, last)
        if before is not None:
            assert forest.canonical_key() == before  # the old forest is untouched
        for r, v in zip(mine.tolist(), new_vals.tolist(), strict=True):
            rows[r] = np.append(rows[r], v)
        pending = new_true if deferred else None
        if step % check_every == 0 or step == steps - 1:
            assert_same(grown, _flat(rows))
        assert np.array_equal(_leaves(grown), leaves)  # a grown leaf stays the leaf of its one request
        forest = grown


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("deferred", [False, True])
def test_grow_random_trees_equal_from_flat(seed: int, deferred: bool) -> None:
    rng = np.random.default_rng(seed)
    page_size = int(rng.choice([1, 4]))
    tree = random_tree(rng, max_depth=5, max_requests=24, max_len=40, page_size=page_size, p_inner_request=0.2,
                       p_duplicate=0.1)
    batch = layout_tree(tree, page_size=page_size, rng=rng)
    rows = _rows(batch)
    forest = _flat(rows)
    _grow_steps(forest, rows, rng, steps=25, next_slot=batch.num_slots + 5, deferred=deferred)


@pytest.mark.parametrize("seed", range(6))
def test_grow_from_chains_forest(seed: int) -> None:
    """A ``from_chains`` forest (node list first, arrays made at build) grows the same way."""
    rng = np.random.default_rng(100 + seed)
    tree = random_tree(rng, max_depth=4, max_requests=16, max_len=30, p_inner_request=0.2, p_duplicate=0.1)
    batch = layout_tree(tree, rng=rng)
    forest = PrefixForest.from_chains(*batch.chains())
    assert forest._fa is not None  # built with the planner's arrays
    rows = _rows(batch)
    assert_same(forest, _flat(rows))
    _grow_steps(forest, rows, rng, steps=10, next_slot=batch.num_slots, deferred=bool(seed % 2))


def test_grow_many_steps_wide_batch() -> None:
    rng = np.random.default_rng(5)
    batch = tree_batch([(1, 300), (4, 64), (32, 16), (128, 8)], rng=1)
    rows = _rows(batch)
    _grow_steps(_flat(rows), rows, rng, steps=60, next_slot=batch.num_slots, deferred=True, check_every=6)


def test_largest_slot_replaced_and_int64_slots() -> None:
    rows = [np.array([5, 6, 7, 100], dtype=np.int64), np.array([5, 6, 9], dtype=np.int64)]
    forest = _flat(rows)
    leaves = _leaves(forest)
    # the largest slot (100) is replaced by a smaller one and the new slots are smaller still
    grown = forest.with_grown_leaves(leaves, np.array([11, 12]), np.array([10, 9]))
    assert_same(grown, _flat([np.array([5, 6, 7, 10, 11]), np.array([5, 6, 9, 12])]))
    assert grown._arrays().slot_max == 12
    # slots beyond int32: the int64 path, no int32 copy
    big = 1 << 33
    grown = grown.with_grown_leaves(leaves, np.array([big, 13]))
    want = _flat([np.array([5, 6, 7, 10, 11, big]), np.array([5, 6, 9, 12, 13])])
    assert grown._arrays().slots32 is None
    assert_same_arrays = [np.array_equal(grown._arrays().slots64(), want._arrays().slots64())]
    assert all(assert_same_arrays) and grown.canonical_key() == want.canonical_key()
    # nothing grown: the same forest again
    same = forest.with_grown_leaves(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert_same(same, forest)


def test_grow_rejects_shared_and_repeated_nodes() -> None:
    forest = _flat([np.array([1, 2, 3]), np.array([1, 2, 4]), np.array([1, 2])])
    fa = forest._arrays()
    shared = int(np.flatnonzero(fa.q > 1)[0])
    leaf = int(np.flatnonzero(fa.q == 1)[0])
    with pytest.raises(ValueError, match="exactly one request"):
        forest.with_grown_leaves(np.array([shared]), np.array([9]))
    with pytest.raises(ValueError, match="twice"):
        forest.with_grown_leaves(np.array([leaf, leaf]), np.array([9, 10]))
    with pytest.raises(ValueError, match="new slots"):
        forest.with_grown_leaves(np.array([leaf]), np.array([9, 10]))
    with pytest.raises(ValueError, match="outside"):
        forest.with_grown_leaves(np.array([fa.tok.shape[0]]), np.array([9]))


def test_nodes_are_made_on_first_read() -> None:
    batch = tree_batch([(1, 16), (3, 4)], rng=0)
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    assert forest._nodes is None  # the planner never needs them
    plan_forest(forest, HEADS[0])
    assert forest._nodes is None
    nodes = forest.nodes
    assert forest.nodes is nodes and forest._arrays().nodes is nodes  # arrays still valid for the same list
    rebuilt = ForestArrays.from_nodes(nodes, forest.num_requests, forest.request_lengths)
    assert np.array_equal(rebuilt.slots_flat, forest._arrays().slots64())
