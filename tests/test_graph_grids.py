"""CUDA-graph forward grids fitted to each captured batch size (``StaticPlanBuffers.limits_for``).

A captured launch's grid is fixed; CTAs past the loaded plan's items start and exit at once but each takes a slot, so
a grid sized for the largest batch costs small batches many empty CTAs per layer. Each batch size gets two items per
request plus what the KV splits add (``planner.max_split_items``): these tests check that typical plans fit that
without coarsening, and that a plan over its batch's grid is refused at load (never a partly computed output)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scripts import load_script

import pat_sglang.backend as backend_mod
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import StaticPlanBuffers
from pat_sglang.planner import max_split_items, plan_forest
from pat_sglang.reference import naive_decode
from pat_sglang.workloads import STANDARD_WORKLOADS, layout_tree, tree_batch, workload_d

HEADS = [HeadConfig(32, 8, 128), HeadConfig(64, 8, 128), HeadConfig(32, 32, 128), HeadConfig(32, 8, 64),
         HeadConfig(32, 8, 256)]


def _batches() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for name, levels in STANDARD_WORKLOADS.items():
        b = tree_batch(levels, rng=0)
        out[name] = (b.kv_indptr, b.kv_indices)
    for bs, ctx in ((8, 32768), (96, 6000), (16, 700)):
        b = tree_batch(workload_d(bs, ctx), rng=1)
        out[f"d{bs}x{ctx}"] = (b.kv_indptr, b.kv_indices)
    sweep = load_script(Path(__file__).resolve().parent.parent / "bench" / "tile_sweep.py")
    for name in sweep.SERVING_CASES:
        b = layout_tree(sweep.serving_window(name).tree(2), rng=2)
        out[name] = (b.kv_indptr, b.kv_indices)
    return out


@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"{h.num_q_heads}q{h.num_kv_heads}kv{h.head_dim}")
def test_typical_plans_fit_their_batch_grid(heads: HeadConfig) -> None:
    """The anchors' trees, private rows from 8 x 32k to 96 x 6k, and the serving windows, planned for the H200 (132
    SMs) with no limits: every plan fits two items per request plus ``max_split_items``, so fitted grids coarsen none
    of them; and that grid is well below one sized for 256 requests when the batch is small."""
    device = DeviceSpec()
    split = max_split_items(heads, device)
    for name, (indptr, indices) in _batches().items():
        plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, device)
        bs = indptr.shape[0] - 1
        assert plan.num_items <= 2 * bs + split, (name, plan.num_items, bs, split)
    cap = backend_mod.graph_capacity(256, device, heads)
    assert cap.split_items == split
    # a batch of 64 launches at least the two items per request of the 192 requests it lacks fewer than the largest
    # batch's grid (at d64's 6 CTAs per SM the finest splits take 446 items, so not always half of it)
    assert 2 * 64 + split <= cap.max_items - 2 * (256 - 64)


def test_limits_for_each_batch() -> None:
    heads = HeadConfig(32, 8, 128)
    fitted = StaticPlanBuffers(heads, max_batch=256, max_items=600, max_partials=1552, device="cpu", split_items=149)
    assert fitted.limits_for(64).max_items == 2 * 64 + 149
    assert fitted.limits_for(256).max_items == 600  # 2 x 256 + 149 is more than the buffers hold
    assert fitted.limits_for(64) is fitted.limits_for(64)  # one object per batch size: plans compare limits
    assert fitted.limits_for(64).max_partials == fitted.limits.max_partials
    one_grid = StaticPlanBuffers(heads, max_batch=256, max_items=1040, max_partials=1552, device="cpu")
    assert one_grid.limits_for(8) is one_grid.limits


def test_a_plan_over_its_batch_grid_is_refused_at_load() -> None:
    """Four requests under a 4096-token prefix, split for a whole GPU, carry more items than a grid of 2 x 4 + 0: the
    buffers hold them, the batch's launch would not run them all, so ``load`` refuses; planned with
    ``limits_for(4)`` the plan is coarsened to fit, loads, and still reads every request's KV exactly once."""
    heads = HeadConfig(32, 8, 128)
    buffers = StaticPlanBuffers(heads, max_batch=8, max_items=400, max_partials=800, device="cpu", split_items=0)
    b = tree_batch([(1, 4096), (4, 64)], rng=0)
    forest = PrefixForest.from_flat(b.kv_indptr, b.kv_indices)
    wide = plan_forest(forest, heads, DeviceSpec(), slot_table=b.kv_indices.clone())
    assert wide.num_items > buffers.limits_for(4).max_items
    with pytest.raises(ValueError, match="forward grid of a batch of 4"):
        buffers.load(wide)
    fitted = plan_forest(forest, heads, DeviceSpec(), limits=buffers.limits_for(4), slot_table=wide.slot_table)
    assert fitted.num_items <= buffers.limits_for(4).max_items
    buffers.load(fitted)
    assert buffers.plan is fitted
    # the loaded plan computes attention exactly (float64, fresh inputs, poisoned output)
    gen = torch.Generator().manual_seed(11)
    slots = int(b.kv_indices.max()) + 1
    q = torch.randn(4, heads.num_q_heads, heads.head_dim, generator=gen, dtype=torch.float64)
    k = torch.randn(slots, heads.num_kv_heads, heads.head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(slots, heads.num_kv_heads, heads.head_dim, generator=gen, dtype=torch.float64)
    out = torch.full_like(q, float("nan"))
    scale = heads.head_dim ** -0.5
    buffers.run(q, k, v, scale, out)
    want = naive_decode(q, k, v, b.kv_indptr, b.kv_indices, scale)
    assert (out - want).abs().max().item() < 1e-9
