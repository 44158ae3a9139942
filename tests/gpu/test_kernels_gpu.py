"""PAT CUDA kernels vs plain per-request attention in float64 (run on the GPU machine: ``pytest -m gpu tests/gpu``).

Every check draws fresh random inputs, poisons ``out`` with NaN, and requires every element written and
``||out - ref|| / ||ref|| < 2e-2`` against ``naive_decode`` in float64 on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gpu_checks import GPU_ONLY, assert_written_and_close, capture, seed_counter, tail_split_batch

import pat_sglang
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import KernelTune, launch_plan
from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_TILE_M, PackPlan, plan_forest
from pat_sglang.reference import naive_decode
from pat_sglang.workloads import DecodeBatch, Tree, layout_tree, make_qkv, random_tree, tree_batch

pytestmark = GPU_ONLY

DTYPES = [torch.bfloat16, torch.float16]
_next_seed = seed_counter(1000)


def check_batch(batch: DecodeBatch, num_q_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                tune: KernelTune | None = None, split_tokens: int | None = None) -> PackPlan:
    """``tune``: a kernel build other than the tile table's (launched through ``kernels.launch_plan``);
    ``split_tokens``: the plan's KV split length instead of the cost model's choice. Returns the plan checked."""
    seed = _next_seed()
    q, k, v = make_qkv(batch.batch, num_q_heads, num_kv_heads, head_dim, batch.num_slots, dtype, "cuda", seed=seed)
    heads = HeadConfig(num_q_heads, num_kv_heads, head_dim, dtype)
    plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), heads,
                       DeviceSpec.from_torch(q.device), split_tokens=split_tokens)
    out = torch.full_like(q, float("nan"))
    if tune is None:
        res = pat_sglang.run(plan.to("cuda"), q, k, v, out=out)
    else:
        res = launch_plan(plan.to("cuda"), q, k, v, 1.0 / math.sqrt(head_dim), out=out, tune=tune)
    torch.cuda.synchronize()
    assert res.data_ptr() == out.data_ptr()
    scale = 1.0 / math.sqrt(head_dim)
    assert_written_and_close(out, naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale))
    return plan


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads", [(8, 8), (16, 8), (32, 8), (64, 8), (32, 32)])
@pytest.mark.parametrize("page_size", [1, 16])
def test_random_forests(dtype: torch.dtype, head_dim: int, heads: tuple[int, int], page_size: int) -> None:
    rng = np.random.default_rng(_next_seed())
    for _ in range(2):
        tree = random_tree(
            rng, max_depth=6, max_requests=64, max_len=1024, page_size=page_size, max_request_tokens=20_000,
            p_inner_request=0.2, p_duplicate=0.1,
        )
        check_batch(layout_tree(tree, page_size, rng), heads[0], heads[1], head_dim, dtype)


# Head shapes (q heads, KV heads) whose GQA ratio is not a power of two, as served models have them (per TP rank):
# Llama-3.2-3B 24/8 (3), Qwen2.5-14B/32B 40/8 (5), Qwen2.5-1.5B 12/2 (6), Qwen2.5-7B 28/4 (7). Their row blocks leave
# padding rows in every tile (64 // 7 = 9 requests: 63 of 64 rows) and their requests straddle no tile boundary.
ODD_GQA_HEADS = [(24, 8), (40, 8), (12, 2), (28, 4)]
# One KV head per tensor-parallel rank: Llama-3-70B at TP 8 (8 q / 1 KV), Qwen2.5-7B at TP 4 (7 / 1), Qwen2.5-14B at
# TP 8 (5 / 1): the forward's grid has one CTA per item.
ONE_KV_HEAD = [(8, 1), (7, 1), (5, 1)]
# GQA ratios above 8: GLM-4.5-Air at TP 2 (48 q / 4 KV: 12), Qwen3-235B-A22B (64 / 4: 16; at TP 4 16 / 1)
WIDE_GQA = [(48, 4), (64, 4), (16, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads", ODD_GQA_HEADS + ONE_KV_HEAD + WIDE_GQA, ids=lambda h: f"{h[0]}q{h[1]}kv")
@pytest.mark.parametrize("page_size", [1, 16])
def test_random_forests_odd_gqa_ratios(dtype: torch.dtype, head_dim: int, heads: tuple[int, int],
                                       page_size: int) -> None:
    rng = np.random.default_rng(_next_seed())
    for max_requests in (64, 200):  # the second: wide packs of several row blocks
        tree = random_tree(
            rng, max_depth=5, max_requests=max_requests, max_len=1024, page_size=page_size,
            max_request_tokens=20_000, p_inner_request=0.2, p_duplicate=0.1,
        )
        check_batch(layout_tree(tree, page_size, rng), heads[0], heads[1], head_dim, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
@pytest.mark.parametrize("page_size", [1, 16])
def test_asymmetric_tree(dtype: torch.dtype, group: int, page_size: int) -> None:
    parents = [-1, 0, 1, 2, 2, 3, 3, 3, 4, 0, 9, 9, 9, 1, -1]
    lengths = [2048, 512, 256, 128, 96, 5, 17, 33, 80, 320, 3, 600, 1, 7, 3000]
    request_nodes = [5, 6, 7, 8, 8, 4, 10, 11, 12, 1, 13, 14] + [7] * 20 + [11] * 3
    tree = Tree(parents, lengths, request_nodes)
    check_batch(layout_tree(tree, page_size, _next_seed()), 4 * group, 4, 128, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("levels", [[(1, 32768), (4, 64)], [(1, 65536), (2, 16)], [(1, 8192), (1, 1)]])
def test_long_prefix_small_batch(dtype: torch.dtype, levels: list[tuple[int, int]]) -> None:
    """One pack split across many CTAs."""
    check_batch(tree_batch(levels, rng=_next_seed()), 32, 8, 128, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("page_size", [1, 16])
def test_no_sharing(dtype: torch.dtype, page_size: int) -> None:
    check_batch(tree_batch([(48, 700)], page_size, _next_seed()), 32, 8, 128, dtype)
    rng = np.random.default_rng(_next_seed())
    ragged = Tree([-1] * 40, [int(x) for x in rng.integers(1, 3000, 40)], list(range(40)))
    check_batch(layout_tree(ragged, page_size, rng), 32, 8, 128, dtype)


# The forward's tile-group loop (kernels/pat_decode.cu tile_group_loop): a 16-row item of at least this many 16-token
# tiles has two computing warps, each on every other tile, their states combined at the end.
GROUP_MIN_TILES = 16


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads", [(32, 8), (64, 8), (32, 32)])
@pytest.mark.parametrize("page_size", [1, 16])
def test_long_private_items_on_two_computing_warps(dtype: torch.dtype, head_dim: int, heads: tuple[int, int],
                                                   page_size: int) -> None:
    """Private leaves under a shared prefix with lengths around the tile-group threshold: even and odd tile counts
    (an odd count leaves the second warp without a tile in the last group), partial last tiles, items just below."""
    lengths = [239, 240, 255, 256, 257, 271, 272, 273, 288, 289, 300, 511, 777, 1000]
    tree = Tree([-1] + [0] * len(lengths), [512, *lengths], list(range(1, len(lengths) + 1)))
    for split_tokens in (None, 4096):  # the cost model's splits, and every private leaf one item
        plan = check_batch(layout_tree(tree, page_size, _next_seed()), heads[0], heads[1], head_dim, dtype,
                           split_tokens=split_tokens)
    items = plan.items.cpu().numpy()
    kv_tile = 16  # the H200 table's KV tile at head dims 64 and 128 (configs/tiles/sm90.json)
    tiles = (items[:, ITEM_KV_END] - items[:, ITEM_KV_BEGIN] + kv_tile - 1) // kv_tile
    grouped = tiles[items[:, ITEM_TILE_M] == 16]
    assert (grouped >= GROUP_MIN_TILES).any() and (grouped[grouped >= GROUP_MIN_TILES] % 2 == 1).any(), \
        "the plan must hold 16-row items on the tile-group loop, odd tile counts among them"
    assert (grouped < GROUP_MIN_TILES).any(), "and 16-row items just below the threshold"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_nearly_empty_last_wave_cut_finer(dtype: torch.dtype, head_dim: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan whose last wave the planner cuts finer (``_tail_split``) on this GPU: exact against float64, and the
    plan checked is the cut one."""
    heads = HeadConfig(32, 8, head_dim, dtype)
    batch, plain_items = tail_split_batch(heads, DeviceSpec.from_torch(), _next_seed(), monkeypatch)
    assert check_batch(batch, 32, 8, head_dim, dtype).num_items > plain_items


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_batch_one(dtype: torch.dtype, head_dim: int) -> None:
    check_batch(tree_batch([(1, 777)], rng=_next_seed()), 32, 8, head_dim, dtype)
    check_batch(tree_batch([(1, 1)], rng=_next_seed()), 32, 8, head_dim, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_merge_takes_any_number_of_partials(dtype: torch.dtype, head_dim: int) -> None:
    """The merge takes a request's partials 32 at a time, one per lane: requests of 2 to 100 partials (KV splits of
    64 tokens), on both sides of 32 and 64, and a tree whose requests merge a shared prefix's splits with their own."""
    seen: set[int] = set()
    for levels in ([(1, 2 * 64)], [(1, 31 * 64)], [(1, 32 * 64)], [(1, 33 * 64)], [(1, 64 * 64)], [(1, 65 * 64)],
                   [(1, 100 * 64)], [(1, 2048), (4, 100), (16, 70)]):
        plan = check_batch(tree_batch(levels, rng=_next_seed()), 32, 8, head_dim, dtype, split_tokens=64)
        seen.update(np.diff(plan.merge_indptr.cpu().numpy()).tolist())
    assert {2, 31, 32, 33, 36, 64, 65, 100} <= seen


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_1024_short_kv(dtype: torch.dtype) -> None:
    check_batch(tree_batch([(1024, 24)], rng=_next_seed()), 32, 8, 128, dtype)
    check_batch(tree_batch([(8, 64), (1024, 9)], rng=_next_seed()), 32, 8, 128, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kv_128k_one_request(dtype: torch.dtype) -> None:
    check_batch(tree_batch([(1, 128 * 1024)], rng=_next_seed()), 32, 8, 128, dtype)
    check_batch(tree_batch([(1, 128 * 1024 - 64), (2, 32)], page_size=16, rng=_next_seed()), 32, 8, 128, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_standard_workloads_small_heads(dtype: torch.dtype) -> None:
    for levels in ([(1, 4096), (64, 256)], [(1, 2048), (8, 1024), (128, 512)], [(1, 1024), (2, 512), (4, 512),
                                                                                 (8, 256), (32, 128), (128, 64)]):
        check_batch(tree_batch(levels, rng=_next_seed()), 8, 2, 128, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_rescale_skip_is_exact_and_slack_is_close(dtype: torch.dtype, head_dim: int) -> None:
    """The online softmax skips a warp's O rescale on tiles where no row's max moved: bitwise the result of
    rescaling every tile (``rescale_slack_log2=-1``). With a slack (the running max kept until a tile's max exceeds
    it by 8 in log2 units) it stays within the bound of float64 attention, also on scores spread wide enough (q x 6)
    that the max moves past the slack inside rows."""
    rng = np.random.default_rng(_next_seed())
    tree = random_tree(rng, max_depth=4, max_requests=48, max_len=1024, page_size=1, max_request_tokens=12_000,
                       p_inner_request=0.2, p_duplicate=0.1)
    batch = layout_tree(tree, 1, rng)
    heads = HeadConfig(32, 8, head_dim, dtype)
    scale = 1.0 / math.sqrt(head_dim)
    for spread in (1.0, 6.0):
        q, k, v = make_qkv(batch.batch, 32, 8, head_dim, batch.num_slots, dtype, "cuda", seed=_next_seed())
        q = (q * spread).to(dtype)
        plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec.from_torch(q.device)).to("cuda")
        outs = {}
        for slack in (-1, 0, 8):
            out = torch.full_like(q, float("nan"))
            launch_plan(plan, q, k, v, scale, out=out, tune=KernelTune(rescale_slack_log2=slack))
            outs[slack] = out
        torch.cuda.synchronize()
        assert torch.equal(outs[0], outs[-1]), "skipping rescales by exp2(0) = 1 must change no bit"
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
        for slack, out in outs.items():
            assert_written_and_close(out, ref, f"slack {slack}, q x {spread}")


def test_unsupported_head_dim_raises() -> None:
    batch = tree_batch([(1, 64), (2, 8)], rng=0)
    q, k, v = make_qkv(batch.batch, 8, 2, 96, batch.num_slots, torch.bfloat16, "cuda")
    heads = HeadConfig(8, 2, 96, torch.bfloat16)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads).to("cuda")
    with pytest.raises(ValueError, match="head_dim"):
        pat_sglang.run(plan, q, k, v)


def test_float32_on_cuda_raises() -> None:
    batch = tree_batch([(1, 64), (2, 8)], rng=0)
    q, k, v = make_qkv(batch.batch, 8, 2, 128, batch.num_slots, torch.float32, "cuda")
    heads = HeadConfig(8, 2, 128, torch.float32)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads).to("cuda")
    with pytest.raises(ValueError, match="dtype"):
        pat_sglang.run(plan, q, k, v)


def _grow_steps(rng: np.random.Generator, n: int, room: int) -> list[np.ndarray]:
    """Per step, new tokens per request: none, one each, up to a few, up to two KV tiles (0 for some), and one row
    far past its KV split (more than a KV tile of 16-64 tokens and more than the re-plan bound's floor)."""
    steps = [np.zeros(n, np.int64), np.ones(n, np.int64), rng.integers(0, 4, n), rng.integers(0, 130, n)]
    steps[3][rng.integers(0, n)] = 0
    big = np.zeros(n, np.int64)
    big[rng.integers(0, n)] = room // 2
    steps.append(big)
    return steps

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_open_ends_follow_growing_rows(dtype: torch.dtype, head_dim: int, mode: str) -> None:
    """A plan with open items made once (rows of a 2-D slot table, as SGLang's req_to_token), then every row grows by
    k new tokens (0, 1, a few, more than a KV tile, one row by hundreds) and the same plan runs again with the new
    seq_lens (int64 on the device): float64 attention over the new lengths, every output written (poisoned with NaN
    before each run). ``graph``: through StaticPlanBuffers in one captured CUDA graph, replayed after the new lengths
    are copied into its static seq_lens buffer (what SGLang's graph runner does), nothing reloaded."""
    from pat_sglang.kernels import StaticPlanBuffers
    from pat_sglang.planner import plan_forest
    from pat_sglang.workloads import row_batch

    rng = np.random.default_rng(_next_seed())
    room = 600
    tree = random_tree(rng, max_depth=5, max_requests=48, max_len=1024, max_request_tokens=12_000,
                       p_inner_request=0.2, p_duplicate=0.1)
    batch = row_batch(layout_tree(tree, 1, rng), room=room, rng=rng)
    n = batch.forest.num_requests
    steps = _grow_steps(rng, n, room)
    num_slots = batch.num_slots + int(sum(int(k.sum()) for k in steps))
    hq, hkv = 32, 8
    heads = HeadConfig(hq, hkv, head_dim, dtype)
    q, k, v = make_qkv(n, hq, hkv, head_dim, num_slots, dtype, "cuda", seed=_next_seed())
    scale = 1.0 / math.sqrt(head_dim)
    spec = DeviceSpec.from_torch(q.device)
    table = batch.slot_table().cuda()  # req_to_token on the device: rows are written in place as they grow
    seq_dev = torch.from_numpy(batch.seq_lens.copy()).cuda()
    rows_dev = torch.from_numpy(batch.rows.copy()).cuda()
    out = torch.empty_like(q)
    if mode == "graph":
        buffers = StaticPlanBuffers(heads, n, 2 * n + 2 * spec.sm_count, 4 * n + 2 * spec.sm_count, "cuda")
        plan = plan_forest(batch.forest, heads, spec, slot_table=table, row_stride=batch.row_stride,
                           limits=buffers.limits)
        buffers.load(plan)
        graph, _ = capture(lambda: buffers.run(q, k, v, scale, out, seq_lens=seq_dev, req_rows=rows_dev))
    else:
        host = plan_forest(batch.forest, heads, spec, slot_table=table, row_stride=batch.row_stride)
        plan = host.to("cuda")  # the slot table is there already: the same tensor
        assert plan.slot_table.data_ptr() == table.data_ptr()
    assert plan.num_open == n
    items = plan.items.clone()
    grown = batch
    for i, ks in enumerate(steps):
        grown = grown.grow(np.minimum(ks, grown.row_stride - grown.seq_lens))
        table.copy_(grown.slot_table())  # the new tokens' slots, as SGLang writes them into req_to_token
        seq_dev.copy_(torch.from_numpy(grown.seq_lens))
        out.fill_(float("nan"))
        if mode == "graph":
            buffers.load(plan)  # the same plan: nothing copied
            graph.replay()
        else:
            launch_plan(plan, q, k, v, scale, out=out, seq_lens=seq_dev, req_rows=rows_dev)
        torch.cuda.synchronize()
        indptr, flat = grown.kv_flat()
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), indptr, flat, scale)
        assert_written_and_close(out, ref, f"step {i} (+{int(ks.max())} tokens max)")
    assert torch.equal(plan.items, items)


