"""PrefixForest.from_flat against an independent construction: a per-token trie over the request rows.

The trie is as literal as it gets: a node per (prefix, next slot), its members the requests whose row has that
prefix; a canonical forest node is a maximal run of trie nodes along a path with the same members. Compared
through ``canonical_key`` (per node: requests, token range, slots), so only results are compared. Every test runs
twice: with the rows compared by the compiled host code (``host_core``, the default where a C compiler works) and
by the numpy fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pat_sglang
from pat_sglang import host_core
from pat_sglang.config import HeadConfig
from pat_sglang.forest import _SAMPLE, PrefixForest
from pat_sglang.planner import plan_forest
from pat_sglang.workloads import layout_tree, random_tree

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def row_comparison(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The forest's row comparison for the test: compiled (its absence is a failure here: CI has a C compiler) or
    the numpy fallback."""
    if request.param == "compiled":
        if host_core.loaded() is None:
            pytest.fail("the compiled host code did not load (see the log for the reason)")
    else:
        monkeypatch.setattr(host_core, "loaded", lambda: None)
    return request.param


def trie_key(rows: list[list[int]]) -> frozenset:
    """The canonical forest of ``rows`` as ``PrefixForest.canonical_key`` describes it, from a token trie."""
    child: dict[tuple[int, int], int] = {}
    members: list[set[int]] = []
    paths = []
    for r, row in enumerate(rows):
        node, path = -1, []
        for slot in row:
            node = child.setdefault((node, slot), len(members))
            if node == len(members):
                members.append(set())
            members[node].add(r)
            path.append(node)
        paths.append(path)
    out = set()
    for row, path in zip(rows, paths, strict=True):
        start = 0
        for pos in range(1, len(path) + 1):
            if pos == len(path) or members[path[pos]] != members[path[start]]:
                out.add((tuple(sorted(members[path[start]])), start, pos, tuple(row[start:pos])))
                start = pos
    return frozenset(out)


def flat(rows: list[list[int]], dtype=np.int32, extra: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([s for r in rows for s in r] + (extra or []), dtype=dtype)
    return indptr, indices


def check(rows: list[list[int]], dtype=np.int32, extra: list[int] | None = None) -> PrefixForest:
    indptr, indices = flat(rows, dtype, extra)
    forest = PrefixForest.from_flat(indptr, indices)
    assert forest.canonical_key() == trie_key(rows)
    assert forest.request_lengths.tolist() == [len(r) for r in rows]
    assert forest.slot_max == max(s for r in rows for s in r)
    # topological, canonical (no single child with the same requests), every request's path tiles its row
    nodes = forest.nodes
    for i, n in enumerate(nodes):
        assert n.num_tokens > 0 and (n.parent < i)
        if len(n.children) == 1:
            assert nodes[n.children[0]].requests != n.requests
    for r, row in enumerate(rows):
        mine = sorted((n.start, n.start + n.num_tokens) for n in nodes if r in n.requests)
        assert mine[0][0] == 0 and mine[-1][1] == len(row)
        assert all(a[1] == b[0] for a, b in zip(mine[:-1], mine[1:], strict=True))
    return forest


def random_rows(rng: np.random.Generator, page: int, max_rows: int, max_len: int) -> list[list[int]]:
    """Rows that copy a prefix of an earlier row (a page multiple or anywhere: diverging mid-page), then go on
    with fresh slots or with slots other rows hold at other positions (only equal runs from 0 are shared)."""
    rows: list[list[int]] = []
    fresh = iter(range(10**6, 10**7))
    for _ in range(int(rng.integers(1, max_rows + 1))):
        length = int(rng.integers(1, max_len + 1))
        row: list[int] = []
        if rows and rng.random() < 0.8:
            src = rows[int(rng.integers(0, len(rows)))]
            cut = int(rng.integers(0, len(src) + 1))
            if page > 1 and rng.random() < 0.5:
                cut -= cut % page
            row = src[: min(cut, length)]
        while len(row) < length:
            if rows and rng.random() < 0.1:  # a slot some row holds, at another position
                other = rows[int(rng.integers(0, len(rows)))]
                row.append(other[int(rng.integers(0, len(other)))])
            else:
                base = next(fresh) * page
                row.extend(range(base, base + page))
        rows.append(row[:length])
    return rows


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page=st.sampled_from([1, 16]), long=st.booleans())
def test_random_rows_match_trie(seed: int, page: int, long: bool) -> None:
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, page, max_rows=40, max_len=900 if long else 40)
    check(rows)
    check(rows, np.int64)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page=st.sampled_from([1, 16]))
