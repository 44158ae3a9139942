"""PrefixForest: shared-prefix detection from flat indices and radix chains, canonical form, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
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


# ---------------------------------------------------------------------------------------------- radix paths
def slot_free_key(forest: PrefixForest) -> tuple:
    """(requests, start, end) per node, sorted: the sharing, without slots (a forest from radix paths has none)."""
    rp, reqs = forest.req_ptr.tolist(), forest.req_flat.tolist()
    ends = (forest.start + forest.tok).tolist()
    return tuple(sorted((tuple(reqs[rp[i] : rp[i + 1]]), s, e) for i, (s, e) in enumerate(zip(forest.start.tolist(),
                                                                                                ends, strict=True))))


def check_structure(forest: PrefixForest) -> None:
    """Topological order, depths, non-empty nodes, children's requests within their parent's, canonical (fused)."""
    parent, q = forest.parent, forest.q
    assert (forest.tok > 0).all() and (q > 0).all()
    members = [set(forest.req_flat[forest.req_ptr[i] : forest.req_ptr[i + 1]].tolist()) for i in range(len(q))]
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(parent.tolist()):
        if p < 0:
            assert forest.depth[i] == 0 and forest.start[i] == 0
            continue
        assert p < i and forest.depth[i] == forest.depth[p] + 1
        assert members[i] <= members[p] and forest.start[i] == forest.start[p] + forest.tok[p]
        kids.setdefault(p, []).append(i)
    for p, ks in kids.items():
        assert not (len(ks) == 1 and members[ks[0]] == members[p]), "unfused chain"
    # every request's nodes cover [0, length) once
    for r, n in enumerate(forest.request_lengths.tolist()):
        spans = sorted((int(forest.start[i]), int(forest.start[i] + forest.tok[i])) for i in range(len(q))
                       if r in members[i])
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def paths_of(batch, split: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``DecodeBatch.chains()`` as ``from_paths`` entries: each (node id, slots) of a chain -> (request, integer key,
    length); ``split`` cuts every node of two or more tokens into two keys (a radix tree split finer than needed)."""
    chains, _ = batch.chains()
    req, key, length = [], [], []
    for r, chain in enumerate(chains):
        for node_id, slots in chain:
            n = int(slots.shape[0])
            if n == 0:
                continue
            parts = [(2 * node_id, n // 2), (2 * node_id + 1, n - n // 2)] if split and n >= 2 else [(2 * node_id, n)]
            for k, m in parts:
                req.append(r)
                key.append(k)
                length.append(m)
    return np.array(req, np.int64), np.array(key, np.int64), np.array(length, np.int64)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page_size=st.sampled_from([1, 16]), split=st.booleans())
def test_from_paths_equals_from_flat(seed: int, page_size: int, split: bool) -> None:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=6, max_requests=48, max_len=48, page_size=page_size, max_request_tokens=20000,
                       p_inner_request=0.2, p_duplicate=0.1)
    batch = layout_tree(tree, page_size=page_size, rng=rng)
    flat = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    indptr = batch.kv_indptr.numpy().astype(np.int64)
    seq, row_base = np.diff(indptr), indptr[:-1]
    req, key, length = paths_of(batch, split)
    forest = PrefixForest.from_paths(req, key, length, seq, row_base)
    assert forest.slot_table is None
    check_structure(forest)
    assert slot_free_key(forest) == slot_free_key(flat)
    assert forest.request_lengths.tolist() == seq.tolist() and forest.row_base.tolist() == row_base.tolist()
    assert forest.unique_tokens() == flat.unique_tokens() == tree.unique_tokens()
    # with the slot table, node slots are read through the rows: the full key (slots included) is the flat one's
    table = batch.kv_indices.numpy().astype(np.int64)
    with_slots = PrefixForest.from_paths(req, key, length, seq, row_base, table)
    assert with_slots.canonical_key() == flat.canonical_key()
    check_forest(with_slots, _seqs(batch.kv_indptr, batch.kv_indices), pairs=50, seed=seed)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    extra=st.booleans(),
    growth=st.lists(st.integers(-3, 6), min_size=1, max_size=4),
)
def test_with_lengths_equals_rebuild(seed: int, extra: bool, growth: list[int]) -> None:
    """Growing the private leaves (``with_lengths``) gives the forest ``from_paths`` builds at the new lengths, step
    after step; ``None`` exactly when a request has no private leaf (it ends in a shared node) or a leaf would be
    emptied. ``extra``: every request holds tokens beyond its path (the decode steps' private tail)."""
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=5, max_requests=32, max_len=40, max_request_tokens=10000, p_inner_request=0.2,
                       p_duplicate=0.1)
    batch = layout_tree(tree, rng=rng)
    req, key, length = paths_of(batch)
    n = batch.batch
    cached = np.bincount(req, weights=length, minlength=n).astype(np.int64)
    seq = np.diff(batch.kv_indptr.numpy().astype(np.int64))
    if extra:
        seq = seq + rng.integers(1, 4, size=n)
    row_base = np.arange(n, dtype=np.int64) * 100_000
    forest = PrefixForest.from_paths(req, key, length, seq, row_base)
    for g in growth:
        new = np.maximum(1, seq + rng.integers(min(g, 0), max(g, 0) + 1, size=n))
        grown = forest.with_lengths(new)
        leaf = forest.last_node
        assert (forest.start[leaf] <= cached).all()  # a request's last node starts within its path (or where it ends)
        expect_none = bool((forest.q[leaf] != 1).any() or (new - forest.start[leaf] < 1).any())
        assert (grown is None) == expect_none
        if extra and (new >= seq).all():
            assert grown is not None  # every request has a private leaf that only grows
        if grown is None:
            return
        if (new < cached).any():
            # shorter than its published path: from_paths refuses such a (stale) path, so there is no rebuild to
            # compare with (the decode-step planner never grows a forest over a stale path); the leaves still shrank
            assert grown.request_lengths.tolist() == new.tolist()
            return
        rebuilt = PrefixForest.from_paths(req, key, length, new, row_base)
        assert slot_free_key(grown) == slot_free_key(rebuilt)
        assert grown.request_lengths.tolist() == new.tolist() and grown.row_base is forest.row_base
        assert grown.req_flat is forest.req_flat and grown.parent is forest.parent  # structure shared, not rebuilt
        check_structure(grown)
        assert forest.request_lengths.tolist() == seq.tolist()  # the old forest is unchanged
        forest, seq = grown, new


