"""Tensor parallelism on the CPU: one PATAttnBackend per simulated TP rank, in one process.

Each rank is what SGLang gives a TP rank: its own scheduler state (radix cache, ReqToTokenPool, KV
allocator; built from the same requests, so identical in content), its own KV pools holding only its
heads, real ``RadixAttention`` layers with its ``tp_q_head_num`` / ``tp_k_head_num``, and the decode
batch published through the default routing (the chain table bound to the rank's ReqToTokenPool).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sglang_harness import (
    RadixHarness,
    RecordingDelegate,
    assert_reads_within_rows,
    decode_batch,
    fake_model_runner,
    shared_prompts,
)

from pat_sglang.backend import PATAttnBackend, runner_device
from pat_sglang.config import HeadConfig
from pat_sglang.planner import PackPlan
from pat_sglang.reference import naive_decode
from pat_sglang.sglang_patches.chain_table import chain_signature, chain_table_for

D, LAYERS = 64, 2
PLAN_TENSORS = ("items", "slot_table", "item_req", "item_dst", "merge_indptr", "merge_partials")
# (q heads, kv heads, tp): heads split evenly; and tp > kv heads, where SGLang replicates each KV head
SHAPES = [(32, 8, 2), (32, 2, 4), (28, 4, 2), (96, 8, 2)]  # Qwen2.5-7B: GQA 7 per rank; GLM-4.5-Air: 12


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


def scheduler(page_size: int, seed: int = 3) -> RadixHarness:
    """One rank's scheduler state; every rank's is built from the same requests, as under TP."""
    h = RadixHarness(page_size=page_size)
    for prompt in shared_prompts(np.random.default_rng(seed)):
        h.add_request(prompt)
    h.decode(steps=2)
    h.decode(steps=5, only=[0, 4])
    return h


def q_heads(rank: int, hq: int, tp: int) -> slice:
    n = hq // tp
    return slice(rank * n, (rank + 1) * n)


def kv_heads(rank: int, hkv: int, tp: int) -> slice:
    """The KV heads rank ``rank`` holds: an even share, or one replicated head where tp > hkv (SGLang's
    ``tp_rank // (tp_size // num_kv_heads)``)."""
    if hkv >= tp:
        n = hkv // tp
        return slice(rank * n, (rank + 1) * n)
    first = rank // (tp // hkv)
    return slice(first, first + 1)


def rank_runner(h: RadixHarness, full: SimpleNamespace, rank: int, hq: int, hkv: int, tp: int) -> SimpleNamespace:
    """Rank ``rank``'s model runner: per-rank head counts, KV pools holding the rank's slice of ``full``'s."""
    kv = kv_heads(rank, hkv, tp)
    runner = fake_model_runner(h, hq // tp, kv.stop - kv.start, D, LAYERS, gpu_id=rank)
    for i in range(LAYERS):
        for dst, src in ((runner.token_to_kv_pool.k_buffer, full.token_to_kv_pool.k_buffer),
                         (runner.token_to_kv_pool.v_buffer, full.token_to_kv_pool.v_buffer)):
            dst[i].copy_(src[i][:, kv])
    return runner


def same_structure(a: PackPlan, b: PackPlan) -> None:
    assert (a.num_requests, a.num_partials, a.tile_ms, a.max_slot) == (
        b.num_requests, b.num_partials, b.tile_ms, b.max_slot
    )
    for name in PLAN_TENSORS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def decode_layer(be: PATAttnBackend, runner: SimpleNamespace, layer_id: int, fb, q, k, v) -> torch.Tensor:
    """``forward_decode`` into a NaN-poisoned output: every element must be written."""
    bs, nq = q.shape[0], be.heads.num_q_heads
    out = torch.full((bs, nq * D), float("nan"))
    out.copy_(be.forward_decode(q.reshape(bs, -1), k, v, runner.model[layer_id], fb))
    assert torch.isfinite(out).all()
    return out.view(bs, nq, D)


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize(("hq", "hkv", "tp"), SHAPES)
def test_ranks_plan_local_heads_and_concatenate_to_tp1(page_size: int, hq: int, hkv: int, tp: int) -> None:
    hs = [scheduler(page_size) for _ in range(tp + 1)]  # [tp=1 server, rank 0, ..., rank tp-1]
    for h in hs[1:]:
        assert torch.equal(h.req_to_token, hs[0].req_to_token) and h.seq_lens == hs[0].seq_lens
    full_runner = fake_model_runner(hs[0], hq, hkv, D, LAYERS, seed=5)
    runners = [rank_runner(hs[1 + r], full_runner, r, hq, hkv, tp) for r in range(tp)]
    full = PATAttnBackend(full_runner, delegate=RecordingDelegate(), min_saved_fraction=0.0)
    ranks = [PATAttnBackend(runner, delegate=RecordingDelegate(), min_saved_fraction=0.0) for runner in runners]

    # One chain table per ReqToTokenPool, bound by the backend, filled by the default publishing route.
    tables = [be.chain_table for be in [full, *ranks]]
    assert len({id(t) for t in tables}) == tp + 1
    for h, t in zip(hs, tables, strict=True):
        assert chain_table_for(h.req_to_token_pool) is t and t.enabled
    fbs = [decode_batch(h) for h in hs]
    for h, t in zip(hs, tables, strict=True):  # each table holds its own tree's chains, none clobbered
        assert set(t.entries) == {r.req_pool_idx for r in h.reqs}
        for r in h.reqs:
            assert t.entries[r.req_pool_idx].signature == chain_signature(r.last_node, h.cache.root_node)

    for be, fb in zip([full, *ranks], fbs, strict=True):
        be.init_forward_metadata(fb)
        md = be.forward_metadata
        assert md is not None and not md.static and be.delegate.calls == []
        # planned from the published paths (no rows read back, nobody without sharing), over the rank's req_to_token
        assert be.stats.row_reads == 0 and be.planner.counters.unshared == 0 and be.planner.counters.built == 1
        assert md.plan.slot_table.data_ptr() == be.req_to_token_pool.req_to_token.data_ptr()
    # (a) each rank plans for its local heads
    assert full.forward_metadata.plan.heads == HeadConfig(hq, hkv, D, torch.float32)
    for r, be in enumerate(ranks):
        kv = kv_heads(r, hkv, tp)
        assert be.forward_metadata.plan.heads == HeadConfig(hq // tp, kv.stop - kv.start, D, torch.float32)
        assert be.device == torch.device("cpu")
    # (b) same tree, same items and partials on every rank
    for be in ranks[1:]:
        same_structure(be.forward_metadata.plan, ranks[0].forward_metadata.plan)
    assert full.forward_metadata.plan.stats.kv_bytes_planned < full.forward_metadata.plan.stats.kv_bytes_per_request

    # (c) the ranks' outputs, concatenated along heads, are the tp=1 output and naive decode
    bs = fbs[0].batch_size
    indptr, indices = (torch.from_numpy(a) for a in hs[0].rows())
    gen = torch.Generator().manual_seed(11)
    for layer_id in range(LAYERS):
        q = torch.randn(bs, hq, D, generator=gen)
        k = torch.randn(bs, hkv, D, generator=gen)
        v = torch.randn(bs, hkv, D, generator=gen)
        want_tp1 = decode_layer(full, full_runner, layer_id, fbs[0], q, k, v)
        outs = []
        for r, (be, runner, fb) in enumerate(zip(ranks, runners, fbs[1:], strict=True)):
            qs, kvs = q_heads(r, hq, tp), kv_heads(r, hkv, tp)
            k_r, v_r = k[:, kvs].contiguous(), v[:, kvs].contiguous()
            outs.append(decode_layer(be, runner, layer_id, fb, q[:, qs], k_r, v_r))
            pool = runner.token_to_kv_pool  # the rank stored its own heads of the new token
            assert torch.equal(pool.get_key_buffer(layer_id)[fb.out_cache_loc], k[:, kvs])
            assert torch.equal(pool.get_value_buffer(layer_id)[fb.out_cache_loc], v[:, kvs])
        got = torch.cat(outs, dim=1)
        assert rel_err(got, want_tp1) < 1e-5
        pool = full_runner.token_to_kv_pool
        k_buf, v_buf = pool.get_key_buffer(layer_id), pool.get_value_buffer(layer_id)
        want = naive_decode(q, k_buf, v_buf, indptr, indices, full_runner.model[layer_id].scaling)
        assert rel_err(got, want) < 1e-5 and rel_err(want_tp1, want) < 1e-5
    for be, h in zip([full, *ranks], hs, strict=True):
        assert be.stats.steps == 1 and be.stats.row_reads == 0 and be.stats.delegated == 0
        rows = np.array([r.req_pool_idx for r in h.reqs], np.int64)
        assert_reads_within_rows(be.forward_metadata.plan, rows, np.array(h.seq_lens), h.req_to_token.shape[1])


def test_ranks_share_no_plan_state() -> None:
    """Rank 1 planning and running a different batch leaves rank 0's plan, table and output untouched."""
    hq, hkv, tp = SHAPES[0]
    hs = [scheduler(1, seed=7) for _ in range(tp + 1)]
    full_runner = fake_model_runner(hs[0], hq, hkv, D, LAYERS, seed=9)
    runners = [rank_runner(hs[1 + r], full_runner, r, hq, hkv, tp) for r in range(tp)]
    be0, be1 = (PATAttnBackend(runner, delegate=RecordingDelegate(), min_saved_fraction=0.0) for runner in runners)
    fb0 = decode_batch(hs[1])
    be0.init_forward_metadata(fb0)
    md0 = be0.forward_metadata
    plan0 = {name: getattr(md0.plan, name).clone() for name in PLAN_TENSORS}
    entries0 = dict(be0.chain_table.entries)
    bs = fb0.batch_size
    gen = torch.Generator().manual_seed(13)
    q = torch.randn(bs, hq // tp, D, generator=gen)
    k = torch.randn(bs, hkv // tp, D, generator=gen)
    v = torch.randn(bs, hkv // tp, D, generator=gen)
    first = decode_layer(be0, runners[0], 1, fb0, q, k, v)

    # Rank 1: a different batch (a subset of its requests, one step further), planned and run.
    only = [1, 2, 5, 9]
    fb1 = decode_batch(hs[2], only=only)
    be1.init_forward_metadata(fb1)
    plan1 = be1.forward_metadata.plan
    assert plan1.num_requests == len(only) != md0.plan.num_requests
    q1 = torch.randn(len(only), hq // tp, D, generator=gen)
    k1 = torch.randn(len(only), hkv // tp, D, generator=gen)
    v1 = torch.randn(len(only), hkv // tp, D, generator=gen)
    out1 = decode_layer(be1, runners[1], 1, fb1, q1, k1, v1)
    pool1 = runners[1].token_to_kv_pool
    ptr1 = np.concatenate([[0], np.cumsum([hs[2].seq_lens[i] for i in only])])
    idx1 = np.concatenate([hs[2].req_to_token[hs[2].reqs[i].req_pool_idx, : hs[2].seq_lens[i]].numpy() for i in only])
    want1 = naive_decode(
        q1, pool1.get_key_buffer(1), pool1.get_value_buffer(1), torch.from_numpy(ptr1), torch.from_numpy(idx1),
        runners[1].model[1].scaling,
    )
    assert rel_err(out1, want1) < 1e-5

    # Rank 0 again, same step: same metadata, same plan, same table, bit-identical output.
    assert be0.forward_metadata is md0 and be0.chain_table is not be1.chain_table
    for name, t in plan0.items():
        assert torch.equal(getattr(be0.forward_metadata.plan, name), t), name
    assert be0.chain_table.entries == entries0
    again = decode_layer(be0, runners[0], 1, fb0, q, k, v)
    assert torch.equal(again, first)
    assert be0.stats.steps == 1 and be1.stats.steps == 1


@pytest.mark.parametrize(
    ("device", "gpu_id", "want"),
    [("cuda", 3, "cuda:3"), ("cuda", None, "cuda"), ("cuda:1", 3, "cuda:1"), ("cpu", 2, "cpu")],
)
def test_runner_device_uses_the_ranks_gpu(device: str, gpu_id: int | None, want: str) -> None:
    """``model_runner.device`` is a bare type; the rank's GPU index is ``gpu_id`` (never an implied cuda:0)."""
    runner = SimpleNamespace(device=device, gpu_id=gpu_id)
    assert runner_device(runner) == torch.device(want)
