"""The reference executor of a PackPlan equals plain per-request attention (float64), and the CPU API path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pat_sglang
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import plan_forest
from pat_sglang.reference import naive_decode, run_reference, sampled_naive_decode
from pat_sglang.workloads import Tree, layout_tree, make_qkv, random_tree, tree_batch

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rel_max(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).abs().max() / ref.abs().max())


def _check(
    tree: Tree, page_size: int, group: int, head_dim: int, num_kv_heads: int, seed: int, sm_count: int = 132
) -> None:
    batch = layout_tree(tree, page_size=page_size, rng=seed, num_slots=None)
    heads = HeadConfig(num_kv_heads * group, num_kv_heads, head_dim, torch.float64)
    hq = heads.num_q_heads
    q, k, v = make_qkv(batch.batch, hq, num_kv_heads, head_dim, batch.num_slots, torch.float64, seed=seed)
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    plan = plan_forest(forest, heads, DeviceSpec(sm_count=sm_count))
    scale = 1.0 / math.sqrt(head_dim)
    out = run_reference(plan, q, k, v, scale)
    ref = naive_decode(q, k, v, batch.kv_indptr, batch.kv_indices, scale)
    assert not torch.isnan(out).any(), "an output row was never written"
    assert rel_max(out, ref) < 1e-10


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    group=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8]),
    head_dim=st.sampled_from([64, 128]),
    page_size=st.sampled_from([1, 16]),
    sm_count=st.sampled_from([4, 132]),
)
def test_random_trees_match_naive(seed: int, group: int, head_dim: int, page_size: int, sm_count: int) -> None:
    rng = np.random.default_rng(seed)
    tree = random_tree(
        rng, max_depth=6, max_requests=16, max_len=200, page_size=page_size, max_request_tokens=1500,
        p_inner_request=0.2, p_duplicate=0.1,
    )
    _check(tree, page_size, group, head_dim, num_kv_heads=1 if group == 8 else 2, seed=seed, sm_count=sm_count)


@pytest.mark.parametrize("group", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
def test_head_dim_256(group: int) -> None:
    tree = random_tree(np.random.default_rng(group), max_depth=3, max_requests=6, max_len=150)
    _check(tree, 1, group, 256, num_kv_heads=1, seed=group)


@pytest.mark.parametrize("group", [4, 5, 7, 8, 12, 16])
def test_one_kv_head_per_rank(group: int) -> None:
    """One KV head with its q heads, as a tensor-parallel rank holds it (Llama-3-70B at TP 8: 8 q / 1 KV; Qwen2.5-7B at
    TP 4: 7 / 1; Qwen2.5-14B at TP 8: 5 / 1)."""
    tree = random_tree(np.random.default_rng(40 + group), max_depth=4, max_requests=40, max_len=300, page_size=16)
    _check(tree, 16, group, 128, num_kv_heads=1, seed=group, sm_count=16)


@pytest.mark.parametrize("page_size", [1, 16])
def test_asymmetric_tree(page_size: int) -> None:
    # Root (512) with: a deep branch (3 more levels, 9 requests at differing depths), a shallow branch
    # (1 level, 3 requests), one request ending at the root's child, and a lone long request.
    parents = [-1, 0, 1, 2, 2, 3, 3, 3, 4, 0, 9, 9, 9, 1, -1]
    lengths = [128, 64, 48, 32, 48, 5, 17, 33, 80, 96, 3, 150, 1, 7, 500]
    request_nodes = [5, 6, 7, 8, 8, 4, 10, 11, 12, 1, 13, 14]
    tree = Tree(parents, lengths, request_nodes)
    if page_size > 1:
        inner = tree.has_children()
        tree = Tree(parents, [(x // 16) * 16 if inner[i] else x for i, x in enumerate(lengths)], request_nodes)
    for group in (1, 3, 7, 8):
        _check(tree, page_size, group, 64, num_kv_heads=1, seed=group, sm_count=8)


def test_standard_workload_e_small_heads() -> None:
    batch = tree_batch([(1, 128), (2, 64), (4, 32), (8, 32), (16, 16), (32, 8)], rng=5)
    _check(batch.tree, 1, 4, 64, num_kv_heads=1, seed=5, sm_count=16)


@pytest.mark.parametrize("group", [1, 4])
def test_decode_attention_cpu_float32(group: int) -> None:
    tree = random_tree(np.random.default_rng(11 + group), max_depth=4, max_requests=12, max_len=150)
    batch = layout_tree(tree, rng=group)
    q, k, v = make_qkv(batch.batch, 2 * group, 2, 128, batch.num_slots, torch.float32, seed=group)
    out = pat_sglang.decode_attention(q, k, v, batch.kv_indptr, batch.kv_indices)
    assert out.dtype == torch.float32 and out.shape == q.shape
    ref = naive_decode(q, k, v, batch.kv_indptr, batch.kv_indices, 1.0 / math.sqrt(128))
    assert not torch.isnan(out).any()
    assert rel_max(out, ref) < 1e-5


def test_run_cpu_with_out_and_scale() -> None:
    batch = tree_batch([(1, 200), (6, 30)], rng=3)
    heads = HeadConfig(8, 2, 64, torch.float32)
    q, k, v = make_qkv(batch.batch, 8, 2, 64, batch.num_slots, torch.float32, seed=3)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads)
    out = torch.full_like(q, float("nan"))
    res = pat_sglang.run(plan, q, k, v, sm_scale=0.3, out=out)
    assert res is out and not torch.isnan(out).any()
    ref = naive_decode(q, k, v, batch.kv_indptr, batch.kv_indices, 0.3)
    assert rel_max(out, ref) < 1e-5


def test_run_rejects_mismatched_inputs() -> None:
    batch = tree_batch([(1, 64), (4, 16)], rng=0)
    heads = HeadConfig(8, 2, 64, torch.float32)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads)
    q, k, v = make_qkv(batch.batch, 8, 2, 64, batch.num_slots, torch.float32)
    with pytest.raises(ValueError, match="pools hold"):
        pat_sglang.run(plan, q, k[:10], v[:10])
    with pytest.raises(ValueError, match="batch"):
        pat_sglang.run(plan, q[:2], k, v)
    with pytest.raises(ValueError, match="heads"):
        pat_sglang.run(plan, q[:, :4], k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="dtypes"):
        pat_sglang.run(plan, q.double(), k, v)


@pytest.mark.parametrize("count", [3, 8, 50])
def test_sampled_reference_is_naive_decode_of_its_requests(count: int) -> None:
    """The benches' spot check: the sampled requests (spread over the batch, first and last included, each once) get
    exactly ``naive_decode`` of the whole batch, FP8 pools with their scales too."""
    b = layout_tree(random_tree(5, max_depth=3, max_requests=20, max_len=64), rng=5)
    n = b.kv_indptr.shape[0] - 1
    q, k, v = make_qkv(n, 8, 2, 64, b.num_slots, torch.float32, "cpu", seed=3)
    k8, v8 = (k / 0.5).to(torch.float8_e4m3fn), (v / 0.25).to(torch.float8_e4m3fn)
    sel, got = sampled_naive_decode(q, k8, v8, b.kv_indptr, b.kv_indices, 0.125, count=count, k_scale=0.5,
                                    v_scale=0.25)
    assert sel[0] == 0 and sel[-1] == n - 1 and sel == sorted(set(sel)) and len(sel) == min(count, n)
    want = naive_decode(q, k8, v8, b.kv_indptr, b.kv_indices, 0.125, k_scale=0.5, v_scale=0.25)
    assert got.dtype == torch.float64 and torch.equal(got, want[sel])