def test_with_lengths_small() -> None:
    # r0, r1 share a radix node of 4 tokens, each with a private tail.
    f = PrefixForest.from_paths([0, 1], [7, 7], [4, 4], [6, 5], [0, 10])
    g = f.with_lengths(np.array([7, 6]))
    assert g is not None and slot_free_key(g) == (((0,), 4, 7), ((0, 1), 0, 4), ((1,), 4, 6))
    assert f.with_lengths(np.array([4, 6])) is None  # r0's leaf would be empty
    with pytest.raises(ValueError, match="lengths for"):
        f.with_lengths(np.array([7]))
    h = PrefixForest.from_paths([0, 1], [7, 7], [4, 4], [4, 5], [0, 10])  # r0 ends in the shared node
    assert h.with_lengths(np.array([5, 6])) is None


FOREST_ARRAYS = ("tok", "start", "parent", "depth", "req_ptr", "req_flat", "row_base", "request_lengths")


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page_size=st.sampled_from([1, 16]), split=st.booleans(),
       extra=st.booleans(), empty=st.booleans(), index=st.booleans())
def test_compiled_from_paths_equals_numpy(seed: int, page_size: int, split: bool, extra: bool, empty: bool,
                                          index: bool) -> None:
    """``from_paths`` through the host extension module (``kernels/host_paths.c``) against its numpy version: the same
    arrays (values and dtypes) and the same radix index, on random trees whose requests end inside shared nodes or past
    their paths (``extra``), with radix nodes split finer than needed, and with entries of no tokens (``empty``:
    both drop them)."""
    from pat_sglang import host_core
    from pat_sglang.forest import RADIX_INDEX

    if host_core.loaded_glue() is None:  # a compiler and numpy's headers are there wherever tests run
        pytest.fail("the host extension module did not load (see the log for the reason)")
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=6, max_requests=48, max_len=48, page_size=page_size, max_request_tokens=20000,
                       p_inner_request=0.2, p_duplicate=0.1)
    batch = layout_tree(tree, page_size=page_size, rng=rng)
    req, key, length = paths_of(batch, split)
    seq = np.diff(batch.kv_indptr.numpy().astype(np.int64))
    if extra:
        seq = seq + rng.integers(1, 5, size=seq.shape[0])
    if empty and req.shape[0]:
        at = np.sort(rng.choice(req.shape[0] + 1, size=3))
        req = np.insert(req, at, req[np.minimum(at, req.shape[0] - 1)])
        key = np.insert(key, at, rng.integers(0, 1 << 40, size=3))
        length = np.insert(length, at, 0)
    row_base = rng.permutation(seq.shape[0]).astype(np.int64) * 65536
    got = host_core.glue_call("forest_from_paths", req, key, length, seq, index)
    assert (got is None) == (not (length > 0).any())  # None: no entry with tokens (numpy's all-private forest)
    compiled = PrefixForest.from_paths(req, key, length, seq, row_base, index=index)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host_core, "loaded", lambda: None)
        reference = PrefixForest.from_paths(req, key, length, seq, row_base, index=index)
    for name in FOREST_ARRAYS:
        a, b = getattr(compiled, name), getattr(reference, name)
        assert a.dtype == b.dtype == np.int64 and a.tolist() == b.tolist(), name
    assert (RADIX_INDEX in compiled._derived) == (RADIX_INDEX in reference._derived)
    if RADIX_INDEX in reference._derived:
        for a, b in zip(compiled._derived[RADIX_INDEX], reference._derived[RADIX_INDEX], strict=True):
            assert a.dtype == b.dtype and a.tolist() == b.tolist()
    check_structure(compiled)


