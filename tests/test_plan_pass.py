"""The planning pass in one compiled call (``planner._compiled_pass``: ``kernels/host_pass.c``, then ``host_items.c``)
against the numpy pass (``planner._numpy_pass``, its reference): the same packs, split counts, numbers, items, split
search and coarser re-choice on random forests, with and without limits, a kept split length, a fixed one, open ends
and the tail split; and the one case it leaves to numpy (a search over packs that are all alike) left there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_sglang import host_core, planner
from pat_sglang.config import DeviceSpec, HeadConfig, load_tile_table
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import PlanLimits, plan_forest
from pat_sglang.workloads import layout_tree, random_tree, row_batch

HEADS = (
    HeadConfig(32, 8, 128, torch.bfloat16),
    HeadConfig(8, 2, 64, torch.bfloat16),
    HeadConfig(64, 8, 128, torch.float16),
    HeadConfig(32, 32, 128, torch.bfloat16),
    HeadConfig(28, 4, 128, torch.bfloat16, torch.float8_e4m3fn),
)


@pytest.fixture(scope="module", autouse=True)
def glue() -> None:
    if host_core.loaded_glue() is None:  # numpy's and Python's headers are there wherever tests run
        pytest.fail("the host core's extension module did not load (see the log for the reason)")


def _forest(rng: np.random.Generator, short_nodes: bool) -> tuple[PrefixForest, torch.Tensor, int | None]:
    """A random forest with its slot table: from rows of SGLang's layout (open ends) or from flat slots."""
    max_len = 12 if short_nodes else 1500  # nodes of a few tokens: some shared nodes do not pay for their own pack
    tree = random_tree(rng, max_depth=5, max_requests=int(rng.integers(2, 200)), max_len=max_len,
                       p_inner_request=0.2, p_duplicate=0.1)
    batch = layout_tree(tree, rng=rng)
    if rng.random() < 0.5:
        rows = row_batch(batch, room=int(rng.integers(1, 300)), rng=rng, private_tail=bool(rng.random() < 0.7))
        return rows.forest, rows.slot_table(), rows.row_stride
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    return forest, torch.from_numpy(forest.slot_table.astype(np.int32)), None


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _limits(rng: np.random.Generator, forest: PrefixForest) -> PlanLimits | None:
    if rng.random() < 0.4:
        return None
    n = forest.num_requests
    if rng.random() < 0.15:  # capacities of zero, or below the batch: limits all the same (never "no limits")
        return PlanLimits(max_items=int(rng.integers(0, n + 1)), max_partials=int(rng.integers(0, 2)),
                          max_entries=int(rng.integers(0, n + 1)))
    scale = float(rng.choice([0.5, 1.0, 2.0, 8.0]))  # tight ones overflow: None, or the coarser re-choice
    return PlanLimits(max_items=max(n, int(scale * 4 * n)), max_partials=int(scale * 4 * n),
                      max_entries=max(n, int(scale * 8 * n)))


