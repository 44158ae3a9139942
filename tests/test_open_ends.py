"""Open-ended items (``planner.ITEM_OPEN_END``): a plan made with ``row_stride`` marks exactly the items that end at a
request's growing end (the last KV split of each request's own private leaf) open, and a plan made at lengths ``L``
and run at ``L + k`` (the rows grown by ``k`` new tokens each, as later decode steps append them) equals float64
attention over the new lengths, in the reference executor that does what the kernel does (``PackPlan.items_at``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.planner import (
    ITEM_KV_BEGIN,
    ITEM_KV_END,
    ITEM_OPEN_END,
    ITEM_REQ_BEGIN,
    ITEM_REQ_END,
    PlanLimits,
    plan_forest,
)
from pat_sglang.reference import naive_decode, run_reference
from pat_sglang.workloads import RowBatch, layout_tree, random_tree, row_batch

HEADS = HeadConfig(8, 2, 64, torch.bfloat16)
SMALL_GPU = DeviceSpec(sm_count=4)  # few CTAs: long leaves get several KV splits


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


def random_rows(seed: int, private_tail: bool, room: int = 160, page_size: int = 1) -> RowBatch:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, max_depth=5, max_requests=40, max_len=300, page_size=page_size, p_inner_request=0.2,
                       p_duplicate=0.1)
    return row_batch(layout_tree(tree, page_size, rng), room=room, rng=rng, private_tail=private_tail)


def check_open_items(plan, batch: RowBatch) -> None:
    """Every request that ends in its own leaf has exactly one open item, which lists only it and reads up to its
    current end (the item covering its last position); no other item is open, and closed items end where they
    began to (inside the rows)."""
    forest = batch.forest
    items = plan.items.numpy()
    item_req = plan.item_req.numpy()
    is_open = items[:, ITEM_KV_END] == ITEM_OPEN_END
    own_leaf = forest.q[forest.last_node] == 1
    assert plan.num_open == int(is_open.sum()) == int(own_leaf.sum())
    assert plan.row_stride == batch.row_stride
    opened = []
    for it in items[is_open]:
        reqs = item_req[it[ITEM_REQ_BEGIN] : it[ITEM_REQ_END]]
        assert reqs.shape[0] == 1, "an open item lists one request"
        r = int(reqs[0])
        opened.append(r)
        end = int(batch.rows[r]) * batch.row_stride + int(batch.seq_lens[r])
        assert it[ITEM_KV_BEGIN] < end, "an open item is empty"
    assert sorted(opened) == np.flatnonzero(own_leaf).tolist()
    closed_end = items[~is_open, ITEM_KV_END]
    ends = batch.rows * batch.row_stride + batch.seq_lens
    # A closed item never ends at a request's end when that request has an open item (its end would not grow).
    assert not np.isin(closed_end, ends[own_leaf]).any()
    # items_at resolves exactly the open ends, to the requests' current ends.
    resolved = plan.items_at(batch.seq_lens, batch.rows)
    assert np.array_equal(resolved[~is_open], items[~is_open])
    assert np.array_equal(resolved[is_open, ITEM_KV_END], ends[item_req[items[is_open, ITEM_REQ_BEGIN]]])


def assert_exact(plan, batch: RowBatch, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(plan.num_requests, HEADS.num_q_heads, HEADS.head_dim, generator=gen, dtype=torch.float64)
    k = torch.randn(batch.num_slots, HEADS.num_kv_heads, HEADS.head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn_like(k)
    got = run_reference(plan, q, k, v, 0.125, seq_lens=torch.from_numpy(batch.seq_lens),
                        rows=torch.from_numpy(batch.rows))
    indptr, flat = batch.kv_flat()
    want = naive_decode(q, k, v, indptr, flat, 0.125)
    assert torch.isfinite(got).all(), "a request's output was never written"
    assert (got - want).abs().max().item() < 1e-9


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("private_tail", [True, False])
def test_exactly_the_growing_items_are_open(seed: int, private_tail: bool) -> None:
    batch = random_rows(seed, private_tail)
    for device in (DeviceSpec(), SMALL_GPU):
        plan = plan_forest(batch.forest, HEADS, device, slot_table=batch.slot_table(), row_stride=batch.row_stride)
        check_open_items(plan, batch)
        closed = plan_forest(batch.forest, HEADS, device, slot_table=batch.slot_table())
        assert closed.num_open == 0 and closed.row_stride is None
        assert (closed.items.numpy()[:, ITEM_KV_END] != ITEM_OPEN_END).all()
        # the same plan otherwise: the open items resolved at the planned lengths are the closed plan's items
        assert np.array_equal(plan.items_at(batch.seq_lens, batch.rows), closed.items.numpy())
        assert plan.stats == closed.stats
    # Coarsened plans (limits) mark the same way; without sharing every request reads its whole row through one open
    # item (also those that end in a shared node of the forest).
    n = batch.forest.num_requests
    seen = set()
    for limits in (PlanLimits(4 * n, 4 * n, 8 * n), PlanLimits(2 * n, 2 * n, 4 * n), PlanLimits(n, 0, n)):
        plan = plan_forest(batch.forest, HEADS, SMALL_GPU, slot_table=batch.slot_table(), row_stride=batch.row_stride,
                           limits=limits)
        seen.add(plan.fallback)
        if plan.fallback == "no sharing":
            assert plan.num_open == n and plan.num_items == n
            assert np.array_equal(plan.items_at(batch.seq_lens, batch.rows)[:, ITEM_KV_END],
                                  (batch.rows * batch.row_stride + batch.seq_lens)[plan.item_req.numpy()])
        else:
            check_open_items(plan, batch)
        assert_exact(plan, batch, seed)
    assert "no sharing" in seen


@pytest.mark.parametrize("seed", range(8))
def test_plan_at_lengths_l_runs_at_l_plus_k(seed: int) -> None:
    """Plan once, then grow every row by k tokens (0, 1, a few, more than a KV tile, up to 150) and run the same plan:
    float64 attention over the new lengths, every step."""
    batch = random_rows(100 + seed, private_tail=True)
    rng = np.random.default_rng(seed)
    device = SMALL_GPU if seed % 2 else DeviceSpec()
    plan = plan_forest(batch.forest, HEADS, device, slot_table=batch.slot_table(), row_stride=batch.row_stride)
    assert plan.num_open == batch.forest.num_requests
    items_before = plan.items.clone()
    assert_exact(plan, batch, seed)
    grown = batch
    for step, top in enumerate((1, 17, 70, 150)):
        k = rng.integers(0, top + 1, size=batch.forest.num_requests)
        k[rng.integers(0, k.shape[0])] = 0
        if step == 3:
            k = np.maximum(k, 0)
            k[0] = 150  # one row far past a KV tile (16-64 tokens) and past its split
        grown = grown.grow(np.minimum(k, grown.row_stride - grown.seq_lens))
        assert_exact(plan, grown, 1000 * seed + step)
    assert torch.equal(plan.items, items_before)  # the plan is never edited


def test_shorter_than_planned_is_refused() -> None:
    batch = random_rows(7, private_tail=True)
    plan = plan_forest(batch.forest, HEADS, SMALL_GPU, slot_table=batch.slot_table(), row_stride=batch.row_stride)
    items = plan.items.numpy()
    r = int(plan.item_req.numpy()[items[items[:, ITEM_KV_END] == ITEM_OPEN_END][0, ITEM_REQ_BEGIN]])
    seq = batch.seq_lens.copy()
    first = items[(items[:, ITEM_KV_END] == ITEM_OPEN_END)][0, ITEM_KV_BEGIN] - batch.rows[r] * batch.row_stride
    seq[r] = first  # the open item would be empty
    with pytest.raises(ValueError, match="shorter"):
        plan.items_at(seq, batch.rows)
    with pytest.raises(ValueError, match="open items"):
        run_reference(plan, torch.zeros(plan.num_requests, 8, 64, dtype=torch.float64),
                      torch.zeros(batch.num_slots, 2, 64, dtype=torch.float64),
                      torch.zeros(batch.num_slots, 2, 64, dtype=torch.float64), 0.125)


@pytest.mark.parametrize("seed", range(4))
def test_regrown_plans_keep_their_open_items(seed: int) -> None:
    """``plan_forest(previous=...)`` re-makes a plan for grown leaves with the same open marks (and only for the same
    ``row_stride``)."""
    batch = random_rows(200 + seed, private_tail=True)
    tables = batch.slot_table()
    first = plan_forest(batch.forest, HEADS, SMALL_GPU, slot_table=tables, row_stride=batch.row_stride)
    grown = batch.grow(np.ones(batch.forest.num_requests, dtype=np.int64))
    forest = batch.forest.with_lengths(grown.seq_lens)
    assert forest is not None
    again = plan_forest(forest, HEADS, SMALL_GPU, slot_table=tables, row_stride=batch.row_stride, previous=first)
    fresh = plan_forest(forest, HEADS, SMALL_GPU, slot_table=tables, row_stride=batch.row_stride)
    def item_set(plan):  # a re-made plan keeps its item order; a fresh one sorts by the new lengths
        req = plan.item_req.numpy()
        return sorted((int(a[ITEM_KV_BEGIN]), int(a[ITEM_KV_END]), tuple(req[a[ITEM_REQ_BEGIN] : a[ITEM_REQ_END]]))
                      for a in plan.items_at(grown.seq_lens, grown.rows))

    assert item_set(again) == item_set(fresh)
    assert again.num_open == fresh.num_open == batch.forest.num_requests
    assert again.stats.max_item_tokens == fresh.stats.max_item_tokens
    check_open_items(again, RowBatch(grown.table, grown.rows, grown.seq_lens, forest, grown.num_slots))
    closed = plan_forest(forest, HEADS, SMALL_GPU, slot_table=tables, previous=first)
    assert closed.num_open == 0 and closed.item_req is not first.item_req  # other arguments: planned afresh
