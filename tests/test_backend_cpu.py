"""PATAttnBackend on CPU tensors: real SGLang pools, radix cache, ForwardBatch and RadixAttention layers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
from sglang_harness import RadixHarness, RecordingDelegate, decode_batch, fake_model_runner, shared_prompts

import pat_sglang
import pat_sglang.backend as backend_mod
from pat_sglang.backend import PATAttnBackend, model_problems
from pat_sglang.config import HeadConfig
from pat_sglang.reference import naive_decode
from patches.chain_table import ChainTable

HQ, HKV, D, LAYERS = 8, 2, 64, 2
PLAN_TENSORS = ("items", "kv_slots", "item_req", "item_dst", "merge_indptr", "merge_partials")


def make_layers(**kw: Any) -> list[RadixAttention]:
    return [RadixAttention(HQ, D, D**-0.5, HKV, layer_id=i, **kw) for i in range(LAYERS)]


def fake_runner(h: RadixHarness, dtype: torch.dtype = torch.float32, layers: list | None = None, **over: Any):
    return fake_model_runner(h, HQ, HKV, D, LAYERS, dtype, layers if layers is not None else make_layers(), **over)


def build(page_size: int = 1, seed: int = 0) -> RadixHarness:
    h = RadixHarness(page_size=page_size)
    for prompt in shared_prompts(np.random.default_rng(seed)):
        h.add_request(prompt)
    h.decode(steps=4)
    h.decode(steps=3, only=[1, 2])
    return h


def assert_same_plan(a: pat_sglang.PackPlan, b: pat_sglang.PackPlan) -> None:
    assert a.num_partials == b.num_partials and a.num_requests == b.num_requests
    for name in PLAN_TENSORS:
        assert torch.equal(getattr(a, name).cpu(), getattr(b, name).cpu()), name


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("published", [True, False])
def test_metadata_plan_equals_standalone_plan(page_size: int, published: bool) -> None:
    h = build(page_size)
    table = ChainTable()
    be = PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=table)
    fb = decode_batch(h, table)
    if not published:
        table.clear()  # e.g. a cache PAT cannot read: the forest comes from the flat rows
    be.init_forward_metadata(fb)
    md = be.forward_metadata
    assert md is not None and md.forest_source == ("radix" if published else "flat")
    indptr, indices = h.rows()
    want = pat_sglang.plan(torch.from_numpy(indptr), torch.from_numpy(indices), HeadConfig(HQ, HKV, D, torch.float32))
    assert want.stats.kv_bytes_planned < want.stats.kv_bytes_per_request  # the batch really shares KV
    assert_same_plan(md.plan, want)
    assert be.stats.steps == 1 and be.stats.flat_fallbacks == (0 if published else 1)
    assert be.delegate.calls == []


@pytest.mark.parametrize("page_size", [1, 16])
def test_forward_decode_equals_naive(page_size: int) -> None:
    h = build(page_size, seed=1)
    table = ChainTable()
    runner = fake_runner(h)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=table)
    fb = decode_batch(h, table)
    be.init_forward_metadata(fb)
    bs = fb.batch_size
    gen = torch.Generator().manual_seed(2)
    indptr, indices = (torch.from_numpy(a) for a in h.rows())
    for layer in runner.model:
        q = torch.randn(bs, HQ * D, generator=gen)
        k = torch.randn(bs, HKV, D, generator=gen)
        v = torch.randn(bs, HKV, D, generator=gen)
        out = torch.full((bs, HQ * D), float("nan"))  # poisoned: every element must be written
        out.copy_(be.forward_decode(q, k, v, layer, fb))
        pool = runner.token_to_kv_pool
        k_buf, v_buf = pool.get_key_buffer(layer.layer_id), pool.get_value_buffer(layer.layer_id)
        assert torch.equal(k_buf[fb.out_cache_loc], k) and torch.equal(v_buf[fb.out_cache_loc], v)
        want = naive_decode(q.view(bs, HQ, D), k_buf, v_buf, indptr, indices, layer.scaling)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.view(bs, HQ, D).double(), want, rtol=1e-5, atol=1e-5)
    assert be.stats.steps == 1  # one plan per step, shared by the layers


def test_non_decode_batches_go_to_the_delegate() -> None:
    h = build()
    table = ChainTable()
    runner = fake_runner(h)
    delegate = RecordingDelegate()
    be = PATAttnBackend(runner, delegate=delegate, chain_table=table)
    fb = decode_batch(h, table, mode=ForwardMode.EXTEND)
    be.init_forward_metadata(fb)
    assert be.forward_metadata is None and delegate.calls == ["init_forward_metadata"]
    layer = runner.model[0]
    assert be.forward_extend(None, None, None, layer, fb) == "delegate-extend"
    assert be.forward_decode(None, None, None, layer, fb) == "delegate-decode"
    assert be.stats.steps == 0


@pytest.mark.parametrize(
    ("layers", "over", "match"),
    [
        (make_layers(logit_cap=30.0), {}, "logit cap"),
        (make_layers(sliding_window_size=128), {}, "sliding-window"),
        (make_layers(is_cross_attention=True), {}, "cross attention"),
        (None, {"use_mla_backend": True}, "MLA"),
        (None, {"sliding_window_size": 4096}, "sliding-window"),
        (None, {"kv_cache_dtype": torch.float8_e4m3fn}, "KV cache dtype"),
        (None, {"server_args": SimpleNamespace(speculative_algorithm="EAGLE", dcp_size=1)}, "speculative"),
    ],
)
def test_unsupported_models_refused_at_startup(layers: list | None, over: dict, match: str) -> None:
    h = RadixHarness()
    with pytest.raises(ValueError, match=match):
        PATAttnBackend(fake_runner(h, layers=layers, **over), delegate=RecordingDelegate(), chain_table=ChainTable())


def test_kernel_constraints_checked_for_gpu() -> None:
    h = RadixHarness()
    _, problems = model_problems(fake_runner(h), kernels=True)
    assert any("dtype" in p for p in problems)  # float32: the CUDA kernels serve bf16/fp16 only
    heads, problems = model_problems(fake_runner(h, dtype=torch.bfloat16), kernels=True)
    assert problems == [] and heads == HeadConfig(HQ, HKV, D, torch.bfloat16)


def test_cuda_graphs_refused_behind_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    h = RadixHarness()
    be = PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=ChainTable())
    monkeypatch.setattr(backend_mod, "CUDA_GRAPHS_ENABLED", False)
    with pytest.raises(RuntimeError, match="--disable-cuda-graph"):
        be.init_cuda_graph_state(8, 8)
    assert be.get_cuda_graph_seq_len_fill_value() == 1


def graph_view(fb: ForwardBatch, padded_bs: int, fill: int) -> SimpleNamespace:
    """What DecodeCudaGraphRunner passes at replay: padded buffers (row 0, seq_len ``fill``), no rids."""
    pad = padded_bs - fb.batch_size
    return SimpleNamespace(
        forward_mode=ForwardMode.DECODE,
        batch_size=padded_bs,
        req_pool_indices=torch.cat([fb.req_pool_indices, torch.zeros(pad, dtype=torch.int64)]),
        seq_lens=torch.cat([fb.seq_lens, torch.full((pad,), fill)]),
        seq_lens_cpu=torch.cat([fb.seq_lens_cpu, torch.full((pad,), fill)]),
        out_cache_loc=torch.cat([fb.out_cache_loc, torch.zeros(pad, dtype=torch.int64)]),
        num_padding=pad,
    )


@pytest.mark.parametrize("tiny", [False, True])
def test_cuda_graph_path_on_cpu(monkeypatch: pytest.MonkeyPatch, tiny: bool) -> None:
    """Out-of-graph planning into StaticPlanBuffers (its CPU fallback runs the reference), with padding; a
    plan too big for the buffers is re-planned until it fits, never served wrong."""
    kernels = pytest.importorskip("pat_sglang.kernels")
    if not hasattr(kernels, "StaticPlanBuffers"):
        pytest.skip("pat_sglang.kernels has no StaticPlanBuffers yet")
    h = build(seed=4)
    table = ChainTable()
    runner = fake_runner(h, dtype=torch.bfloat16)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=table)
    fb = decode_batch(h, table)
    padded = fb.batch_size + 3
    if tiny:  # room for the last-resort plan only: one item per request, no partials
        tiny_cap = backend_mod.GraphCapacity(padded, padded, padded * h.max_context, 0)
        monkeypatch.setattr(backend_mod, "graph_capacity", lambda *a: tiny_cap)
    be.init_cuda_graph_state(padded, padded)
    view = graph_view(fb, padded, be.get_cuda_graph_seq_len_fill_value())
    be.init_forward_metadata_out_graph(view)
    be.init_forward_metadata_in_graph(view)
    assert be.forward_metadata.static and be.stats.graph_replans == int(tiny)
    layer = runner.model[1]
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(padded, HQ * D, generator=gen).bfloat16()
    k = torch.randn(padded, HKV, D, generator=gen).bfloat16()
    v = torch.randn(padded, HKV, D, generator=gen).bfloat16()
    out = be.forward_decode(q, k, v, layer, view)
    bs = fb.batch_size
    pool = runner.token_to_kv_pool
    indptr, indices = (torch.from_numpy(a) for a in h.rows())
    want = naive_decode(
        q[:bs].view(bs, HQ, D), pool.get_key_buffer(1), pool.get_value_buffer(1), indptr, indices, layer.scaling
    )
    got = out.view(padded, HQ, D)[:bs].double()
    assert torch.isfinite(got).all()
    assert ((got - want).norm() / want.norm()).item() < 2e-2