def test_open_plan_needs_lengths() -> None:
    from pat_sglang.planner import plan_forest
    from pat_sglang.workloads import row_batch

    rng = np.random.default_rng(_next_seed())
    batch = row_batch(tree_batch([(1, 300), (4, 40)], rng=rng), room=64, rng=rng)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    q, k, v = make_qkv(4, 32, 8, 128, batch.num_slots, torch.bfloat16, "cuda")
    plan = plan_forest(batch.forest, heads, DeviceSpec.from_torch(q.device), slot_table=batch.slot_table().cuda(),
                       row_stride=batch.row_stride).to("cuda")
    with pytest.raises(ValueError, match="seq_lens"):
        launch_plan(plan, q, k, v, 0.1)
    with pytest.raises(ValueError, match="int64"):
        launch_plan(plan, q, k, v, 0.1, seq_lens=torch.from_numpy(batch.seq_lens).int().cuda(),
                    req_rows=torch.from_numpy(batch.rows).cuda())


SM90_ONLY = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0), reason="wgmma builds need sm_90"
)


def wgmma_batches(page_size: int, rng: np.random.Generator) -> list[DecodeBatch]:
    """Batches whose plans have 64-row items at every GQA ratio of the test: a wide shared prefix (64 requests), the
    asymmetric tree with 20 requests on one leaf, and a random forest."""
    parents = [-1, 0, 1, 2, 2, 3, 3, 3, 4, 0, 9, 9, 9, 1, -1]
    lengths = [2048, 512, 256, 128, 96, 5, 17, 33, 80, 320, 3, 600, 1, 7, 3000]
    request_nodes = [5, 6, 7, 8, 8, 4, 10, 11, 12, 1, 13, 14] + [7] * 20 + [11] * 3
    forest = random_tree(rng, max_depth=5, max_requests=96, max_len=700, page_size=page_size,
                         max_request_tokens=9000, p_inner_request=0.2, p_duplicate=0.1)
    return [
        tree_batch([(1, 1504), (64, 37)], page_size, rng),
        layout_tree(Tree(parents, lengths, request_nodes), page_size, rng),
        layout_tree(forest, page_size, rng),
    ]


