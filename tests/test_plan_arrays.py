"""A plan's arrays (``planner._PlanArray``): held as the planner's host arrays, read as tensors of the same memory, one
tensor per array however many plans share it; the host path's ``plan_array`` reads them without making tensors, and
the CUDA-graph buffers stage exactly the plan's values from them."""

from __future__ import annotations

import numpy as np
import torch

from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.kernels import StaticPlanBuffers
from pat_sglang.planner import PlanLimits, copy_with, plan_array, plan_forest, same_plan_array
from pat_sglang.workloads import layout_tree, random_tree, row_batch

NAMES = ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")
HEADS = HeadConfig(32, 8, 128, torch.bfloat16)


def _plan(seed: int):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    rows = row_batch(layout_tree(random_tree(rng, max_depth=4, max_requests=60, max_len=900), rng=rng), room=64,
                     rng=rng)
    return plan_forest(rows.forest, HEADS, DeviceSpec(sm_count=8), slot_table=rows.slot_table(),
                       row_stride=rows.row_stride, limits=PlanLimits(4096, 4096, 8192))


def test_arrays_are_read_as_tensors_of_the_same_memory() -> None:
    plan = _plan(1)
    for name in NAMES:
        array = plan_array(plan, name)
        assert isinstance(array, np.ndarray) and array.dtype == np.int32
        assert f"_{name}_tensor" not in plan.__dict__  # no tensor made until one is read
        tensor = getattr(plan, name)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.int32
        assert tensor.data_ptr() == array.ctypes.data and tuple(tensor.shape) == array.shape
        assert getattr(plan, name) is tensor  # made once
    assert plan.num_items == plan.items.shape[0]


def test_plans_sharing_an_array_share_its_tensor() -> None:
    plan = _plan(2)
    twin = copy_with(plan, items=plan_array(plan, "items").copy())
    assert same_plan_array(twin, plan, "item_req") and not same_plan_array(twin, plan, "items")
    assert twin.item_req is plan.item_req  # whichever plan read it first made the one tensor
    assert twin.items is not plan.items and torch.equal(twin.items, plan.items)


def test_a_tensor_given_is_kept_and_read_back_as_its_memory() -> None:
    plan = _plan(3)
    given = torch.from_numpy(plan_array(plan, "items").copy())
    other = copy_with(plan, items=given)
    assert other.items is given
    assert plan_array(other, "items").ctypes.data == given.data_ptr()


def test_the_staged_buffers_hold_the_plans_values() -> None:
    """Two plans loaded in turn into the CUDA-graph buffers (a CPU stand-in): the staging set holds each plan's arrays
    (poisoned first, so a stale value cannot pass)."""
    for seed in (4, 5):
        plan = _plan(seed)
        buffers = StaticPlanBuffers(HEADS, max_batch=64, max_items=4096, max_partials=4096, device="cpu")
        for flat in buffers._stage_flat:
            flat.fill_(-7)
        buffers.load(plan)
        host = buffers.host
        n, b = plan.num_items, plan.num_requests
        assert torch.equal(host["items"][:n], plan.items)
        assert int(host["num_items"][0]) == n
        for name in ("item_req", "item_dst", "merge_partials"):
            values = getattr(plan, name)
            assert torch.equal(host[name][: values.shape[0]], values), name
        assert torch.equal(host["merge_indptr"][: b + 1], plan.merge_indptr)
        assert bool((host["merge_indptr"][b + 1 :] == plan.merge_indptr[-1]).all())