def test_random_trees_match_trie(seed: int, page: int) -> None:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=6, max_requests=64, max_len=300, page_size=page, max_request_tokens=30000)
    batch = layout_tree(tree, page_size=page, rng=rng)
    ip = batch.kv_indptr.tolist()
    ind = batch.kv_indices.tolist()
    check([ind[a:b] for a, b in zip(ip[:-1], ip[1:], strict=True)])


def long_rows(rng: np.random.Generator, page: int, equal: bool) -> list[list[int]]:
    """A few rows of thousands of slots (long enough for the sampled bound before the exact comparison). Each copies
    a prefix of an earlier row, cut anywhere, at a sampled position or next to one, or at a page boundary, then goes
    on with fresh slots; ``equal``: all rows one length (parallel samples of one prompt), else lengths from 1 up."""
    length = int(rng.integers(_SAMPLE * 4 + 2, _SAMPLE * 16))
    fresh = iter(range(10**6, 10**7))
    rows: list[list[int]] = []
    for _ in range(int(rng.integers(2, 12))):
        size = length if equal else int(rng.integers(1, length + 1))
        row: list[int] = []
        if rows and rng.random() < 0.9:
            src = rows[int(rng.integers(0, len(rows)))]
            kind = rng.random()
            if kind < 0.4:
                cut = int(rng.integers(0, len(src) + 1))
            elif kind < 0.8:
                cut = _SAMPLE * int(rng.integers(0, len(src) // _SAMPLE + 1)) + int(rng.integers(-1, 2))
            else:
                cut = page * int(rng.integers(0, len(src) // page + 1))
            row = src[: max(0, min(cut, size))]
        while len(row) < size:
            base = next(fresh) * page
            row.extend(range(base, base + page))
        rows.append(row[:size])
    return rows


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), page=st.sampled_from([1, 16]), equal=st.booleans())
def test_long_rows_match_trie(seed: int, page: int, equal: bool) -> None:
    rows = long_rows(np.random.default_rng(seed), page, equal)
    check(rows)
    check(rows, np.int64)


def test_differences_the_samples_miss() -> None:
    # rows equal at every sampled position but different between them: only the exact comparison sees it
    n = _SAMPLE * 6
    base = list(range(n))
    for at in (1, _SAMPLE - 1, _SAMPLE + 1, 3 * _SAMPLE - 1, n - 2):
        other = base.copy()
        other[at] = 10**6
        check([base, other, base[: n // 2], base])
    # rows that first differ exactly at a sampled position, or just before or after one
    for at in (_SAMPLE, 2 * _SAMPLE - 1, 2 * _SAMPLE, 2 * _SAMPLE + 1, 5 * _SAMPLE):
        check([base, base[:at] + list(range(10**6, 10**6 + n - at)), base])
    # long rows and rows of one slot in one batch; equal long rows (one node, no leaves)
    check([base, [0], base[:1], base + [7], [5]])
    check([base] * 5)


def test_edge_cases() -> None:
    check([[7]])  # a single request of one token
    check([list(range(5000))])  # a single long request
    check([[3, 4, 5]] * 4)  # identical requests: one node, no leaves
    check([[1, 2, 3], [1, 2], [1, 2, 3, 4], [1]])  # prefixes of each other
    long = list(range(100, 3100))
    check([long, long[:1500], long + [9], long[:2999]])  # long prefixes, ends one token apart
    # diverging mid-page (page 16): the first 16 + 5 slots equal, then different slots in the same page
    a = list(range(32, 64))
    b = a[:21] + list(range(1000, 1011))
    check([a, b, a[:16] + list(range(2000, 2016))])
    # slots reused across unrelated requests at other positions: nothing is shared but equal runs from 0
    check([[1, 2, 3, 4], [5, 2, 3, 4], [1, 9, 3, 4], [2, 3, 4], [1, 2, 8, 4]])
    # every row differs from its neighbour only at its last slot, or first slot shared and nothing else
    check([[0] + list(range(10 * r + 10, 10 * r + 19)) for r in range(50)])
    check([list(range(2000)) + [10**5 + r] for r in range(30)])


def test_rows_near_the_end_of_the_indices() -> None:
    # the comparison windows of the last rows reach past the end of kv_indices: read as padding, never as slots
    base = list(range(500, 1500))
    check([base + [1], base + [2], base[:700]])
    check([[5] * 300, [5] * 299 + [6], [5] * 300])


def test_slots_past_the_last_row_are_not_read() -> None:
    # kv_indices may be longer than kv_indptr[-1] (a preallocated buffer): entries past it belong to no request
    rows = [[1, 2, 3], [1, 2, 4]]
    forest = check(rows, extra=[99, 98])
    assert forest.slot_max == 4


def test_negative_slots_refused() -> None:
    for rows in ([[0, -1, 2]], [[1, 2, -3], [1, 2, 5]], [[1, 2, 3], [1, 2, 3], [-7]]):
        for dtype in (np.int32, np.int64):
            indptr, indices = flat(rows, dtype)
            with pytest.raises(ValueError, match="negative"):
                PrefixForest.from_flat(indptr, indices)


def test_plan_reads_the_same_slots() -> None:
    """The whole standalone plan: every (item, request) reads the request's own slots at those positions."""
    rng = np.random.default_rng(5)
    check_plan(random_rows(rng, 16, max_rows=24, max_len=700))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), page=st.sampled_from([1, 16]), equal=st.booleans(),
       shape=st.sampled_from(["rows", "private", "one prefix"]))
def test_plans_of_long_rows_read_the_same_slots(seed: int, page: int, equal: bool, shape: str) -> None:
    rows = long_rows(np.random.default_rng(seed), page, equal)
    if shape == "private":  # nothing shared: every row starts with a slot of its own
        rows = [[10**8 + r] + row[1:] for r, row in enumerate(rows)]
    elif shape == "one prefix":  # every row starts with the first row's slots, then its own
        rows = [rows[0][: len(row) // 2] + row[len(row) // 2 :] for row in rows]
    check(rows)
    check_plan(rows)


def check_plan(rows: list[list[int]]) -> None:
    indptr, indices = flat(rows)
    plan = pat_sglang.plan(torch.from_numpy(indptr), torch.from_numpy(indices), HeadConfig(32, 8, 128, torch.bfloat16))
    table = plan.slot_table.numpy()
    items, item_req = plan.items.numpy(), plan.item_req.numpy()
    covered = [np.zeros(len(r), dtype=np.int64) for r in rows]
    for it in items:
        for r in item_req[it[2] : it[3]].tolist():
            pos = np.arange(it[0], it[1])
            # the item reads positions of one member's row; request r holds the same slots at the same offsets
            rep_row = int(np.searchsorted(indptr, it[0], side="right") - 1)
            offset = pos - indptr[rep_row]
            np.testing.assert_array_equal(table[pos], np.asarray(rows[r])[offset])
            covered[r][offset] += 1
    assert all((c == 1).all() for c in covered), "every token of every request read exactly once"
    assert plan.max_slot == max(s for r in rows for s in r)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("shape", ["private", "one prefix", "groups"])
def test_big_tables_check_every_slot(dtype: type, shape: str) -> None:
    """Tables past the compiled worker's thresholds (the private table, the private leaves and a group's comparisons
    on two threads): the forest's maximum is the rows' (the padding past kv_indptr[-1] not read), a negative slot
    anywhere in a row is refused by from_flat and by plan(), and plan() makes the plan of the forest from_flat
    builds."""
    rng = np.random.default_rng(7)
    n, width = 96, 4000  # 384k slots; the groups' comparisons: 95 and 71 pairs x 4000 (past 256k: on two threads)
    ind = rng.permutation(n * width + 64).astype(dtype)  # distinct slots: nothing shared
    if shape == "one prefix":
        ind[: n * width].reshape(n, width)[:, :1500] = ind[:1500]
    elif shape == "groups":
        rows = ind[: n * width].reshape(n, width)
        rows[: 3 * n // 4, :2500] = rows[0, :2500]
        rows[3 * n // 4 :, :1000] = rows[3 * n // 4, :1000]
    ind[n * width :] = np.iinfo(dtype).max  # padding past the last row: never read
    indptr = np.arange(n + 1, dtype=np.int64) * width
    forest = PrefixForest.from_flat(indptr, ind)
    assert forest.slot_max == int(ind[: n * width].max())
    assert forest.num_nodes == {"private": n, "one prefix": n + 1, "groups": n + 2}[shape]
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    made = pat_sglang.plan(torch.from_numpy(indptr), torch.from_numpy(ind), heads)
    want = plan_forest(forest, heads)
    assert made.max_slot == want.max_slot == forest.slot_max
    for name in ("items", "item_req", "item_dst", "merge_indptr", "merge_partials", "slot_table"):
        assert torch.equal(getattr(made, name), getattr(want, name)), name
    for where in (n * width - 1, 3 * width + 2600, 10):  # a private leaf's end, its middle, a shared prefix
        bad = ind.copy()
        bad[where] = -4
        with pytest.raises(ValueError, match="negative"):
            PrefixForest.from_flat(indptr, bad)
        with pytest.raises(ValueError, match="negative"):
            pat_sglang.plan(torch.from_numpy(indptr), torch.from_numpy(bad), heads)