@SM90_ONLY
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads", [(8, 8), (32, 8), (64, 8), (32, 32)])
@pytest.mark.parametrize("page_size", [1, 16])
def test_wgmma_build_matches_reference(dtype: torch.dtype, head_dim: int, heads: tuple[int, int],
                                       page_size: int) -> None:
    """The build whose 64-row items run on warpgroup MMAs (``KernelTune(wgmma=True)``: Q, K, V in wgmma's swizzled
    layout, read by descriptors) against float64 attention, on plans that have 64-row items (checked), beside the
    mma.sync build on the same inputs."""
    from pat_sglang.planner import ITEM_TILE_M

    rng = np.random.default_rng(_next_seed())
    scale = 1.0 / math.sqrt(head_dim)
    hq, hkv = heads
    cfg = HeadConfig(hq, hkv, head_dim, dtype)
    for i, batch in enumerate(wgmma_batches(page_size, rng)):
        q, k, v = make_qkv(batch.batch, hq, hkv, head_dim, batch.num_slots, dtype, "cuda", seed=_next_seed())
        plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, cfg, DeviceSpec.from_torch(q.device)).to("cuda")
        if i == 0:  # 64 requests on one prefix: 64-row items at every group size
            assert bool((plan.items[:, ITEM_TILE_M] == 64).any()), "the batch must exercise 64-row items"
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
        for wgmma in (True, False):
            out = torch.full_like(q, float("nan"))
            launch_plan(plan, q, k, v, scale, out=out, tune=KernelTune(wgmma=wgmma))
            torch.cuda.synchronize()
            assert_written_and_close(out, ref, f"wgmma={wgmma}, batch {batch.batch} requests")


