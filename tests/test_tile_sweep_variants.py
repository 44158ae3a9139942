"""``bench/tile_sweep.py``'s variants with their own warps per CTA (``/wN``): parsed, planned with the tile m values
their CTAs hold, and built for sm_90 at every head dim without spills; ``/mN`` plans with the tile ms of at least N rows
(CPU; their timing is the sweep's, on a GPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from scripts import load_script

from pat_sglang.config import DeviceSpec, HeadConfig, load_tile_table
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import KernelVariant, compile_variant
from pat_sglang.planner import ITEM_TILE_M, plan_forest
from pat_sglang.reference import naive_decode, run_reference
from pat_sglang.workloads import standard_batch, tree_batch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sweep():
    return load_script(REPO / "bench" / "tile_sweep.py")


def test_warps_flag(sweep) -> None:
    tune = sweep.parse_variant("16/3/7/w2")
    assert (tune.kv_tile, tune.stages, tune.min_ctas_per_sm, tune.warps, tune.wgmma) == (16, 3, 7, 2, False)
    assert sweep.parse_variant("16/4/4/wg").warps is None and sweep.parse_variant("16/4/4/wg").wgmma
    both = sweep.parse_variant("16/4/4/wg/w4")
    assert both.wgmma and both.warps == 4
    for bad in ("16/3/7/w3", "16/3/7/w2/w2", "16/3/7/wx"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_variant(bad)


def test_wgmma_columns_flag(sweep) -> None:
    """``/nN``: the wgmma S block width of the variant's build; without it a tune keeps the table's width where its
    build can take it (the same tile and stages), else 16 columns."""
    from pat_sglang import HeadConfig
    from pat_sglang.kernels import KernelVariant

    assert sweep.parse_variant("16/4/4/wg/n32").wg_cols == 32
    assert sweep.parse_variant("16/4/4/wg").wg_cols is None
    for bad in ("16/4/4/wg/n48", "16/4/4/wg/n32/n32"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_variant(bad)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    table_cols = KernelVariant.from_table("sm_90", "bf16", 128).wg_cols
    assert KernelVariant.for_config(heads, "sm_90", sweep.parse_variant("16/4/4/wg")).wg_cols == table_cols
    assert KernelVariant.for_config(heads, "sm_90", sweep.parse_variant("16/3/4/wg")).wg_cols == 16  # 3 stages
    assert KernelVariant.for_config(heads, "sm_90", sweep.parse_variant("16/4/4/wg/n16")).wg_cols == 16
    assert KernelVariant.for_config(heads, "sm_90", sweep.parse_variant("32/2/4/wg/n32")).wg_cols == 32


def test_t8_flag(sweep) -> None:
    """``/t8``: the variant's build takes long items of <= 8 rows with the KV tokens as the MMA's M, ``/t16`` it does
    not, neither: as the tile table says; one of them once per variant, ``/t8`` only where the build has that layout
    (FP8 pools at head dim 128 or 256)."""
    from pat_sglang import HeadConfig
    from pat_sglang.config import load_tile_table

    assert sweep.parse_variant("32/3/4/wg/n32/t8").t8 is True
    assert sweep.parse_variant("32/3/4/wg/n32/t16").t8 is False
    assert sweep.parse_variant("32/3/4/wg/n32").t8 is None
    for twice in ("32/3/4/t8/t8", "32/3/4/t8/t16"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_variant(twice)
    fp8 = HeadConfig(32, 32, 128, torch.bfloat16, torch.float8_e4m3fn)
    assert sweep.check_variants(fp8, "sm_90", ["32/3/4/wg/n32/t8"])[0].t8
    table_t8 = load_tile_table("sm90").t8(128, fp8=True)
    for text, built in (("32/3/4/wg/n32/t8", True), ("32/3/4/wg/n32/t16", False), ("32/3/4/wg/n32", table_t8)):
        assert KernelVariant.for_config(fp8, "sm_90", sweep.parse_variant(text)).t8 is built, text
    with pytest.raises(argparse.ArgumentTypeError, match="t8 items"):
        sweep.check_variants(HeadConfig(32, 32, 128, torch.bfloat16), "sm_90", ["16/4/4/wg/n32/t8"])


def test_variants_the_build_cannot_take_are_refused_before_any_case(sweep) -> None:
    """``check_variants`` (run before the first case): ring-layout column blocks need a stage count they divide, FP8
    stages have no ring layout, and a variant named twice in one flag is a parse error; the valid ones come back as
    their tunes, in order."""
    from pat_sglang import HeadConfig

    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    fp8 = HeadConfig(32, 8, 256, torch.bfloat16, torch.float8_e4m3fn)
    good = {heads: ["16/4/4/wg/n32", "16/6/3/wg/n32", "32/3/4"], fp8: ["32/3/2/wg/n32", "32/2/2/wg/n32"]}
    assert [t.stages for t in sweep.check_variants(heads, "sm_90", good[heads])] == [4, 6, 3]
    assert [t.stages for t in sweep.check_variants(fp8, "sm_90", good[fp8])] == [3, 2]
    for bad_heads, bad in ((heads, "16/5/4/wg/n32"), (heads, "16/3/4/wg/n32"), (fp8, "16/4/2/wg/n32")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"variant '{bad}'.*wg_cols 32"):
            sweep.check_variants(bad_heads, "sm_90", [*good[bad_heads], bad])
    with pytest.raises(argparse.ArgumentTypeError):
        sweep.check_variants(heads, "sm_90", ["16/4/4/wg/n32/n32"])


@pytest.mark.parametrize("warps", [1, 2, 4])
def test_plans_fit_the_variants_warps_and_stay_exact(sweep, warps: int) -> None:
    """A ``/wN`` variant's plan has no item wider than its CTAs (16 rows per warp): packs of more rows are cut into
    more row blocks, and the plan still computes the batch's attention."""
    table = load_tile_table("sm90")
    tune = sweep.parse_variant(f"16/3/4/w{warps}")
    tiles = sweep.plan_tiles(table, tune)
    assert max(tiles.tile_ms) <= 16 * warps and set(tiles.tile_ms) <= set(table.tile_ms)
    assert sweep.plan_tiles(table, sweep.parse_variant("16/3/4")) is table
    heads = HeadConfig(32, 8, 64, torch.float64)
    batch = standard_batch("b", rng=np.random.default_rng(warps))
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    plan = plan_forest(forest, heads, DeviceSpec(), tiles=tiles)
    assert plan.items[:, ITEM_TILE_M].max().item() <= 16 * warps
    n = batch.batch
    gen = torch.Generator().manual_seed(warps)
    q = torch.randn(n, 32, 64, generator=gen, dtype=torch.float64)
    k = torch.randn(batch.num_slots, 8, 64, generator=gen, dtype=torch.float64)
    v = torch.randn(batch.num_slots, 8, 64, generator=gen, dtype=torch.float64)
    got = run_reference(plan, q, k, v, 0.125)
    want = naive_decode(q, k, v, batch.kv_indptr, batch.kv_indices, 0.125)
    assert float((got - want).abs().max()) < 1e-9


