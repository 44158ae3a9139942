"""Workload builders match the anchors file, and the benchmark script's CPU-only parts work."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scripts import REPO, load_script

from pat_sglang.forest import PrefixForest
from pat_sglang.workloads import (
    STANDARD_WORKLOADS,
    WORKLOAD_LABELS,
    ServingWindow,
    layout_tree,
    make_qkv,
    random_tree,
    tree_batch,
    tree_from_levels,
)


def _bench():
    return load_script(REPO / "bench" / "bench_kernels.py")


# (bs, uniq Ktok, req Ktok) as printed by the FlashInfer H100 anchor run of 2026-11-24 (docs/perf/)
ANCHOR_COUNTS = {
    "a32": (32, 12.3, 139.3),
    "a64": (64, 20.5, 278.5),
    "a128": (128, 36.9, 557.1),
    "a256": (256, 69.6, 1114.1),
    "b": (128, 75.8, 458.8),
    "c": (256, 278.5, 524.3),
    "d64x4096": (64, 262.1, 262.1),
    "d256x1024": (256, 262.1, 262.1),
    "e": (128, 18.4, 319.5),
}


@pytest.mark.parametrize("name", sorted(STANDARD_WORKLOADS))
def test_standard_workload_counts(name: str) -> None:
    batch = tree_batch(STANDARD_WORKLOADS[name], rng=0)
    bs, uniq, req = ANCHOR_COUNTS[name]
    assert batch.batch == bs
    assert round(batch.unique_tokens() / 1e3, 1) == uniq
    assert round(batch.request_tokens() / 1e3, 1) == req
    assert batch.kv_indptr.dtype == torch.int32 and batch.kv_indices.dtype == torch.int32
    assert batch.num_slots == batch.unique_tokens()  # page size 1: the pool is exactly the unique KV
    # every slot of the pool is used, each by exactly one tree node
    assert sorted(np.concatenate(batch.node_slots).tolist()) == list(range(batch.num_slots))


def test_anchor_file_rows_match() -> None:
    # the anchors file is our reference measurement, not shipped: point PAT_BENCH_ANCHORS at it to run this check
    anchors = os.environ.get("PAT_BENCH_ANCHORS")
    if not anchors:
        pytest.skip("anchors file not given (set PAT_BENCH_ANCHORS=PATH)")
    bench = _bench()
    rows = bench.parse_anchors(Path(anchors))
    for name, (bs, uniq, req) in ANCHOR_COUNTS.items():
        row = rows[WORKLOAD_LABELS[name]]
        assert (row["bs"], row["uniq_ktok"], row["req_ktok"]) == (bs, uniq, req)
    assert bench.dry_run(bench.all_cases(), Path(anchors)) == 0


def test_bench_without_anchors() -> None:
    bench = _bench()
    assert bench.parse_anchors(None) == {}
    assert bench.dry_run(bench.all_cases()[:2]) == 0  # no anchors: listed, nothing compared
    with pytest.raises(FileNotFoundError, match="--anchors"):
        bench.parse_anchors(REPO / "no-such-anchors.txt")


def test_level_parent_rule() -> None:
    tree = tree_from_levels([(2, 10), (3, 5), (6, 1)])
    # level 1: node j under j*2//3 -> 0, 0, 1; level 2: node j under j*3//6 -> 0,0,1,1,2,2 (+ level offsets)
    assert tree.parents == [-1, -1, 0, 0, 1, 2, 2, 3, 3, 4, 4]
    assert tree.request_nodes == list(range(5, 11))
    with pytest.raises(ValueError):
        tree_from_levels([(4, 10), (2, 10)])
    with pytest.raises(ValueError):
        tree_from_levels([])


def test_pool_and_pages() -> None:
    batch = tree_batch([(1, 32), (3, 20)], page_size=16, rng=1, num_slots=1024)
    assert batch.num_slots == 1024
    assert int(batch.kv_indices.max()) < 1024
    for slots in batch.node_slots:
        starts = slots[::16]
        assert (starts % 16 == 0).all()
    with pytest.raises(ValueError, match="cannot hold"):
        tree_batch([(1, 32), (3, 20)], page_size=16, num_slots=64)


def test_random_tree_properties() -> None:
    for seed in range(50):
        tree = random_tree(seed, max_depth=6, max_requests=40, max_len=100, page_size=16, max_request_tokens=5000)
        assert 1 <= tree.num_requests <= 40
        assert min(tree.request_lengths()) >= 1
        inner = tree.has_children()
        assert all(n % 16 == 0 for n, i in zip(tree.lengths, inner, strict=True) if i)
        batch = layout_tree(tree, 16, seed)
        PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)


def test_make_qkv() -> None:
    q, k, v = make_qkv(3, 8, 2, 64, 100, torch.bfloat16, seed=1)
    assert q.shape == (3, 8, 64) and k.shape == v.shape == (100, 2, 64) and q.dtype == torch.bfloat16
    assert (k != 0).float().mean() > 0.99 and not torch.equal(k, v)
    q2, _, _ = make_qkv(3, 8, 2, 64, 100, torch.bfloat16, seed=2)
    assert not torch.equal(q, q2)


def test_bench_cascade_levels() -> None:
    bench = _bench()
    batch = tree_batch(STANDARD_WORKLOADS["b"], rng=0)
    qo, kvp, kvi = bench.cascade_levels(batch, device="cpu")
    assert [int(x[-1]) for x in qo] == [128, 128, 128]
    assert [x.shape[0] - 1 for x in kvp] == [1, 8, 128]
    assert [int(x[-1]) for x in kvp] == [2048, 8192, 65536]
    # level by level, each request's KV is the concatenation of its nodes' runs
    ip = batch.kv_indptr.tolist()
    for r in (0, 77, 127):
        parts = []
        for q_ip, k_ip, k_ix in zip(qo, kvp, kvi, strict=True):
            node = int(torch.searchsorted(q_ip, torch.tensor(r, dtype=torch.int32), right=True)) - 1
            parts.append(k_ix[int(k_ip[node]) : int(k_ip[node + 1])])
        assert torch.equal(torch.cat(parts), batch.kv_indices[ip[r] : ip[r + 1]])


def test_bench_loads_sglang_triton_kernel() -> None:
    pytest.importorskip("triton")
    bench = _bench()
    try:
        dec, meta = bench._load_sglang_triton()
    except RuntimeError as e:
        pytest.skip(str(e))
    assert callable(dec.decode_attention_fwd) and hasattr(meta, "get_num_kv_splits_triton")
    assert "sglang.srt.utils" not in sys.modules or hasattr(sys.modules["sglang.srt.utils"], "__file__")


def test_bench_report_without_gpu(tmp_path: Path) -> None:
    bench = _bench()
    cases = bench.all_cases()[:2]
    text = bench.write_reports(tmp_path, cases, {}, {})
    assert "not run" in text
    for f in ("results.json", "results.csv", "results.md", "results.png"):
        assert (tmp_path / f).exists()


def _tile_sweep():
    return load_script(REPO / "bench" / "tile_sweep.py")


@pytest.mark.parametrize("name", ["gsp64", "gsp256", "rollout64"])
def test_serving_window_trees(name: str) -> None:
    """A serving window is ``batch`` requests, each under its group's system prompt, with its own tail of question +
    0..max_generated tokens; the tree's unique tokens equal each present prompt once plus every tail."""
    w = _tile_sweep().serving_window(name)
    tree = w.tree(np.random.default_rng(3))
    assert tree.num_requests == w.batch
    roots = [i for i, p in enumerate(tree.parents) if p == -1]
    assert all(tree.lengths[r] == w.prefix_tokens for r in roots)
    assert 1 <= len(roots) <= w.num_groups
    tails = []
    for leaf in tree.request_nodes:
        parent = tree.parents[leaf]
        assert parent in roots
        tails.append(tree.lengths[leaf])
        assert w.question_tokens <= tree.lengths[leaf] <= w.question_tokens + w.max_generated
    assert tree.unique_tokens() == len(roots) * w.prefix_tokens + sum(tails)
    assert tree.request_lengths() == [w.prefix_tokens + t for t in tails]
    # each group appears at most prompts_per_group times; an ordered window spans consecutive groups only
    counts = np.bincount([tree.parents[leaf] for leaf in tree.request_nodes])
    assert counts[roots].max() <= w.prompts_per_group
    if w.ordered:
        assert len(roots) <= -(-w.batch // w.prompts_per_group) + 1
    # deterministic for a seed, different for another
    again = w.tree(np.random.default_rng(3))
    assert (again.parents, again.lengths, again.request_nodes) == (tree.parents, tree.lengths, tree.request_nodes)
    other = w.tree(np.random.default_rng(4))
    assert other.lengths != tree.lengths


def test_serving_window_sharing_matches_sampling() -> None:
    """gsp at concurrency 64 (64 groups x 16, shuffled) shares far less than at 256: the expected number of distinct
    groups in a window of 64 is 64 * (1 - (1 - 1/64)^64) ~ 40.6 of 64 (sampling without replacement: a bit more)."""
    sweep = _tile_sweep()
    gsp64, gsp256 = sweep.serving_window("gsp64"), sweep.serving_window("gsp256")
    assert (gsp64.num_groups, gsp64.prompts_per_group, gsp64.batch, gsp64.prefix_tokens) == (64, 16, 64, 2048)
    groups = [sum(1 for p in gsp64.tree(seed).parents if p == -1) for seed in range(40)]
    assert 36 <= float(np.mean(groups)) <= 46
    full = [sum(1 for p in gsp256.tree(seed).parents if p == -1) for seed in range(10)]
    assert min(full) >= 60


def test_serving_window_rejects_a_batch_larger_than_the_dataset() -> None:
    with pytest.raises(ValueError, match="batch"):
        ServingWindow(4, 4, 17, 64, 8, 8).tree(0)
    laid = layout_tree(ServingWindow(4, 4, 8, 64, 8, 8).tree(0), page_size=16, rng=0)
    assert laid.kv_indptr.shape[0] == 9


def test_tile_sweep_lays_out_the_serving_windows() -> None:
    """``bench/tile_sweep.py --cases gsp64 ...``: the case is the window's tree in a pool of its unique tokens."""
    sweep = _tile_sweep()
    for name in sweep.SERVING_CASES:
        w = sweep.serving_window(name)
        assert name in sweep.MORE_CASES
        indptr, indices, slots = sweep.case_batch(name, np.random.default_rng(0))
        assert indptr.shape[0] == w.batch + 1
        assert int(indptr[-1]) == indices.shape[0]
        assert np.unique(indices.numpy()).size == slots  # every slot of the pool is read by some request