# wgmma builds whose 64-row items take 32 or 64 KV columns per S block and softmax step (bench/tile_sweep.py ``/nN``)
WIDE_WGMMA_TUNES = [
    (64, KernelTune(kv_tile=32, stages=4, min_ctas_per_sm=4, wgmma=True, wg_cols=32)),
    (128, KernelTune(kv_tile=32, stages=3, min_ctas_per_sm=3, wgmma=True, wg_cols=32)),
    (128, KernelTune(kv_tile=64, stages=2, min_ctas_per_sm=2, wgmma=True, wg_cols=64)),
    (128, KernelTune(kv_tile=64, stages=2, min_ctas_per_sm=2, wgmma=True, wg_cols=32)),
    (256, KernelTune(kv_tile=32, stages=2, min_ctas_per_sm=2, wgmma=True, wg_cols=32)),
    # blocks spanning 2 or 4 16-token stages of the ring layout (the tables' 16-token streaming for other items)
    (64, KernelTune(kv_tile=16, stages=4, min_ctas_per_sm=6, wgmma=True, wg_cols=32)),
    (128, KernelTune(kv_tile=16, stages=4, min_ctas_per_sm=4, wgmma=True, wg_cols=32)),
    (128, KernelTune(kv_tile=16, stages=6, min_ctas_per_sm=3, wgmma=True, wg_cols=32)),
    (128, KernelTune(kv_tile=16, stages=8, min_ctas_per_sm=2, wgmma=True, wg_cols=64)),
    (256, KernelTune(kv_tile=16, stages=4, min_ctas_per_sm=2, wgmma=True, wg_cols=32)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("head_dim", "tune"), WIDE_WGMMA_TUNES, ids=["d64n32", "d128n32", "d128n64", "d128t64n32",
                                                                      "d256n32", "d64ring32", "d128ring32",
                                                                      "d128ring32s6", "d128ring64", "d256ring32"])
@pytest.mark.parametrize("page_size", [1, 16])
def test_wide_wgmma_blocks_match_reference(dtype: torch.dtype, head_dim: int, tune: KernelTune, page_size: int) -> None:
    """64-row wgmma items over 32 or 64 KV columns per S block (``KernelTune.wg_cols``: one chained S, one softmax
    step, chained P V steps; the mask of the block holding kv_end over all of its n8 blocks) against float64
    attention, on plans that have 64-row items (checked) and requests whose lengths end inside such blocks."""
    from pat_sglang.planner import ITEM_TILE_M

    rng = np.random.default_rng(_next_seed())
    scale = 1.0 / math.sqrt(head_dim)
    cfg = HeadConfig(32, 8, head_dim, dtype)
    for i, batch in enumerate(wgmma_batches(page_size, rng)):
        q, k, v = make_qkv(batch.batch, 32, 8, head_dim, batch.num_slots, dtype, "cuda", seed=_next_seed())
        plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, cfg, DeviceSpec.from_torch(q.device)).to("cuda")
        if i == 0:
            assert bool((plan.items[:, ITEM_TILE_M] == 64).any()), "the batch must exercise 64-row items"
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
        out = torch.full_like(q, float("nan"))
        launch_plan(plan, q, k, v, scale, out=out, tune=tune)
        torch.cuda.synchronize()
        assert_written_and_close(out, ref, f"{tune}, batch {batch.batch} requests")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("head_dim", "tune"), [
    (64, KernelTune(kv_tile=16, stages=4, min_ctas_per_sm=8, warps=2)),
    (128, KernelTune(kv_tile=16, stages=3, min_ctas_per_sm=7, warps=2)),
    (256, KernelTune(kv_tile=16, stages=3, min_ctas_per_sm=3, warps=2)),
    (128, KernelTune(kv_tile=16, stages=3, min_ctas_per_sm=8, warps=1)),
], ids=["d64w2", "d128w2", "d256w2", "d128w1"])
@pytest.mark.parametrize("page_size", [1, 16])
def test_sweep_variants_match_reference(dtype: torch.dtype, head_dim: int, tune: KernelTune, page_size: int) -> None:
    """``bench/tile_sweep.py``'s ``/wN`` variants (CTAs of one or two warps: the no-sharing rows' candidates) against
    float64 attention, on plans made with the tile m values their CTAs hold (``TileTable.with_warps``: 16 rows per
    warp)."""
    from pat_sglang.config import load_tile_table
    from pat_sglang.forest import PrefixForest
    from pat_sglang.planner import ITEM_TILE_M, plan_forest

    rng = np.random.default_rng(_next_seed())
    scale = 1.0 / math.sqrt(head_dim)
    cfg = HeadConfig(32, 8, head_dim, dtype)
    device = DeviceSpec.from_torch(torch.device("cuda"))
    tiles = load_tile_table(device.arch)
    tiles = tiles.with_warps(tune.warps) if tune.warps else tiles
    for batch in wgmma_batches(page_size, rng):
        q, k, v = make_qkv(batch.batch, 32, 8, head_dim, batch.num_slots, dtype, "cuda", seed=_next_seed())
        forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
        plan = plan_forest(forest, cfg, device, tiles=tiles).to("cuda")
        assert int(plan.items[:, ITEM_TILE_M].max()) <= 16 * (tune.warps or tiles.warps[head_dim])
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
        out = torch.full_like(q, float("nan"))
        launch_plan(plan, q, k, v, scale, out=out, tune=tune)
        torch.cuda.synchronize()
        assert_written_and_close(out, ref, f"{tune}, batch {batch.batch} requests")


