"""PAT CUDA kernels over FP8 KV pools vs plain per-request attention in float64 over the dequantised KV (run on
the GPU machine: ``pytest -m gpu tests/gpu/test_kernels_fp8_gpu.py``).

Pools are random normals quantised as SGLang stores them (``(x / scale).to(fp8)``), with non-unit per-tensor
scales; every check draws fresh inputs, poisons ``out`` with NaN, and requires every element written and
``||out - ref|| / ||ref|| < 2e-2`` (the bf16 bound) against ``naive_decode`` over ``stored * scale``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gpu_checks import GPU_ONLY, assert_written_and_close, seed_counter, tail_split_batch

import pat_sglang
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_TILE_M, PackPlan, plan_forest
from pat_sglang.reference import naive_decode
from pat_sglang.workloads import DecodeBatch, Tree, layout_tree, make_qkv, random_tree, tree_batch

pytestmark = GPU_ONLY

FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
_next_seed = seed_counter(5000)


def fp8_inputs(batch: DecodeBatch, hq: int, hkv: int, d: int, dtype: torch.dtype, kv_dtype: torch.dtype, seed: int):
    """q in ``dtype``; K/V pools stored in ``kv_dtype`` with random per-tensor scales (dequantised = stored * scale)."""
    q, k, v = make_qkv(batch.batch, hq, hkv, d, batch.num_slots, torch.float32, "cuda", seed=seed)
    rng = np.random.default_rng(seed)
    k_scale, v_scale = float(rng.uniform(0.2, 3.0)), float(rng.uniform(0.2, 3.0))
    return q.to(dtype), (k / k_scale).to(kv_dtype), (v / v_scale).to(kv_dtype), k_scale, v_scale


def check_batch(batch: DecodeBatch, hq: int, hkv: int, d: int, kv_dtype: torch.dtype,
                dtype: torch.dtype = torch.bfloat16, uint8_pools: bool = False,
                split_tokens: int | None = None) -> PackPlan:
    """``split_tokens``: the plan's KV split length instead of the cost model's choice. Returns the plan checked."""
    q, k8, v8, k_scale, v_scale = fp8_inputs(batch, hq, hkv, d, dtype, kv_dtype, _next_seed())
    heads = HeadConfig(hq, hkv, d, dtype, kv_dtype)
    device = DeviceSpec.from_torch(q.device)
    if split_tokens is None:
        plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, device).to("cuda")
    else:
        plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), heads, device,
                           split_tokens=split_tokens).to("cuda")
    out = torch.full_like(q, float("nan"))
    k_in, v_in = (k8.view(torch.uint8), v8.view(torch.uint8)) if uint8_pools else (k8, v8)  # SGLang's storage
    res = pat_sglang.run(plan, q, k_in, v_in, out=out, k_scale=k_scale, v_scale=v_scale)
    torch.cuda.synchronize()
    assert res.data_ptr() == out.data_ptr()
    ref = naive_decode(q.cpu(), k8.cpu(), v8.cpu(), batch.kv_indptr, batch.kv_indices, 1.0 / math.sqrt(d),
                       torch.float64, k_scale, v_scale)
    assert_written_and_close(out, ref, f"k_scale {k_scale:.3f}, v_scale {v_scale:.3f}")
    return plan


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads", [(8, 8), (32, 8), (64, 8)])
@pytest.mark.parametrize("page_size", [1, 16])
def test_random_forests(kv_dtype: torch.dtype, head_dim: int, heads: tuple[int, int], page_size: int) -> None:
    rng = np.random.default_rng(_next_seed())
    tree = random_tree(
        rng, max_depth=5, max_requests=32, max_len=512, page_size=page_size, max_request_tokens=4000,
        p_inner_request=0.2, p_duplicate=0.1,
    )
    dtype = torch.float16 if page_size == 16 else torch.bfloat16  # both q dtypes over the matrix
    check_batch(layout_tree(tree, page_size, rng), heads[0], heads[1], head_dim, kv_dtype, dtype)


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads", [(24, 8), (40, 8), (12, 2), (28, 4), (8, 1), (7, 1), (48, 4), (64, 4)],
                         ids=lambda h: f"{h[0]}q{h[1]}kv")
def test_random_forests_odd_gqa_ratios(kv_dtype: torch.dtype, head_dim: int, heads: tuple[int, int]) -> None:
    """GQA ratios 3, 5, 6 and 7 (Llama-3.2-3B, Qwen2.5-14B, -1.5B, -7B): padding rows in every row block; and one KV
    head per tensor-parallel rank (Llama-3-70B at TP 8, Qwen2.5-7B at TP 4)."""
    rng = np.random.default_rng(_next_seed())
    for page_size, max_requests in ((1, 48), (16, 160)):
        tree = random_tree(
            rng, max_depth=5, max_requests=max_requests, max_len=512, page_size=page_size, max_request_tokens=6000,
            p_inner_request=0.2, p_duplicate=0.1,
        )
        check_batch(layout_tree(tree, page_size, rng), heads[0], heads[1], head_dim, kv_dtype)


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
def test_asymmetric_tree(kv_dtype: torch.dtype, dtype: torch.dtype, group: int) -> None:
    parents = [-1, 0, 1, 2, 2, 3, 3, 3, 4, 0, 9, 9, 9, 1, -1]
    lengths = [2048, 512, 256, 128, 96, 5, 17, 33, 80, 320, 3, 600, 1, 7, 3000]
    request_nodes = [5, 6, 7, 8, 8, 4, 10, 11, 12, 1, 13, 14] + [7] * 20 + [11] * 3
    tree = Tree(parents, lengths, request_nodes)
    check_batch(layout_tree(tree, 16, _next_seed()), 4 * group, 4, 128, kv_dtype, dtype)


@pytest.mark.parametrize("kv_dtype", FP8)
def test_long_prefix_split_and_no_sharing(kv_dtype: torch.dtype) -> None:
    """One pack split across many CTAs (partials + merge), and a batch with nothing shared."""
    check_batch(tree_batch([(1, 32768), (4, 64)], rng=_next_seed()), 32, 8, 128, kv_dtype)
    check_batch(tree_batch([(48, 700)], 16, _next_seed()), 32, 8, 128, kv_dtype)
    check_batch(tree_batch([(1, 1)], rng=_next_seed()), 32, 8, 128, kv_dtype)


# The forward's tile-group loop over FP8 stages (kernels/pat_decode.cu tile_group_loop, KV8): a 16-row item of at
# least this many tokens at d128 / d256 has four computing warps, two per 32-token tile, their states combined at the
# end.
GROUP_MIN_TOKENS = 256
FP8_KV_TILE = 32  # the H200 table's FP8 KV tile at head dims 128 and 256 (configs/tiles/sm90.json, fp8)
LATE_LOADS_MIN_TOKENS = 1024  # and from this many tokens (in whole tiles) it gathers each group after its MMAs


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("heads", [(8, 8), (32, 8), (64, 8)])
@pytest.mark.parametrize("page_size", [1, 16])
def test_long_private_items_on_four_computing_warps(kv_dtype: torch.dtype, head_dim: int, heads: tuple[int, int],
                                                    page_size: int) -> None:
    """Private leaves under a shared prefix with lengths around the tile-group threshold: even and odd tile counts
    (an odd count leaves the second tile's warps without one in the last group), last tiles of under 16 tokens (their
    second column block wholly past the end) and of more, items just below the threshold; and around the threshold
    of the late gathers (992 tokens: 31 tiles, 993: 32)."""
    lengths = [223, 224, 240, 255, 256, 257, 270, 272, 287, 289, 300, 320, 511, 777, 992, 993, 1000, 1040, 1537]
    tree = Tree([-1] + [0] * len(lengths), [512, *lengths], list(range(1, len(lengths) + 1)))
    dtype = torch.float16 if page_size == 16 else torch.bfloat16  # both q dtypes over the matrix
    for split_tokens in (None, 4096):  # the cost model's splits, and every private leaf one item
        plan = check_batch(layout_tree(tree, page_size, _next_seed()), heads[0], heads[1], head_dim, kv_dtype, dtype,
                           split_tokens=split_tokens)
    items = plan.items.cpu().numpy()
    tokens = (items[:, ITEM_KV_END] - items[:, ITEM_KV_BEGIN])[items[:, ITEM_TILE_M] == 16]
    tiles = (tokens + FP8_KV_TILE - 1) // FP8_KV_TILE
    grouped = tiles[tiles * FP8_KV_TILE >= GROUP_MIN_TOKENS]
    assert len(grouped) and (grouped % 2 == 1).any(), \
        "the plan must hold 16-row items on the tile-group loop, odd tile counts among them"
    assert (tiles * FP8_KV_TILE < GROUP_MIN_TOKENS).any(), "and 16-row items just below the threshold"
    late = grouped * FP8_KV_TILE >= LATE_LOADS_MIN_TOKENS
    assert late.any() and (late & (grouped % 2 == 1)).any() and (~late).any(), \
        "and grouped items on both sides of the late gathers' threshold, odd tile counts among the late ones"
    assert ((tokens % FP8_KV_TILE > 0) & (tokens % FP8_KV_TILE <= 16)).any(), \
        "and a last tile whose second block holds nothing"


@pytest.mark.parametrize("kv_dtype", FP8)
def test_uint8_storage_with_declared_format(kv_dtype: torch.dtype) -> None:
    """SGLang's uint8 storage of an FP8 pool is read as the format the plan's heads declare."""
    check_batch(tree_batch([(1, 2048), (16, 100)], rng=_next_seed()), 32, 8, 128, kv_dtype, uint8_pools=True)


def test_unsupported_fp8_combinations_raise() -> None:
    batch = tree_batch([(1, 64), (2, 8)], rng=0)
    q, k8, v8, _, _ = fp8_inputs(batch, 8, 2, 128, torch.bfloat16, torch.float8_e4m3fn, 0)
    fp8_heads = HeadConfig(8, 2, 128, torch.bfloat16, torch.float8_e4m3fn)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, fp8_heads).to("cuda")
    with pytest.raises(ValueError, match="dtype"):  # FP8 queries
        pat_sglang.run(plan, q.to(torch.float8_e4m3fn), k8, v8)
    bf16_plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, HeadConfig(8, 2, 128)).to("cuda")
    with pytest.raises(ValueError, match="uint8"):  # undeclared format
        pat_sglang.run(bf16_plan, q, k8.view(torch.uint8), v8.view(torch.uint8))
    with pytest.raises(ValueError, match="differ from the plan"):  # FP8 pools, a plan made for bf16 ones
        pat_sglang.run(bf16_plan, q, k8, v8)
    with pytest.raises(ValueError, match="dtypes differ"):
        pat_sglang.run(plan, q, k8, v8.view(torch.float8_e5m2))


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0), reason="wgmma builds need sm_90"
)
@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("wg_cols", [None, 32])
def test_wgmma_build_over_fp8_pools(kv_dtype: torch.dtype, head_dim: int, page_size: int, wg_cols: int | None) -> None:
    """The warpgroup-MMA build (64-row items: FP8 stages converted into wgmma's layout) over FP8 pools with non-unit
    scales, against float64 attention over the dequantised KV, on a plan that has 64-row items; ``wg_cols`` 32: one
    32-column S block per 32-token FP8 tile (head dims whose FP8 tiles hold 32 tokens)."""
    from pat_sglang.config import load_tile_table
    from pat_sglang.kernels import KernelTune, launch_plan

    if wg_cols is not None and load_tile_table("sm90").kv_tile(head_dim, fp8=True) % wg_cols:
        pytest.skip(f"head dim {head_dim}'s FP8 tiles hold fewer than {wg_cols} tokens")
    batch = tree_batch([(1, 1200), (48, 29)], page_size, _next_seed())
    q, k8, v8, k_scale, v_scale = fp8_inputs(batch, 32, 8, head_dim, torch.bfloat16, kv_dtype, _next_seed())
    heads = HeadConfig(32, 8, head_dim, torch.bfloat16, kv_dtype)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec.from_torch(q.device)).to("cuda")
    assert bool((plan.items[:, ITEM_TILE_M] == 64).any())
    out = torch.full_like(q, float("nan"))
    launch_plan(plan, q, k8, v8, 1.0 / math.sqrt(head_dim), out=out, tune=KernelTune(wgmma=True, wg_cols=wg_cols),
                k_scale=k_scale, v_scale=v_scale)
    torch.cuda.synchronize()
    ref = naive_decode(q.cpu(), k8.cpu(), v8.cpu(), batch.kv_indptr, batch.kv_indices, 1.0 / math.sqrt(head_dim),
                       torch.float64, k_scale, v_scale)
    assert_written_and_close(out, ref, f"k_scale {k_scale:.3f}, v_scale {v_scale:.3f}")


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("page_size", [1, 16])
def test_mma_sync_build_reads_every_tile_m_from_the_stage(kv_dtype: torch.dtype, head_dim: int,
                                                          page_size: int) -> None:
    """On GPUs with the hardware FP8 conversion the mma.sync build (KernelTune(wgmma=False) on sm_90) at d128 / d256
    takes every item's K and V fragments from the FP8 stage, 64-row items included; the wgmma build does so for its
    16- and 32-row items. Plans holding 16-, 32- and 64-row items, both builds, against float64 attention over the
    dequantised KV."""
    from pat_sglang.kernels import KernelTune, launch_plan

    seen = set()
    for levels in ([(1, 1200), (48, 29)], [(1, 1200), (8, 300)]):  # 48 x 4 rows: 64-row items; 8 x 4: one of 32
        batch = tree_batch(levels, page_size, _next_seed())
        q, k8, v8, k_scale, v_scale = fp8_inputs(batch, 32, 8, head_dim, torch.bfloat16, kv_dtype, _next_seed())
        heads = HeadConfig(32, 8, head_dim, torch.bfloat16, kv_dtype)
        plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec.from_torch(q.device)).to("cuda")
        seen |= set(plan.items[:, ITEM_TILE_M].tolist())
        ref = naive_decode(q.cpu(), k8.cpu(), v8.cpu(), batch.kv_indptr, batch.kv_indices, 1.0 / math.sqrt(head_dim),
                           torch.float64, k_scale, v_scale)
        for wgmma in (False, True):
            out = torch.full_like(q, float("nan"))
            launch_plan(plan, q, k8, v8, 1.0 / math.sqrt(head_dim), out=out, tune=KernelTune(wgmma=wgmma),
                        k_scale=k_scale, v_scale=v_scale)
            torch.cuda.synchronize()
            assert_written_and_close(out, ref, f"wgmma {wgmma}, k_scale {k_scale:.3f}, v_scale {v_scale:.3f}")
    assert seen == {16, 32, 64}, seen


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_bf16_queries_of_every_magnitude(kv_dtype: torch.dtype, head_dim: int) -> None:
    """bf16 queries over FP8 pools run fp16 MMAs on Q scaled by a power of two (pat_decode.cu's element types): rows
    of tiny, ordinary and huge magnitude (softmax near uniform to one-hot) stay within the bf16 bound, on a tree (wide
    items) and on private rows."""
    for batch in (tree_batch([(1, 1024), (16, 96)], rng=_next_seed()), tree_batch([(24, 700)], rng=_next_seed())):
        hq, hkv = 32, 8
        q, k8, v8, k_scale, v_scale = fp8_inputs(batch, hq, hkv, head_dim, torch.float32, kv_dtype, _next_seed())
        row_scale = torch.tensor([1e-3, 1.0, 30.0, 3e3], device=q.device)[torch.arange(hq, device=q.device) % 4]
        q = (q * row_scale[None, :, None]).to(torch.bfloat16)
        heads = HeadConfig(hq, hkv, head_dim, torch.bfloat16, kv_dtype)
        plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec.from_torch(q.device)).to("cuda")
        out = torch.full_like(q, float("nan"))
        pat_sglang.run(plan, q, k8, v8, out=out, k_scale=k_scale, v_scale=v_scale)
        torch.cuda.synchronize()
        ref = naive_decode(q.cpu(), k8.cpu(), v8.cpu(), batch.kv_indptr, batch.kv_indices, 1.0 / math.sqrt(head_dim),
                           torch.float64, k_scale, v_scale)
        for h in range(4):  # each magnitude on its own: a small one's error is not hidden under a large one's norm
            assert_written_and_close(out[:, h::4], ref[:, h::4], f"q heads of scale {float(row_scale[h]):g}")


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("heads", [(8, 8), (16, 8), (32, 8), (64, 8), (64, 4)], ids=lambda h: f"{h[0]}q{h[1]}kv")
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("t8", [True, False], ids=["t8", "t16"])
def test_t8_build_with_tokens_as_the_mma_m(kv_dtype: torch.dtype, head_dim: int, heads: tuple[int, int],
                                          page_size: int, t8: bool) -> None:
    """The ``t8`` build (``KernelVariant.t8``, the table's FP8 build at d128 and d256: long 16-row items of at most 8
    query rows take the KV tokens as the MMA's M), and the same build without it (every item's rows as the M), against
    float64 attention over the dequantised KV: GQA 1, 2, 4 and 8 on that layout, GQA 16 on the 16-row one beside it;
    private leaves around the tile-group threshold (256 tokens; items of 8-10 tiles, whose slot lookahead of two groups
    runs past their end), longer ones (odd tile counts, last tiles of under 16 tokens), a shared prefix, every leaf one
    item and the cost model's splits (partials and merge)."""
    from pat_sglang.kernels import KernelTune, launch_plan

    lengths = [223, 256, 257, 287, 289, 511, 777, 992, 993, 1040, 1537, 3001]
    tree = Tree([-1] + [0] * len(lengths), [512, *lengths], list(range(1, len(lengths) + 1)))
    hq, hkv = heads
    dtype = torch.float16 if page_size == 16 else torch.bfloat16
    for split_tokens in (None, 4096):
        batch = layout_tree(tree, page_size, _next_seed())
        q, k8, v8, k_scale, v_scale = fp8_inputs(batch, hq, hkv, head_dim, dtype, kv_dtype, _next_seed())
        hc = HeadConfig(hq, hkv, head_dim, dtype, kv_dtype)
        plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), hc,
                           DeviceSpec.from_torch(q.device), split_tokens=split_tokens).to("cuda")
        out = torch.full_like(q, float("nan"))
        launch_plan(plan, q, k8, v8, 1.0 / math.sqrt(head_dim), out=out, tune=KernelTune(t8=t8),
                    k_scale=k_scale, v_scale=v_scale)
        torch.cuda.synchronize()
        ref = naive_decode(q.cpu(), k8.cpu(), v8.cpu(), batch.kv_indptr, batch.kv_indices, 1.0 / math.sqrt(head_dim),
                           torch.float64, k_scale, v_scale)
        assert_written_and_close(out, ref,
                                 f"t8 {t8}, split {split_tokens}, k_scale {k_scale:.3f}, v_scale {v_scale:.3f}")


@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_nearly_empty_last_wave_cut_finer(kv_dtype: torch.dtype, head_dim: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """FP8 pools under a plan whose last wave the planner cuts finer (``_tail_split``) on this GPU: exact against
    float64 over the dequantised KV, and the plan checked is the cut one."""
    heads = HeadConfig(32, 8, head_dim, torch.bfloat16, kv_dtype)
    batch, plain_items = tail_split_batch(heads, DeviceSpec.from_torch(), _next_seed(), monkeypatch)
    assert check_batch(batch, 32, 8, head_dim, kv_dtype).num_items > plain_items
