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


def _rows(seed: int):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    return row_batch(layout_tree(random_tree(rng, max_depth=4, max_requests=60, max_len=900), rng=rng), room=64,
                     rng=rng)


def _plan(seed: int, rows=None, sm_count: int = 8):  # noqa: ANN001, ANN202
    rows = rows if rows is not None else _rows(seed)
    return plan_forest(rows.forest, HEADS, DeviceSpec(sm_count=sm_count), slot_table=rows.slot_table(),
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


def test_the_load_refuses_a_plan_over_each_capacity() -> None:
    """``StaticPlanBuffers.load`` refuses a plan with more requests, items, partial slots or entries than its buffers
    hold, naming which, and takes one that fits exactly."""
    import pytest

    plan = _plan(6)
    n, items, partials = plan.num_requests, plan.num_items, plan.num_partials
    entries = int(plan_array(plan, "item_req").shape[0])
    assert items > n  # (the buffers hold at least one item per request: one fewer than the plan's is below that)
    fits = StaticPlanBuffers(HEADS, max_batch=n, max_items=items, max_partials=partials, device="cpu")
    assert fits.max_entries >= entries
    fits.load(plan)
    assert fits.plan is plan
    for what, kwargs in (("batch", {"max_batch": n - 1}), ("items", {"max_items": items - 1}),
                         ("partials", {"max_partials": partials - 1})):
        sizes = {"max_batch": n, "max_items": items, "max_partials": partials, **kwargs}
        buffers = StaticPlanBuffers(HEADS, device="cpu", **sizes)
        with pytest.raises(ValueError, match=f"plan has \\d+ {what}, the static buffers hold"):
            buffers.load(plan)
    fewer = StaticPlanBuffers(HEADS, max_batch=n, max_items=items, max_partials=partials, device="cpu")
    fewer.max_entries = entries - 1
    with pytest.raises(ValueError, match="plan has \\d+ entries, the static buffers hold"):
        fewer.load(plan)


def test_the_compiled_staging_writes_what_numpy_writes(monkeypatch) -> None:  # noqa: ANN001
    """The CUDA-graph load's host writes in one extension-module call (``kernels/host_glue.c`` ``stage_plan``) against
    the numpy copies (``kernels._stage_plan_numpy``), both from poisoned staging sets, over loads that change every
    buffer and loads that change only the items (a plan re-made from the one before)."""
    from pat_sglang import host_core, kernels

    glue = host_core.loaded_glue()
    assert glue is not None
    answers = []

    class Counting:  # the module, with its stage_plan's answers recorded
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(glue, name)

        def stage_plan(self, *args):  # noqa: ANN002, ANN202
            answers.append(glue.stage_plan(*args))
            return answers[-1]

    sets = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels.host_core, "loaded_glue", (lambda: Counting()) if compiled else (lambda: None))
        buffers = StaticPlanBuffers(HEADS, max_batch=64, max_items=4096, max_partials=4096, device="cpu")
        for flat in buffers._stage_flat:
            flat.fill_(-7)
        seen = []
        rows = _rows(7)  # one slot table (the buffers take plans of the table they were first loaded with)
        for sm_count in (4, 16, 132):
            plan = _plan(0, rows, sm_count)
            buffers.load(plan)
            seen.append(buffers._stage_flat[buffers._stage].clone())
            twin = copy_with(plan, items=plan_array(plan, "items")[::-1].copy())  # only the items change
            buffers.load(twin)
            seen.append(buffers._stage_flat[buffers._stage].clone())
        sets.append(seen)
    assert len(answers) == 6 and all(a is None for a in answers)  # every compiled load wrote (none handed back)
    for a, b in zip(*sets, strict=True):
        assert torch.equal(a, b)


def test_the_compiled_staging_hands_back_what_it_cannot_write() -> None:
    """Buffers too small for the plan, views outside the set, or arrays of another dtype: NotImplemented, nothing
    written (the numpy version then writes, or refuses, them)."""
    from pat_sglang import host_core

    glue = host_core.loaded_glue()
    plan = _plan(10)
    arrays = [plan_array(plan, n) for n in ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")]
    need = (arrays[1].size, arrays[2].size, plan.num_requests + 1, arrays[4].size, 1, arrays[0].size)
    offsets = tuple(int(sum(need[:i])) for i in range(6))
    stage = np.full(sum(need), -7, dtype=np.int32)
    assert glue.stage_plan(stage, offsets, need, 0, *arrays, plan.num_requests) is None
    assert not (stage == -7).any()
    for bad in (
        (stage, offsets, (need[0] - 1, *need[1:]), 0, *arrays, plan.num_requests),  # item_req does not fit
        (stage[:-1], offsets, need, 0, *arrays, plan.num_requests),  # the items' view beyond the set
        (stage, offsets, need, 0, arrays[0].astype(np.int64), *arrays[1:], plan.num_requests),
        (stage, offsets, need, 0, *arrays, plan.num_requests + 1),  # merge_indptr of another batch
        (stage, offsets, need, 6, *arrays, plan.num_requests),
    ):
        stage.fill(-7)
        assert glue.stage_plan(*bad) is NotImplemented
        assert (stage == -7).all()