@pytest.mark.parametrize(("levels", "merges"), [([(1, 2048), (16, 300)], True), ([(256, 64)], False)],
                         ids=["tree-merge", "private-no-merge"])
def test_eager_launches_as_one_graph_follow_every_call(levels: list[tuple[int, int]], merges: bool) -> None:
    """Eager ``run`` launches the plan's kernels as one CUDA graph with the call's parameters written into its nodes
    (``pat_sglang.launch.KernelGraph``, built on the second call). Four "layers" (their own q, pools, out and scales)
    queued back to back with no synchronisation: each output is its own layer's attention (float64), so writing one
    call's parameters never changes a launch already queued. The same call captured in a CUDA graph (the stream under
    capture gets the kernels one by one) replays to the same reference."""
    from pat_sglang.kernels import plan_launch

    batch = tree_batch(levels, rng=_next_seed())
    hq, hkv, head_dim, dtype = 32, 8, 128, torch.bfloat16
    heads = HeadConfig(hq, hkv, head_dim, dtype)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec.from_torch(torch.device("cuda")))
    plan = plan.to("cuda")
    layers = [make_qkv(batch.batch, hq, hkv, head_dim, batch.num_slots, dtype, "cuda", seed=_next_seed())
              for _ in range(4)]
    scales = [0.5 / math.sqrt(head_dim) * (1 + i) for i in range(4)]
    outs = [torch.full_like(q, float("nan")) for q, _, _ in layers]
    for (q, k, v), out, scale in zip(layers, outs, scales, strict=True):
        pat_sglang.run(plan, q, k, v, sm_scale=scale, out=out)
    launch = plan_launch(plan, layers[0][0].device)
    assert launch.launcher.graph is not None  # the graph path ran (from the second layer), not kernel by kernel
    assert (plan.num_partials > 0) == merges and len(launch.launcher.launches) == (2 if merges else 1)
    torch.cuda.synchronize()
    refs = [naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
            for (q, k, v), scale in zip(layers, scales, strict=True)]
    for i, (out, ref) in enumerate(zip(outs, refs, strict=True)):
        assert_written_and_close(out, ref, f"layer {i}")
    q, k, v = layers[1]
    out = torch.full_like(q, float("nan"))
    graph, _ = capture(lambda: pat_sglang.run(plan, q, k, v, sm_scale=scales[1], out=out))
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert_written_and_close(out, refs[1], "captured")


