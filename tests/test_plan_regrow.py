"""Re-made plans (``plan_forest(previous=...)``): the plan of a forest whose private leaves grew equals a fresh plan
of it at the same split length (same KV ranges, requests and tiles per item; same bytes), is exact against float64
attention, and is only re-made when the structure and arguments are the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_sglang.config import HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import PlanLimits, plan_forest
from pat_sglang.reference import naive_decode, run_reference
from pat_sglang.workloads import layout_tree, random_tree

HEADS = HeadConfig(8, 2, 64, torch.bfloat16)


def grown_batch(seed: int, room: int = 64):
    """A random forest whose requests all own a private leaf, laid out in a slot table with ``room`` free positions
    after each row (where later decode tokens go), plus the table and row bases."""
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=5, max_requests=40, max_len=200)
    batch = layout_tree(tree, rng=rng)
    chains, tails = batch.chains()
    n, base = len(chains), batch.num_slots
    tails = [np.concatenate([t, [base + i]]) for i, t in enumerate(tails)]  # every request owns a private token
    forest = PrefixForest.from_chains(chains, tails)
    rows = [np.concatenate([forest.request_slots(r), base + n + r * room + np.arange(room)]) for r in range(n)]
    widths = np.array([x.shape[0] for x in rows])
    row_base = np.cumsum(widths) - widths
    table = np.concatenate(rows)
    laid = PrefixForest(
        forest.tok, forest.start, forest.parent, forest.depth, forest.req_ptr, forest.req_flat, row_base,
        forest.request_lengths.copy(), table,
    )
    return rng, laid, table, row_base


def item_key(plan) -> list:
    items, req = plan.items.numpy(), plan.item_req.numpy()
    return sorted((int(a[0]), int(a[1]), tuple(sorted(req[a[2] : a[3]].tolist())), int(a[5])) for a in items)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("limited", [False, True])
@pytest.mark.parametrize("split_tokens", [None, 1 << 20])
def test_regrown_plans_equal_fresh_plans_and_are_exact(seed: int, limited: bool, split_tokens: int | None) -> None:
    """Only plans of the first planning pass are re-made (a coarsened plan could differ from a fresh plan once the
    leaves grew), so the limited case uses limits that fit with room. With the cost model's split length (None) a
    leaf crossing a multiple of it replans the step; with packs that never split, every step after the first is
    re-made."""
    rng, forest0, table, row_base = grown_batch(seed)
    n = forest0.num_requests
    limits = PlanLimits(64 * n, 64 * n, 256 * n) if limited else None
    slot_table = torch.from_numpy(table.astype(np.int32))
    k = torch.randn(int(table.max()) + 1, 2, 64, dtype=torch.float64)
    v = torch.randn_like(k)
    lengths = forest0.request_lengths.copy()
    previous = None
    regrown = 0
    for step in range(16):
        lengths = lengths + (1 if step % 4 else rng.integers(0, 4, n))  # mostly one token, sometimes more
        forest = forest0.with_lengths(lengths)
        plan = plan_forest(forest, HEADS, min_split_tokens=16, limits=limits, slot_table=slot_table,
                           previous=previous, split_tokens=split_tokens)
        remade = previous is not None and plan.item_req is previous.item_req
        # a re-made plan keeps last step's split length, and so may a plan made from scratch while its planned KV stays
        # near what the length was chosen for (SPLIT_KEEP_FRACTION); a fresh pass may choose another: compare at the
        # plan's own length whenever it is last step's
        kept = previous is not None and plan.split_tokens == previous.split_tokens
        fresh = plan_forest(forest, HEADS, min_split_tokens=16, limits=limits, slot_table=slot_table,
                            split_tokens=plan.split_tokens if kept else split_tokens)
        if remade:
            assert previous is not None and plan.split_tokens == previous.split_tokens
            regrown += 1
        # the cost model compared lengths only in a pass that chose one (not given, not re-made; a search may choose
        # last step's length again)
        assert not plan.split_searched or not (remade or split_tokens is not None)
        assert plan.to("cpu").split_searched == plan.split_searched
        assert item_key(plan) == item_key(fresh)
        assert plan.stats.kv_bytes_planned == fresh.stats.kv_bytes_planned
        assert plan.num_partials == fresh.num_partials and plan.fallback == fresh.fallback == ""
        assert [p.num_tokens for p in plan.packs] == [p.num_tokens for p in fresh.packs]
        indptr = torch.from_numpy(np.r_[0, np.cumsum(lengths)])
        indices = torch.from_numpy(np.concatenate([table[row_base[r] : row_base[r] + lengths[r]] for r in range(n)]))
        q = torch.randn(n, 8, 64, dtype=torch.float64)
        got = run_reference(plan, q, k, v, 0.125)
        want = naive_decode(q, k, v, indptr, indices, 0.125)
        assert float((got - want).abs().max()) < 1e-9
        previous = plan
    if split_tokens is not None:
        assert regrown == 15, "a step with unchanged split counts was planned from scratch"


def test_no_regrow_across_structures_or_arguments() -> None:
    _, forest, table, _ = grown_batch(3)
    slot_table = torch.from_numpy(table.astype(np.int32))
    plan = plan_forest(forest, HEADS, slot_table=slot_table)
    rebuilt = PrefixForest(  # same arrays, another structure object: not a with_lengths of the planned forest
        forest.tok, forest.start, forest.parent, forest.depth, forest.req_ptr, forest.req_flat, forest.row_base,
        forest.request_lengths + 1, table,
    )
    assert plan_forest(rebuilt, HEADS, slot_table=slot_table, previous=plan).item_req is not plan.item_req
    grown = forest.with_lengths(forest.request_lengths + 1)
    other = HeadConfig(16, 2, 64, torch.bfloat16)
    assert plan_forest(grown, other, slot_table=slot_table, previous=plan).heads == other
    assert plan_forest(grown, HEADS, slot_table=slot_table, previous=plan).item_req is plan.item_req


def test_an_unsplit_plan_is_remade_while_its_rows_grow() -> None:
    """64 private rows of 4096 tokens on an H200-sized GPU: the cost model cuts nothing (one wave of 512 CTAs), and the
    split length it records leaves room above the longest row, so the next steps (a token more per row each) re-make
    the plan instead of planning from scratch."""
    from pat_sglang.config import DeviceSpec

    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = DeviceSpec(sm_count=132, ctas_per_sm=4)
    n, length, room = 64, 4096, 16
    table = np.random.default_rng(0).permutation(n * (length + room)).astype(np.int64)
    row_base = np.arange(n) * (length + room)
    forest = PrefixForest.private(np.full(n, length), row_base)
    laid = PrefixForest(forest.tok, forest.start, forest.parent, forest.depth, forest.req_ptr, forest.req_flat,
                        row_base, forest.request_lengths.copy(), table)
    slot_table = torch.from_numpy(table.astype(np.int32))
    plan = plan_forest(laid, heads, device, slot_table=slot_table)
    assert plan.num_items == n and plan.split_tokens > length
    for step in range(1, room + 1):
        grown = plan_forest(laid.with_lengths(np.full(n, length + step)), heads, device, slot_table=slot_table,
                            previous=plan)
        assert grown.item_req is plan.item_req, f"step {step} planned from scratch"
        plan = grown


def test_split_search_is_flagged_only_where_it_ran() -> None:
    """``PackPlan.split_searched`` (the backend's slowest-step line names it): a fresh plan of unequal packs on an
    H200-sized GPU compares split lengths; the same forest with a given length, and the plan re-made for grown
    leaves, do not."""
    from pat_sglang.config import DeviceSpec

    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = DeviceSpec(sm_count=132, ctas_per_sm=4)
    rng = np.random.default_rng(7)
    lengths = rng.integers(1000, 9000, 64)  # unequal private rows: several lengths cost differently
    room = 16
    row_base = np.cumsum(lengths + room) - (lengths + room)
    table = rng.permutation(int((lengths + room).sum())).astype(np.int64)
    forest = PrefixForest.private(lengths, row_base)
    laid = PrefixForest(forest.tok, forest.start, forest.parent, forest.depth, forest.req_ptr, forest.req_flat,
                        row_base, forest.request_lengths.copy(), table)
    slot_table = torch.from_numpy(table.astype(np.int32))
    plan = plan_forest(laid, heads, device, slot_table=slot_table)
    assert plan.split_searched
    assert not plan_forest(laid, heads, device, slot_table=slot_table, split_tokens=plan.split_tokens).split_searched
    grown = plan_forest(laid.with_lengths(lengths + 1), heads, device, slot_table=slot_table, previous=plan)
    assert grown.item_req is plan.item_req and not grown.split_searched


def test_a_pack_growing_long_is_planned_afresh() -> None:
    """Head dim 256 (sm_90's least tile m 64) with packs long from 1024 KV tokens: a private row that grows from 1020
    to 1024 tokens leaves its 64-row item for a 16-row one at that step; each step's plan is the fresh plan of its
    forest (re-made while no pack crosses 1024) and exact against float64 attention."""
    from pat_sglang.config import DeviceSpec, load_tile_table
    from pat_sglang.planner import ITEM_REQ_BEGIN, ITEM_TILE_M

    heads = HeadConfig(8, 2, 256, torch.bfloat16)
    tiles = load_tile_table("sm90").with_min_tile_m_tokens(1024)
    device = DeviceSpec(sm_count=132, ctas_per_sm=2)
    lengths = np.array([1020, 400, 2000])
    room = 8
    n = lengths.shape[0]
    width = lengths + room
    row_base = np.cumsum(width) - width
    table = np.random.default_rng(1).permutation(int(width.sum())).astype(np.int64)
    forest = PrefixForest.private(lengths, row_base)
    laid = PrefixForest(forest.tok, forest.start, forest.parent, forest.depth, forest.req_ptr, forest.req_flat,
                        row_base, forest.request_lengths.copy(), table)
    slot_table = torch.from_numpy(table.astype(np.int32))
    gen = torch.Generator().manual_seed(2)
    k = torch.randn(table.shape[0], 2, 256, generator=gen, dtype=torch.float64)
    v = torch.randn(table.shape[0], 2, 256, generator=gen, dtype=torch.float64)
    previous, regrown = None, 0
    for step in range(room):
        now = lengths + step
        grown = laid.with_lengths(now)
        plan = plan_forest(grown, heads, device, tiles=tiles, slot_table=slot_table, previous=previous)
        fresh = plan_forest(grown, heads, device, tiles=tiles, slot_table=slot_table, split_tokens=plan.split_tokens)
        assert item_key(plan) == item_key(fresh)
        regrown += previous is not None and plan.item_req is previous.item_req
        items, req = plan.items.numpy(), plan.item_req.numpy()
        # each request's tile m (its 4 rows: one KV head's group), from its items
        tile_of = {int(req[it[ITEM_REQ_BEGIN]]): int(it[ITEM_TILE_M]) for it in items}
        assert tile_of == {0: 16 if now[0] >= 1024 else 64, 1: 64, 2: 16}, (step, tile_of)
        indptr = torch.from_numpy(np.r_[0, np.cumsum(now)])
        indices = torch.from_numpy(np.concatenate([table[row_base[r] : row_base[r] + now[r]] for r in range(n)]))
        q = torch.randn(n, 8, 256, generator=gen, dtype=torch.float64)
        got = run_reference(plan, q, k, v, 0.0625)
        assert float((got - naive_decode(q, k, v, indptr, indices, 0.0625)).abs().max()) < 1e-9
        previous = plan
    assert regrown == room - 2  # every step but the first and the one where request 0's pack grew long