def test_compiled_from_paths_leaves_the_rest_to_numpy() -> None:
    """The compiled call answers None where the numpy version raises or builds the all-private forest (so its errors
    stand), and NotImplemented for arrays it does not take (int32, strided), which the numpy version reads."""
    from pat_sglang import host_core

    def call(req: list, key: list, length: list, seq: list, dtype: type = np.int64) -> object:
        return host_core.glue_call("forest_from_paths", *(np.array(a, dtype) for a in (req, key, length, seq)), True)

    if host_core.loaded_glue() is None:
        pytest.fail("the host extension module did not load (see the log for the reason)")
    assert call([0, 1], [7, 7], [4, 4], [6, 5]) is not None
    assert call([0, 1], [7, 7], [4, 4], [6, 5], np.int32) is NotImplemented
    for args in (
        ([0, 1], [7, 7], [4, 5], [9, 9]),  # one key, two lengths
        ([0, 0, 1], [1, 2, 2], [4, 3, 3], [9, 9]),  # one key at two depths
        ([1, 0], [1, 1], [4, 4], [9, 9]),  # not in request order
        ([0, 1], [1, 1], [4, 4], [9, 3]),  # a path longer than its request
        ([0], [1], [4], [9, 0]),  # a request of no tokens
        ([0, 1], [-1, -1], [4, 4], [9, 9]),  # a negative key (numpy's single-int64 order differs there)
        ([0, 1], [1 << 48, 1 << 48], [4, 4], [9, 9]),  # a key past numpy's single-int64 order
        ([0, 1], [7, 7], [0, 0], [9, 9]),  # no entry with tokens: numpy's all-private forest
        ([], [], [], []),
    ):
        assert call(*args) is None, args
    strided = np.arange(8, dtype=np.int64)[::2]
    assert host_core.glue_call("forest_from_paths", strided, strided, strided, np.full(4, 9), False) is NotImplemented
    f = PrefixForest.from_paths(np.array([0, 1]), np.array([1 << 48] * 2), np.array([4, 4]), np.array([6, 5]),
                                np.array([0, 10]))
    assert f.tok.tolist() == [4, 2, 1] and f.q.tolist() == [2, 1, 1]  # the numpy version builds it


