"""CPU: the wide launch's build and plumbing (``KernelVariant.wide_stages``, ``pat_wide_forward``): its builds compile
for sm_90 without spills and fit one CTA per SM, bad builds are refused with the reason, ``bench/tile_sweep.py``'s
``/wsN`` flag plans 128-row items that still compute the batch's attention, and the wide items go first (its timing and
GPU results: ``tests/gpu/test_kernels_gpu.py::test_wide_launch_matches_reference``, docs/perf/kernels/)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from scripts import load_script

from pat_sglang.config import DeviceSpec, HeadConfig, load_tile_table
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import (
    WIDE_MIN_TILE_M,
    WIDE_THREADS,
    KernelTune,
    KernelVariant,
    compile_variant,
    wide_first,
)
from pat_sglang.planner import ITEM_FIELDS, ITEM_TILE_M, plan_forest
from pat_sglang.reference import naive_decode, run_reference
from pat_sglang.workloads import tree_batch

REPO = Path(__file__).resolve().parent.parent
SMEM_LIMIT_BYTES = 227 * 1024  # an H100/H200 CTA's dynamic shared memory


@pytest.fixture(scope="module")
def sweep():
    return load_script(REPO / "bench" / "tile_sweep.py")


@pytest.mark.parametrize(("head_dim", "stages"), [(64, 2), (64, 6), (128, 2), (128, 4), (128, 6)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_wide_builds_compile_without_spills(head_dim: int, stages: int, dtype: torch.dtype) -> None:
    v = KernelVariant.for_config(HeadConfig(32, 8, head_dim, dtype), "sm_90", KernelTune(wide_stages=stages))
    built = compile_variant(v, use_cache=False)
    usage = built.resource_usage()
    assert set(usage) == {"pat_pack_forward", "pat_merge", "pat_wide_forward"}, built.log
    for kernel, report in usage.items():
        assert report.get("spill_store_bytes", 0) == 0 and report.get("stack_bytes", 0) == 0, (kernel, report)
    assert usage["pat_wide_forward"]["registers"] <= 65536 // WIDE_THREADS
    assert v.wide_smem_bytes <= SMEM_LIMIT_BYTES
    assert v.max_tile_m == 128 and v.smem_bytes == KernelVariant.for_config(
        HeadConfig(32, 8, head_dim, dtype), "sm_90", KernelTune(wgmma=True)).smem_bytes  # pack build unchanged


def test_wide_builds_refused_where_the_kernel_has_none() -> None:
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    for arch, tune, why in (
        ("sm_90", KernelTune(wide_stages=1), "2 to"),
        ("sm_90", KernelTune(wide_stages=7), "2 to"),
        ("sm_90", KernelTune(wide_stages=4, wgmma=False), "wgmma"),
        ("sm_80", KernelTune(wide_stages=4), "wgmma"),
    ):
        with pytest.raises(ValueError, match=why):
            KernelVariant.for_config(heads, arch, tune)
    with pytest.raises(ValueError, match="head dim"):
        KernelVariant.for_config(HeadConfig(32, 8, 256, torch.bfloat16), "sm_90", KernelTune(wide_stages=4))
    with pytest.raises(ValueError, match="16-bit"):
        KernelVariant.for_config(HeadConfig(32, 8, 128, torch.bfloat16, torch.float8_e4m3fn), "sm_90",
                                 KernelTune(wide_stages=4))


def test_wide_flag_plans_128_row_items_that_stay_exact(sweep) -> None:
    tune = sweep.parse_variant("16/4/4/wg/n32/ws4")
    assert tune.wide_stages == 4 and tune.wgmma and tune.wg_cols == 32
    for bad in ("16/4/4/wg/ws", "16/4/4/wg/ws4/ws4"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_variant(bad)
    table = load_tile_table("sm90")
    tiles = sweep.plan_tiles(table, tune)
    assert tiles.tile_ms == (*table.tile_ms, 128) and tiles.warps == table.warps
    with pytest.raises(ValueError, match="one of"):
        table.with_tile_m(48)
    heads = HeadConfig(32, 8, 64, torch.float64)
    batch = tree_batch([(1, 784), (40, 9)], rng=np.random.default_rng(3))  # 160 rows per KV head on one prefix
    plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), heads, DeviceSpec(), tiles=tiles)
    assert 128 in plan.items[:, ITEM_TILE_M].tolist()
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(batch.batch, 32, 64, generator=gen, dtype=torch.float64)
    k = torch.randn(batch.num_slots, 8, 64, generator=gen, dtype=torch.float64)
    v = torch.randn(batch.num_slots, 8, 64, generator=gen, dtype=torch.float64)
    got = run_reference(plan, q, k, v, 0.125)
    want = naive_decode(q, k, v, batch.kv_indptr, batch.kv_indices, 0.125)
    assert float((got - want).abs().max()) < 1e-9


def test_wide_items_go_first_in_their_order() -> None:
    rng = np.random.default_rng(5)
    items = torch.from_numpy(rng.integers(0, 1000, size=(40, ITEM_FIELDS)).astype(np.int32))
    items[:, ITEM_TILE_M] = torch.from_numpy(rng.choice([16, 32, 64, 128], size=40).astype(np.int32))
    ordered, n = wide_first(items)
    wide = items[:, ITEM_TILE_M] >= WIDE_MIN_TILE_M
    assert n == int(wide.sum())
    assert torch.equal(ordered[:n], items[wide]) and torch.equal(ordered[n:], items[~wide])
    none, zero = wide_first(items[~wide])
    assert zero == 0 and torch.equal(none, items[~wide])