@pytest.mark.parametrize("seed", range(240))
def test_the_compiled_pass_equals_the_numpy_pass(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    forest, slot_table, row_stride = _forest(rng, short_nodes=seed % 3 == 0)
    heads = HEADS[seed % len(HEADS)]
    device = DeviceSpec(sm_count=int(rng.choice([4, 78, 132])))
    tiles = load_tile_table(device.arch)
    if seed % 7 == 0:
        monkeypatch.setenv(planner.TAIL_SPLIT_ENV, "0")
    rules = planner._pass_rules(heads, device, tiles)
    limits = _limits(rng, forest)
    first = plan_forest(forest, heads, device, slot_table=slot_table, row_stride=row_stride)
    # a kept length (last step's, or one near it), a caller's fixed length, or the planner's choice
    keep = split_tokens = None
    choice = seed % 4
    if choice == 1:
        keep = (first.split_tokens, int(first.stats.kv_bytes_planned // rules.tok_bytes))
    elif choice == 2:
        keep = (int(rng.integers(16, 4096)), int(rng.integers(1, 1 << 20)))
    elif choice == 3:
        split_tokens = int(rng.integers(16, 2048))
    min_split = int(rng.choice([planner.MIN_SPLIT_TOKENS, 64, planner.INT32_MAX]))
    args = (min_split, limits, slot_table, row_stride, split_tokens, keep)
    got = planner._compiled_pass(forest, heads, rules, *args, "")
    want = planner._numpy_pass(forest, heads, rules, *args, "")
    if got is NotImplemented:  # left to numpy: a search over packs that are all alike (its uniform model)
        assert choice != 3
        if want is not None:
            pack_tokens, pack_ptr = want[1][2], want[1][3]
            assert want[3] and (pack_tokens == pack_tokens[0]).all() and len(set(np.diff(pack_ptr).tolist())) == 1
        return
    assert (got is None) == (want is None)
    if got is not None:
        assert _same(got, want), [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if not _same(a, b)]


def test_it_serves_the_common_passes() -> None:
    """Kept split lengths, single candidates and searches over packs of different lengths are the compiled pass's own:
    a step planner's changed steps take it (the point of it), not the numpy pass."""
    served = left = searches = compiled_searches = 0
    for seed in range(60):
        rng = np.random.default_rng(10_000 + seed)
        forest, slot_table, row_stride = _forest(rng, short_nodes=seed % 2 == 0)
        heads, device = HEADS[0], DeviceSpec()
        rules = planner._pass_rules(heads, device, load_tile_table(device.arch))
        first = plan_forest(forest, heads, device, slot_table=slot_table, row_stride=row_stride)
        keep = (first.split_tokens, int(first.stats.kv_bytes_planned // rules.tok_bytes))
        got = planner._compiled_pass(forest, heads, rules, planner.MIN_SPLIT_TOKENS, None, slot_table, row_stride, None,
                                     keep, "")
        served += got is not NotImplemented and got is not None
        left += got is NotImplemented
        # a search (no kept length, several candidates) too, unless every pack is alike
        searched = planner._compiled_pass(forest, heads, rules, planner.MIN_SPLIT_TOKENS, None, slot_table, row_stride,
                                          None, None, "")
        want = planner._numpy_pass(forest, heads, rules, planner.MIN_SPLIT_TOKENS, None, slot_table, row_stride, None,
                                   None, "")
        pack_tokens, pack_ptr = want[1][2], want[1][3]
        alike = bool((pack_tokens == pack_tokens[0]).all()) and len(set(np.diff(pack_ptr).tolist())) == 1
        if want[3] and not alike:
            searches += 1
            compiled_searches += searched is not NotImplemented and searched[3]
    assert served == 60 and left == 0
    assert searches >= 20 and compiled_searches == searches, (searches, compiled_searches)


def test_plans_through_it_equal_the_numpy_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole plans (``plan_forest`` with last step's plan, as a step planner passes it): the same tensors, split
    length and statistics with the compiled pass as without the extension module."""
    plans = []
    for glue in (True, False):
        if not glue:
            monkeypatch.setattr(host_core, "loaded_glue", lambda: None)
        rng = np.random.default_rng(7)
        made = []
        for _ in range(20):
            forest, slot_table, row_stride = _forest(rng, short_nodes=False)
            previous = None
            for _ in range(2):  # the second pass keeps the first's split length
                previous = plan_forest(forest, HEADS[0], DeviceSpec(), slot_table=slot_table, row_stride=row_stride,
                                       previous=previous, limits=PlanLimits(4096, 4096, 8192))
                made.append(previous)
        plans.append(made)
    for a, b in zip(*plans, strict=True):
        for name in ("items", "item_req", "item_dst", "merge_indptr", "merge_partials"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert (a.split_tokens, a.num_partials, a.num_open, a.stats, a.fallback) == (
            b.split_tokens, b.num_partials, b.num_open, b.stats, b.fallback)
        assert [p.__dict__ for p in a.packs] == [p.__dict__ for p in b.packs]