def _corrupt_inputs(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=4, max_requests=24, max_len=24, max_request_tokens=5000)
    batch = layout_tree(tree, rng=rng)
    req, key, length = paths_of(batch)
    seq = np.diff(batch.kv_indptr.numpy().astype(np.int64))
    return rng, req, key, length, seq, np.arange(batch.batch, dtype=np.int64) * 10_000


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["length", "depth"]))
def test_from_paths_rejects_inconsistent_paths(seed: int, kind: str) -> None:
    """One radix node (key) must have one position, length and parent in every path through it."""
    rng, req, key, length, seq, row_base = _corrupt_inputs(seed)
    PrefixForest.from_paths(req, key, length, seq, row_base)  # the valid paths are accepted
    seq = seq.copy()
    if kind == "length":  # a node two requests pass through, with another length in one of them
        keys, counts = np.unique(key, return_counts=True)
        assume(bool((counts > 1).any()))
        k = int(rng.choice(keys[counts > 1]))
        e = int(rng.choice(np.flatnonzero(key == k)))
        length = length.copy()
        length[e] += 1
        seq[req[e]] += 1  # room for it: only the disagreement is wrong
    else:  # a root node appended again at the end of some request's path (a deeper position)
        assume(req.shape[0] > 0)
        roots = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])  # each request's first entry
        e = int(rng.choice(roots))
        r = int(rng.choice(np.unique(req)))
        at = int(np.flatnonzero(req == r)[-1]) + 1
        req, key, length = (np.insert(a, at, v) for a, v in ((req, r), (key, key[e]), (length, length[e])))
        seq[r] += length[at]
    with pytest.raises(ValueError, match="disagree"):
        PrefixForest.from_paths(req, key, length, seq, row_base)


@pytest.mark.parametrize(
    ("req", "key", "length", "seq", "message"),
    [
        ([0, 0, 1], [1, 2, 2], [4, 3, 3], [9, 9], "disagree"),  # key 2 at depth 1 and depth 0
        ([0, 1], [1, 1], [4, 5], [9, 9], "disagree"),  # key 1 with 4 and 5 tokens
        ([0, 0, 1, 1], [1, 3, 2, 3], [4, 2, 4, 2], [9, 9], "disagree"),  # key 3 below two parents
        ([1, 0], [1, 1], [4, 4], [9, 9], "grouped by request"),
        ([0, 2], [1, 1], [4, 4], [9, 9], "grouped by request"),  # request 2 of a batch of 2
        ([0, 1], [1, 1], [4, 4], [9, 3], "exceeds its length"),
        ([0], [1], [4], [9, 0], "no KV tokens"),
        ([], [], [], [], "empty batch"),
    ],
)
def test_from_paths_bad_inputs(req: list, key: list, length: list, seq: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrefixForest.from_paths(
            np.array(req, np.int64), np.array(key, np.int64), np.array(length, np.int64), np.array(seq, np.int64),
            np.arange(len(seq), dtype=np.int64) * 100,
        )


# ---------------------------------------------------------------------------------------------- no sharing
@SETTINGS
@given(lengths=st.lists(st.integers(1, 5000), min_size=1, max_size=64), seed=st.integers(0, 2**31 - 1))
def test_private_covers_each_row_once(lengths: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(lengths)
    row_base = rng.permutation(n).astype(np.int64) * 8192  # rows in any order
    forest = PrefixForest.private(np.array(lengths), row_base)
    check_structure(forest)
    assert forest.num_requests == forest.num_nodes == n
    assert slot_free_key(forest) == tuple(sorted(((r,), 0, m) for r, m in enumerate(lengths)))
    assert sorted(forest.req_flat.tolist()) == list(range(n)) and (forest.q == 1).all()
    assert forest.kv_begin().tolist() == row_base[forest.rep].tolist()  # each node read through its own row
    assert forest.shared_tokens() == 0 and forest.unique_tokens() == forest.request_tokens() == sum(lengths)
    grown = forest.with_lengths(np.array(lengths) + 1)  # every node is a private leaf
    assert grown is not None and slot_free_key(grown) == tuple(sorted(((r,), 0, m + 1) for r, m in enumerate(lengths)))


def test_private_bad_inputs() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        PrefixForest.private(np.zeros(0, np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="no KV tokens"):
        PrefixForest.private(np.array([3, 0]), np.array([0, 10]))
