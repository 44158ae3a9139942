"""PrefixForest: shared-prefix detection from flat indices and radix chains, canonical form, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pat_sglang.forest import PrefixForest
from pat_sglang.workloads import STANDARD_WORKLOADS, layout_tree, random_tree, tree_batch

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seqs(indptr: torch.Tensor, indices: torch.Tensor) -> list[np.ndarray]:
    ip = indptr.tolist()
    return [indices[ip[r] : ip[r + 1]].numpy().astype(np.int64) for r in range(len(ip) - 1)]


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(a.shape[0], b.shape[0])
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.shape[0] else n


def check_forest(forest: PrefixForest, seqs: list[np.ndarray], pairs: int = 200, seed: int = 0) -> None:
    """Structural invariants, and: the tokens two requests share in the forest == their common slot prefix."""
    nodes = forest.nodes
    assert forest.num_requests == len(seqs)
    assert forest.request_lengths.tolist() == [s.shape[0] for s in seqs]
    for i, n in enumerate(nodes):
        assert n.num_tokens > 0, "empty node"
        assert n.requests == sorted(set(n.requests))
        if n.parent >= 0:
            assert n.parent < i, "not topological"
            parent = nodes[n.parent]
            assert i in parent.children
            assert set(n.requests) <= set(parent.requests)
            assert n.depth == parent.depth + 1
        else:
            assert n.depth == 0
        child_reqs = [set(nodes[c].requests) for c in n.children]
        for a in range(len(child_reqs)):
            for b in range(a + 1, len(child_reqs)):
                assert not child_reqs[a] & child_reqs[b], "a request in two sibling subtrees"
        # Canonical: no single child holding exactly the same requests.
        if len(n.children) == 1:
            assert nodes[n.children[0]].requests != n.requests, "unfused chain"
    for r, s in enumerate(seqs):
        np.testing.assert_array_equal(forest.request_slots(r), s)
    assert forest.request_tokens() == sum(s.shape[0] for s in seqs)
    rng = np.random.default_rng(seed)
    member = [set(n.requests) for n in nodes]
    n_req = len(seqs)
    for _ in range(min(pairs, n_req * n_req)):
        a, b = (int(x) for x in rng.integers(0, n_req, 2))
        shared = sum(nodes[i].num_tokens for i in range(len(nodes)) if a in member[i] and b in member[i])
        assert shared == _common_prefix(seqs[a], seqs[b]), (a, b)


@pytest.mark.parametrize("name", sorted(STANDARD_WORKLOADS))
@pytest.mark.parametrize("page_size", [1, 16])
def test_standard_workloads(name: str, page_size: int) -> None:
    levels = STANDARD_WORKLOADS[name]
    batch = tree_batch(levels, page_size=page_size, rng=3)
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    # Every level of these trees branches (or is a root level), so no node fuses: one forest node per tree node.
    assert len(forest.nodes) == sum(n for n, _ in levels)
    for depth, (n, tokens) in enumerate(levels):
        at = [x for x in forest.nodes if x.depth == depth]
        assert len(at) == n
        assert all(x.num_tokens == tokens for x in at)
        assert all(len(x.requests) == levels[-1][0] // n for x in at)
    assert forest.unique_tokens() == batch.unique_tokens()
    assert forest.shared_tokens() == sum(n * t for n, t in levels[:-1] if levels[-1][0] > n)
    check_forest(forest, _seqs(batch.kv_indptr, batch.kv_indices), pairs=100)


def test_shared_prefix_detected_small() -> None:
    # r0, r1 share [5, 6, 7]; r2 shares [5] with them; r3 is alone.
    seqs = [[5, 6, 7, 10], [5, 6, 7, 11, 12], [5, 8], [9, 1]]
    indptr = np.cumsum([0] + [len(s) for s in seqs])
    forest = PrefixForest.from_flat(indptr, np.concatenate(seqs))
    as_sets = sorted((tuple(n.slots.tolist()), tuple(n.requests)) for n in forest.nodes)
    assert as_sets == sorted(
        [((5,), (0, 1, 2)), ((6, 7), (0, 1)), ((10,), (0,)), ((11, 12), (1,)), ((8,), (2,)), ((9, 1), (3,))]
    )


def test_identical_and_prefix_requests() -> None:
    seqs = [[1, 2, 3], [1, 2, 3], [1, 2], [1, 2, 3, 4]]
    indptr = np.cumsum([0] + [len(s) for s in seqs])
    forest = PrefixForest.from_flat(indptr, np.concatenate(seqs))
    check_forest(forest, [np.array(s) for s in seqs])
    root = forest.nodes[0]
    assert root.slots.tolist() == [1, 2] and root.requests == [0, 1, 2, 3]


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page_size=st.sampled_from([1, 16]))
def test_random_trees_from_flat(seed: int, page_size: int) -> None:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=6, max_requests=64, max_len=64, page_size=page_size, max_request_tokens=20000)
    batch = layout_tree(tree, page_size=page_size, rng=rng)
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    check_forest(forest, _seqs(batch.kv_indptr, batch.kv_indices), seed=seed)
    assert forest.unique_tokens() == tree.unique_tokens()
    # numpy and list inputs give the same forest as int32 tensors
    same = PrefixForest.from_flat(batch.kv_indptr.numpy(), batch.kv_indices.tolist())
    assert same.canonical_key() == forest.canonical_key()


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page_size=st.sampled_from([1, 16]))
def test_from_chains_equals_from_flat(seed: int, page_size: int) -> None:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=6, max_requests=48, max_len=48, page_size=page_size, max_request_tokens=20000)
    batch = layout_tree(tree, page_size=page_size, rng=rng)
    flat = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    chains, tails = batch.chains()
    radix = PrefixForest.from_chains(chains, tails)
    assert radix.canonical_key() == flat.canonical_key()
    assert radix.request_lengths.tolist() == flat.request_lengths.tolist()
    check_forest(radix, _seqs(batch.kv_indptr, batch.kv_indices), seed=seed)
    # A radix tree splits nodes finer than needed (e.g. after an insert): splitting every node in two
    # must not change the canonical forest.
    split_chains = []
    for chain in chains:
        finer = []
        for node_id, slots in chain:
            cut = slots.shape[0] // 2
            finer.append(((node_id, 0), slots[:cut]))
            finer.append(((node_id, 1), slots[cut:]))
        split_chains.append(finer)
    assert PrefixForest.from_chains(split_chains, tails).canonical_key() == flat.canonical_key()


def test_canonical_key_distinguishes() -> None:
    a = PrefixForest.from_flat([0, 3, 6], [1, 2, 3, 1, 2, 4])
    b = PrefixForest.from_flat([0, 3, 6], [1, 2, 3, 1, 5, 4])
    c = PrefixForest.from_chains([[("x", np.array([1, 2]))], [("x", np.array([1, 2]))]], [np.array([3]), [4]])
    assert a.canonical_key() != b.canonical_key()
    assert a.canonical_key() == c.canonical_key()
    # Fused chains: a root [1] with one child [2] holding the same requests is the node [1, 2].
    d = PrefixForest.from_chains(
        [[("p", np.array([1])), ("q", np.array([2]))], [("p", np.array([1])), ("q", np.array([2]))]],
        [np.array([3]), np.array([4])],
    )
    assert d.canonical_key() == a.canonical_key()
    assert len(d.nodes) == 3


def test_radix_node_slot_conflict() -> None:
    with pytest.raises(ValueError, match="different slots"):
        PrefixForest.from_chains([[("x", np.array([1, 2]))], [("x", np.array([1, 3]))]], [[5], [6]])


def test_page_size_16_layout() -> None:
    batch = tree_batch([(1, 64), (4, 40)], page_size=16, rng=0)
    for slots in batch.node_slots:
        pages = slots // 16
        # whole pages, contiguous inside a page
        for p in np.unique(pages):
            within = slots[pages == p]
            np.testing.assert_array_equal(within, p * 16 + np.arange(within.shape[0]))
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    assert [n.num_tokens for n in forest.nodes] == [64, 40, 40, 40, 40]
    with pytest.raises(ValueError, match="multiple of page_size"):
        tree_batch([(1, 60), (4, 40)], page_size=16)


@pytest.mark.parametrize(
    "indptr, indices, message",
    [
        ([0, 2, 3], [0, -1, 2], "negative"),
        ([0, 2, 3], [0.0, 1.0, 2.0], "integers"),
        ([0, 2, 3], [[0, 1, 2]], "1-D"),
        ([[0, 3]], [0, 1, 2], "1-D"),
        ([1, 2, 3], [0, 1, 2], "start at 0"),
        ([0, 2, 1], [0, 1, 2], "non-decreasing"),
        ([0, 2, 4], [0, 1, 2], "ends at 4"),
        ([0], [], "empty batch"),
        ([], [], "empty batch"),
        ([0, 2, 2], [0, 1], "no KV tokens"),
        ([0, 0], [], "no KV tokens"),
        ([0, 2, 3], [True, False, True], "integers"),
    ],
)
def test_bad_flat_inputs(indptr: list, indices: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrefixForest.from_flat(np.array(indptr), np.array(indices))


def test_bad_tensor_inputs() -> None:
    with pytest.raises(ValueError, match="negative"):
        PrefixForest.from_flat(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([-3], dtype=torch.int32))
    with pytest.raises(ValueError, match="integers"):
        PrefixForest.from_flat(torch.tensor([0, 1]), torch.tensor([0.5]))


def test_bad_chain_inputs() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        PrefixForest.from_chains([], [])
    with pytest.raises(ValueError, match="differ in length"):
        PrefixForest.from_chains([[]], [])
    with pytest.raises(ValueError, match="no KV tokens"):
        PrefixForest.from_chains([[], [("a", np.array([1]))]], [np.array([], dtype=np.int64), []])
    with pytest.raises(ValueError, match="negative"):
        PrefixForest.from_chains([[("a", np.array([1, -2]))]], [[]])