def test_static_buffers_serve_every_plan_loaded_under_one_graph() -> None:
    """One captured CUDA graph over StaticPlanBuffers, then plans of other batches' forests (fresh: every buffer
    changes), re-made plans (``plan_forest(previous=...)`` after the rows grew: all but the items shared, so a load
    copies only the items' span) and a plan loaded again, in turn: each replay computes its own plan's attention
    (float64 reference), every output written. A load is one copy of one span of the flat buffers
    (``StaticPlanBuffers.load``)."""
    from pat_sglang.kernels import StaticPlanBuffers
    from pat_sglang.planner import plan_forest
    from pat_sglang.workloads import same_stride_row_batches

    rng = np.random.default_rng(_next_seed())
    n, head_dim, dtype, hq, hkv = 24, 128, torch.bfloat16, 32, 8
    # batches of n requests over other trees (other shapes, partials and merges), one row stride (the graph captured
    # one table)
    batches = same_stride_row_batches(rng, n, 3, room=8, max_depth=4, max_len=512, max_request_tokens=6_000,
                                      p_inner_request=0.2, p_duplicate=0.1)
    stride = batches[0].row_stride
    num_slots = max(b.num_slots for b in batches) + 8 * n
    heads = HeadConfig(hq, hkv, head_dim, dtype)
    q, k, v = make_qkv(n, hq, hkv, head_dim, num_slots, dtype, "cuda", seed=_next_seed())
    scale = 1.0 / math.sqrt(head_dim)
    spec = DeviceSpec.from_torch(q.device)
    table = torch.zeros((n + 1, stride), dtype=torch.int32, device="cuda")
    flat_table = table.view(-1)  # one tensor: the plans' slot table (re-made plans need the one they were made over)
    seq_dev = torch.zeros(n, dtype=torch.int64, device="cuda")
    rows_dev = torch.zeros(n, dtype=torch.int64, device="cuda")
    out = torch.empty_like(q)
    buffers = StaticPlanBuffers(heads, n, 2 * n + 2 * spec.sm_count, 4 * n + 2 * spec.sm_count, "cuda")
    plans = []
    for batch in batches:
        plan = plan_forest(batch.forest, heads, spec, slot_table=flat_table, row_stride=stride,
                           limits=buffers.limits)
        grown = batch.grow(np.ones(n, dtype=np.int64))
        forest = batch.forest.with_lengths(grown.seq_lens)
        assert forest is not None
        remade = plan_forest(forest, heads, spec, slot_table=flat_table, row_stride=stride,
                             limits=buffers.limits, previous=plan)
        assert remade.item_req is plan.item_req  # re-made: only the items are new
        plans += [(batch, plan), (grown, remade)]
    plans.append(plans[0])  # a plan loaded again after others

    def stage(batch: object) -> None:  # the batch's slots, lengths and rows where the graph reads them
        table.copy_(torch.from_numpy(batch.table))
        seq_dev.copy_(torch.from_numpy(batch.seq_lens))
        rows_dev.copy_(torch.from_numpy(batch.rows))

    stage(plans[0][0])
    buffers.load(plans[0][1])
    graph, _ = capture(lambda: buffers.run(q, k, v, scale, out, seq_lens=seq_dev, req_rows=rows_dev))
    for i, (batch, plan) in enumerate(plans):
        stage(batch)
        buffers.load(plan)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        indptr, flat = batch.kv_flat()
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), indptr, flat, scale)
        assert_written_and_close(out, ref, f"plan {i}")


