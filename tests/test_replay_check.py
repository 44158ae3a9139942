"""bench/replay_check.py: the soak's checks on the quick replay (batch 8, context 1k, chunks of 256: Mooncake through
SGLang's real RadixCache), and each check failing on a plan broken the way a host-path bug would break it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts import BENCH, on_path

on_path(BENCH)

import host_replay as hr  # noqa: E402
import replay_check as rc  # noqa: E402

from pat_sglang.planner import (  # noqa: E402
    ITEM_KV_BEGIN,
    ITEM_KV_END,
    ITEM_OPEN_END,
    ITEM_REQ_BEGIN,
    ITEM_REQ_END,
    copy_with,
    plan_array,
)

SMALL_HEADS = (4, 2, 64)


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def specs(mooncake_specs: list) -> list:
    return mooncake_specs


@pytest.fixture(scope="module")
def shared_step(specs: list) -> tuple:
    """A planned step of the quick replay whose plan has an item shared by several requests: (plan, rows, seq_lens,
    the flat req_to_token at that step)."""
    found: list[tuple] = []

    def keep(sim, be, view, rec) -> None:
        md = be.forward_metadata
        if found or md is None:
            return
        plan = md.plan
        items = plan.items.numpy()
        if ((items[:, ITEM_REQ_END] - items[:, ITEM_REQ_BEGIN]) > 1).any():
            raw = int(view.batch_size)
            found.append((plan, view.req_pool_indices.numpy()[:raw].copy(), view.seq_lens_cpu.numpy()[:raw].copy(),
                          sim.r2t.reshape(-1).copy()))

    hr.run_point(hr.quick_config(heads=SMALL_HEADS, steps=40), specs, on_step=keep)
    if not found:
        pytest.fail("the quick replay planned no item shared by two requests")
    return found[0]


def test_quick_soak_checks_every_planned_step(specs: list) -> None:
    """Without the gate every decode step is planned and checked (coverage), every third also exactly against float64
    attention; changed batches (edited or built forests) and unchanged ones (the plan as it was) both occur."""
    cfg = hr.quick_config(heads=SMALL_HEADS, steps=40)
    checker, res = rc.run(cfg, specs, exact_every=3)
    planned = sum(checker.kinds.values())
    assert planned == res.backend.stats.steps == len(res.records) + res.untimed_steps
    assert checker.declined == 0 and checker.exact == planned // 3 > 0
    assert checker.max_exact_err < rc.EXACT_TOL
    assert checker.kinds["none"] > 0 and checker.kinds["edited"] + checker.kinds["built"] > 0, checker.kinds


def test_coverage_accepts_the_plan_as_made(shared_step: tuple) -> None:
    plan, rows, seq, table = shared_step
    assert rc.coverage_error(plan, rows, seq, table) is None


def _closed_item(plan) -> int:
    items = plan.items.numpy()
    closed = np.flatnonzero(items[:, ITEM_KV_END] != ITEM_OPEN_END)
    assert closed.shape[0], "no closed item"
    return int(closed[0])


@pytest.mark.parametrize("delta", [-1, 1])
def test_coverage_finds_an_item_one_token_short_or_long(shared_step: tuple, delta: int) -> None:
    plan, rows, seq, table = shared_step
    items = plan.items.numpy().copy()
    i = _closed_item(plan)
    items[i, ITEM_KV_END] += delta
    err = rc.coverage_error(copy_with(plan, items=torch.from_numpy(items)), rows, seq, table)
    assert err is not None and ("gap" in err or "overlap" in err or "ends at" in err or "empty" in err), err


def test_coverage_finds_a_dropped_item(shared_step: tuple) -> None:
    plan, rows, seq, table = shared_step
    items = plan.items.numpy()
    for i in range(items.shape[0]):  # every item dropped in turn: each leaves some request's positions unread
        kept = np.delete(items, i, axis=0)
        assert rc.coverage_error(copy_with(plan, items=torch.from_numpy(kept)), rows, seq, table) is not None, i


def test_coverage_finds_a_request_that_holds_other_slots(shared_step: tuple) -> None:
    """A shared item read through one member's row, where another member's own row holds a different slot: the
    sharing the plan assumed is not the radix cache's."""
    plan, rows, seq, table = shared_step
    items = plan.items_at(seq, rows)
    item_req = plan_array(plan, "item_req")
    stride = plan.row_stride
    i = int(np.flatnonzero((items[:, ITEM_REQ_END] - items[:, ITEM_REQ_BEGIN]) > 1)[0])
    reader = int(items[i, ITEM_KV_BEGIN]) // stride
    members = item_req[items[i, ITEM_REQ_BEGIN] : items[i, ITEM_REQ_END]].tolist()
    other = next(r for r in members if int(rows[r]) != reader)
    broken = table.copy()
    pos = int(items[i, ITEM_KV_BEGIN]) - reader * stride
    broken[int(rows[other]) * stride + pos] = broken.max() + 1
    err = rc.coverage_error(plan, rows, seq, broken)
    assert err is not None and f"request {other} reads another request's slot" in err, err


def test_coverage_finds_a_request_outside_the_batch(shared_step: tuple) -> None:
    plan, rows, seq, table = shared_step
    item_req = plan_array(plan, "item_req").copy()
    item_req[0] = plan.num_requests
    err = rc.coverage_error(copy_with(plan, item_req=torch.from_numpy(item_req)), rows, seq, table)
    assert err is not None and "outside the batch" in err, err


def test_exact_check_finds_a_wrong_merge(shared_step: tuple) -> None:
    """The exact check reads the merge map: a plan whose items cover every row but whose partials are merged into the
    wrong request fails it, where coverage alone cannot tell."""
    plan, rows, seq, table = shared_step
    partials = plan_array(plan, "merge_partials")
    indptr = plan_array(plan, "merge_indptr")
    merged = np.flatnonzero(np.diff(indptr) > 0)  # requests whose output is merged from partials
    assert merged.shape[0] >= 2, "the step's plan merges fewer than two requests"
    a, b = int(indptr[merged[0]]), int(indptr[merged[-1]])  # a partial of the first and of the last such request
    swapped = partials.copy()
    swapped[[a, b]] = swapped[[b, a]]
    plan = copy_with(plan, slot_table=torch.from_numpy(table))  # the step's req_to_token (the replay went on since)
    broken = copy_with(plan, merge_partials=torch.from_numpy(swapped))
    assert rc.coverage_error(broken, rows, seq, table) is None
    sim = type("Sim", (), {"num_slots": int(table.max()) + 1, "r2t": table.reshape(-1, plan.row_stride)})()
    checker = rc.SoakChecker(SMALL_HEADS, exact_every=1)
    assert checker._exact(sim, plan, rows, seq) < rc.EXACT_TOL
    with pytest.raises(rc.PlanCheckError, match="differs from plain attention|never written"):
        checker._exact(sim, broken, rows, seq)