@pytest.mark.parametrize(
    ("head_dim", "variant"), [(64, "16/4/8/w2"), (128, "16/3/7/w2"), (256, "16/3/3/w2"), (128, "16/3/8/w1")]
)
def test_two_warp_variants_build_without_spills(sweep, head_dim: int, variant: str) -> None:
    tune = sweep.parse_variant(variant)
    v = KernelVariant("sm_90", "bf16", head_dim, tune.kv_tile, tune.stages, tune.min_ctas_per_sm, warps=tune.warps)
    usage = compile_variant(v, use_cache=False).resource_usage()["pat_pack_forward"]
    assert usage.get("spill_store_bytes", 0) == 0 and usage.get("spill_load_bytes", 0) == 0, usage
    assert usage["registers"] <= 65536 // (v.threads * v.min_ctas_per_sm)
    assert v.smem_bytes * v.min_ctas_per_sm <= 228 * 1024  # the occupancy it is built for fits an H100/H200 SM


def test_min_tile_m_flag(sweep) -> None:
    """``/m64`` plans every item with 64-row tiles: a private request's 4 rows (GQA 4) then run padded on the 64-row
    path, and the plan's items still cover every request's KV once."""
    tune = sweep.parse_variant("16/4/2/wg/m64")
    assert tune.min_tile_m == 64 and tune.wgmma
    table = load_tile_table("sm90")
    tiles = sweep.plan_tiles(table, tune)
    assert tiles.tile_ms == (64,) and sweep.plan_tiles(table, sweep.parse_variant("16/4/2")) is table
    heads = HeadConfig(32, 8, 256, torch.bfloat16)
    indptr = torch.arange(0, 9 * 300, 300, dtype=torch.int32)
    indices = torch.randperm(8 * 300, dtype=torch.int32)
    plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, DeviceSpec(), tiles=tiles)
    assert set(plan.items[:, ITEM_TILE_M].tolist()) == {64}
    # m16 undoes the table's least tile m for d256 (64: private rows padded to 64-row wgmma items)
    assert table.least_tile_m(256)[0] == 64
    low = sweep.plan_tiles(table, sweep.parse_variant("16/4/2/wg/m16"))
    plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, DeviceSpec(), tiles=low)
    assert set(plan.items[:, ITEM_TILE_M].tolist()) == {16}
    for bad in ("16/4/2/m48", "16/4/2/m64/m64"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_variant(bad)
    with pytest.raises(ValueError, match="holds"):
        table.with_min_tile_m(256)


def test_max_tile_m_flag(sweep) -> None:
    """``/x32`` plans cut every pack into row blocks of at most 32 rows: a pack of 48 requests at GQA 8 (384 rows),
    which the table's plan runs as 64-row items, becomes 32-row items (plus the 16-row items of the private leaves);
    the items still cover every request's KV once, and a d256 plan drops the table's least tile m of 64 with it."""
    tune = sweep.parse_variant("32/2/4/wg/n32/x32")
    assert tune.max_tile_m == 32 and tune.min_tile_m is None
    table = load_tile_table("sm90")
    tiles = sweep.plan_tiles(table, tune)
    assert tiles.tile_ms == (16, 32) and tiles.min_tile_m == {}
    heads = HeadConfig(64, 8, 128, torch.bfloat16)
    batch = tree_batch([(1, 600), (48, 40)], rng=3)
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    assert 64 in set(plan_forest(forest, heads, DeviceSpec()).items[:, ITEM_TILE_M].tolist())
    plan = plan_forest(forest, heads, DeviceSpec(), tiles=tiles)
    assert set(plan.items[:, ITEM_TILE_M].tolist()) == {16, 32}
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(batch.batch, 64, 128, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(batch.num_slots, 8, 128, generator=gen, dtype=torch.float64) for _ in range(2))
    want = naive_decode(q, k, v, batch.kv_indptr, batch.kv_indices, 0.1)
    assert torch.allclose(run_reference(plan, q, k, v, 0.1), want, atol=1e-9, rtol=0)
    assert table.with_max_tile_m(32).least_tile_m(256) == (0, None)  # d256's least tile m 64 dropped
    with pytest.raises(ValueError, match="at most"):
        table.with_max_tile_m(8)
    for bad in ("32/2/4/x48", "32/2/4/x32/x32"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_variant(bad)


def test_heads_option(sweep, capsys) -> None:
    """``--heads HQ/HKV``: the q/kv head counts of every case (default 32/8); a GQA group the kernel lacks is refused
    when the command line is parsed, before anything touches the GPU."""
    assert sweep.parse_heads("64/8") == (64, 8) and sweep.parse_heads("32/32") == (32, 32)
    assert sweep.HEADS == (32, 8)
    assert sweep.parse_heads("128/8") == (128, 8)  # GQA 16: the largest the kernels serve (config.MAX_GQA_GROUP)
    for bad in ("64", "64/0", "8/64", "48/32", "256/8", "x/8"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_heads(bad)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--heads", "256/8"])
    assert exit_info.value.code == 2 and "at most 16 q heads per kv head" in capsys.readouterr().err


def test_case_batch_reads_any_private_batch_name(sweep) -> None:
    """``dBxC``: B private rows of C tokens each, every slot of the pool once (the kernel benchmark's small batches);
    the anchors' two no-sharing names keep their own layout."""
    rng = np.random.default_rng(0)
    for name, rows, tokens in (("d1x1024", 1, 1024), ("d4x16384", 4, 16384), ("d8x32768", 8, 32768)):
        indptr, indices, slots = sweep.case_batch(name, rng)
        assert indptr.tolist() == list(range(0, rows * tokens + 1, tokens)) and slots == rows * tokens
        assert sorted(indices.tolist()) == list(range(rows * tokens))
    indptr, _, _ = sweep.case_batch("d64x4096", rng)
    assert indptr.shape[0] == 65 and int(indptr[-1]) == 64 * 4096


def test_cases_flag_takes_private_batch_names(sweep, capsys) -> None:
    """``--cases d1x1024``: the command line takes what ``case_batch`` reads; a name that is neither a case nor
    ``dBxC`` (or has an empty batch) is refused when the command line is parsed."""
    for name in ("d1x1024", "d4x2048", "a128", "gsp64"):
        assert sweep.parse_case(name) == name
    for bad in ("d0x1024", "d4x0", "dx8", "d4x2k", "f128"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_case(bad)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--cases", "d4xx"])
    assert exit_info.value.code == 2 and "unknown case 'd4xx'" in capsys.readouterr().err


def test_ncu_probe_takes_the_same_heads(capsys) -> None:
    """``bench/ncu_probe.py --heads`` reads HQ/HKV as the sweeps do (a GQA group above the kernels' refused before
    anything touches the GPU), so that one wide-GQA tree can be profiled (e.g. ``e --heads 64/4``)."""
    import importlib

    from scripts import REPO, on_path

    on_path(REPO)
    probe = importlib.import_module("bench.ncu_probe")
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["e", "--heads", "256/8"])
    assert exit_info.value.code == 2 and "at most 16 q heads per kv head" in capsys.readouterr().err


def test_tail_divisor_plans_cut_the_last_wave_and_restore_the_planner(sweep) -> None:
    """``--tail-divisors N`` columns plan with the last wave cut where it holds at most 1/N of the resident CTAs: at
    N = 1 a launch of 6.33 waves (152 private rows x 2 KV heads on 48 slots, a last wave above the planner's own 1/4)
    gets its last wave's rows split, the plan still exact against float64; the planner's own divisor is back
    afterwards, also after an error; N < 1 is refused."""
    from pat_sglang import planner

    heads = HeadConfig(2, 2, 64, torch.float32)
    spec = DeviceSpec(sm_count=8, ctas_per_sm=4, arch="sm90")
    assert planner.target_ctas(spec, load_tile_table("sm90"), heads) == 48  # (6 CTAs per SM at head dim 64)
    rng = np.random.default_rng(3)
    n, tokens = 152, 512
    indptr = torch.arange(0, (n + 1) * tokens, tokens, dtype=torch.int64)
    indices = torch.from_numpy(rng.permutation(n * tokens).astype(np.int64))
    forest = PrefixForest.from_flat(indptr, indices)
    own = planner.TAIL_WAVE_DIVISOR
    plain = plan_forest(forest, heads, spec)
    with sweep.tail_divisor(1):
        assert planner.TAIL_WAVE_DIVISOR == 1
        cut = plan_forest(forest, heads, spec)
    assert planner.TAIL_WAVE_DIVISOR == own
    assert plain.num_items == n and plain.num_partials == 0
    assert cut.num_items > n and cut.num_partials > 0  # the last wave's rows cut into pieces that merge
    with sweep.tail_divisor(None):
        assert plan_forest(forest, heads, spec).num_items == n
    with pytest.raises(RuntimeError), sweep.tail_divisor(2):
        raise RuntimeError("a column failed")
    assert planner.TAIL_WAVE_DIVISOR == own
    with pytest.raises(ValueError), sweep.tail_divisor(0):
        pass
    # the cut plan computes the same attention (a sample of requests, float64 reference)
    q = torch.randn(n, heads.num_q_heads, heads.head_dim)
    k = torch.randn(n * tokens, heads.num_kv_heads, heads.head_dim)
    v = torch.randn_like(k)
    got = run_reference(cut, q, k, v, 0.125, torch.float64)
    want = naive_decode(q.double(), k.double(), v.double(), indptr, indices, 0.125)
    assert ((got.double() - want).norm() / want.norm()).item() < 1e-10