@SM90_ONLY
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads", [(8, 8), (32, 8), (64, 8), (32, 32)])
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("stages", [3, 4])
def test_wide_launch_matches_reference(dtype: torch.dtype, head_dim: int, heads: tuple[int, int], page_size: int,
                                       stages: int) -> None:
    """The wide launch (``KernelTune(wide_stages=N)``: items of tile m >= 64 on pat_wide_forward's producer and two
    consumer warpgroups, the rest on pat_pack_forward after it, one merge) against float64 attention, on plans with
    128-row items (``TileTable.with_tile_m(128)``), items of 65-127 rows (the second consumer warpgroup partly
    padded), 64-row items (one consumer warpgroup), and KV ends inside a 64-token block."""
    from pat_sglang.config import load_tile_table

    rng = np.random.default_rng(_next_seed())
    scale = 1.0 / math.sqrt(head_dim)
    hq, hkv = heads
    cfg = HeadConfig(hq, hkv, head_dim, dtype)
    device = DeviceSpec.from_torch(torch.device("cuda"))
    tiles = load_tile_table(device.arch).with_tile_m(128)
    batches = [tree_batch([(1, 1008), (160 // (hq // hkv), 9)], page_size, rng),
               tree_batch([(1, 784), (100 // (hq // hkv) + 1, 5)], page_size, rng),
               tree_batch([(1, 608), (64 // (hq // hkv), 3)], page_size, rng), *wgmma_batches(page_size, rng)]
    seen: set[int] = set()
    for batch in batches:
        q, k, v = make_qkv(batch.batch, hq, hkv, head_dim, batch.num_slots, dtype, "cuda", seed=_next_seed())
        plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), cfg, device,
                           tiles=tiles).to("cuda")
        seen.update(int(m) for m in plan.items[:, ITEM_TILE_M].tolist())
        ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
        out = torch.full_like(q, float("nan"))
        launch_plan(plan, q, k, v, scale, out=out, tune=KernelTune(wide_stages=stages))
        torch.cuda.synchronize()
        assert_written_and_close(out, ref, f"wide {stages} stages, batch {batch.batch} requests")
    assert {64, 128} <= seen, f"the batches must exercise 64- and 128-row items, saw {sorted(seen)}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(16, 8), (32, 8)], ids=["16q8kv", "32q8kv"])
@pytest.mark.parametrize("page_size", [1, 16])
def test_long_and_short_packs_of_one_plan(dtype: torch.dtype, heads: tuple[int, int], page_size: int) -> None:
    """Head dim 256 (least tile m 64 on sm_90) with packs long from 512 KV tokens: a shared prefix's 64-row block,
    short private rows padded to 64-row wgmma items and long ones on 16-row items, in one plan and one launch, against
    float64 attention."""
    from pat_sglang.config import load_tile_table

    device = DeviceSpec.from_torch(torch.device("cuda"))
    tiles = load_tile_table(device.arch).with_min_tile_m_tokens(512)
    hq, hkv = heads
    cfg = HeadConfig(hq, hkv, 256, dtype)
    leaves, rows = (37, 300, 511, 512, 900, 2000), (64, 700, 3000)  # under the shared root; private rows
    tree = Tree(parents=[-1] + [0] * len(leaves) + [-1] * len(rows),
                lengths=[1024 if page_size == 16 else 1000, *leaves, *rows],
                request_nodes=list(range(1, 1 + len(leaves) + len(rows))))
    batch = layout_tree(tree, page_size, np.random.default_rng(_next_seed()))
    q, k, v = make_qkv(batch.batch, hq, hkv, 256, batch.num_slots, dtype, "cuda", seed=_next_seed())
    plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), cfg, device, tiles=tiles)
    assert {16, 64} <= set(plan.items[:, ITEM_TILE_M].tolist())
    out = torch.full_like(q, float("nan"))
    pat_sglang.run(plan.to("cuda"), q, k, v, out=out)
    torch.cuda.synchronize()
    ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, 1.0 / 16)
    assert_written_and_close(out, ref, "long and short packs")
