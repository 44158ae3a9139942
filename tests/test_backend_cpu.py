"""PATAttnBackend on CPU tensors: real SGLang pools, radix cache, ForwardBatch and RadixAttention layers."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang_harness import (
    RadixHarness,
    RecordingDelegate,
    assert_plan_exact,
    assert_reads_within_rows,
    decode_batch,
    fake_model_runner,
    graph_view,
    naive_rows,
    plan_of_buffers,
    plan_work,
    random_pools,
    shared_prompts,
)

import pat_sglang
import pat_sglang.backend as backend_mod
from pat_sglang.backend import PATAttnBackend, model_problems
from pat_sglang.config import HeadConfig
from pat_sglang.decode_step import PADDING_ROW
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import StaticPlanBuffers
from pat_sglang.planner import ITEM_REQ_BEGIN, ITEM_REQ_END, plan_forest
from pat_sglang.reference import naive_decode
from pat_sglang.sglang_patches.chain_table import ChainTable

HQ, HKV, D, LAYERS = 8, 2, 64, 2


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


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


def batch_rows(h: RadixHarness) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.req_pool_idx for r in h.reqs], np.int64), np.array(h.seq_lens, np.int64)


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("published", [True, False])
def test_metadata_plan_equals_standalone_plan(page_size: int, published: bool) -> None:
    """The backend's plan addresses KV as ranges of SGLang's own req_to_token (no copy): resolved to slots, it is
    the work of a standalone plan of the flat rows (radix paths give the same sharing), or of the no-sharing plan
    when nothing was published (rows read back, counted); and it is exact."""
    h = build(page_size)
    table = ChainTable()
    be = PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    assert table._row_gen.shape[0] >= h.req_to_token.shape[0]  # bound with room for every row of its pool
    fb = decode_batch(h, table)
    if not published:
        table.clear()  # no published batch: the backend reads req_pool_indices back and plans without sharing
    be.init_forward_metadata(fb)
    md = be.forward_metadata
    assert md is not None and not md.static
    plan = md.plan
    r2t = h.req_to_token
    assert plan.slot_table.data_ptr() == r2t.data_ptr() and plan.slot_table.numel() == r2t.numel()
    assert plan.max_slot is None and plan.fallback == ""
    heads = HeadConfig(HQ, HKV, D, torch.float32)
    indptr, indices = h.rows()
    flat = torch.from_numpy(indices.astype(np.int32))
    if published:
        want = pat_sglang.plan(torch.from_numpy(indptr), flat, heads)
        assert want.stats.kv_bytes_planned < want.stats.kv_bytes_per_request  # the batch really shares KV
    else:
        private = PrefixForest.private(np.diff(indptr), indptr[:-1])
        want = plan_forest(private, heads, slot_table=flat)
        items = plan.items.numpy()
        assert ((items[:, ITEM_REQ_END] - items[:, ITEM_REQ_BEGIN]) == 1).all()  # nothing shared
        assert plan.stats.kv_bytes_planned == plan.stats.kv_bytes_per_request
    rows, seq = batch_rows(h)
    assert plan_work(plan, r2t.view(-1).numpy(), seq, rows) == plan_work(want, indices)
    assert plan.stats.kv_bytes_planned == want.stats.kv_bytes_planned
    assert plan.stats.kv_bytes_per_request == want.stats.kv_bytes_per_request
    assert_reads_within_rows(plan, rows, seq, r2t.shape[1])
    assert_plan_exact(plan, r2t, rows, seq, seed=page_size, num_slots=h.num_slots)
    counters = be.planner.counters
    assert be.stats.steps == 1 and be.stats.row_reads == (0 if published else 1)
    assert (counters.built, counters.reused, counters.coarse) == (1, 0, 0)
    assert counters.unshared == (0 if published else fb.batch_size)
    assert be.delegate.calls == []
    # the step's publishing is counted with it (none for a batch that is not the published one), and taken once
    assert (be.stats.publish_s_total > 0.0) == published
    assert be.stats.host_s_max == pytest.approx(be.stats.plan_s_max + be.stats.publish_s_max)
    if published:
        assert table.publish_s == 0.0


@pytest.mark.parametrize("page_size", [1, 16])
def test_forward_decode_equals_naive(page_size: int) -> None:
    h = build(page_size, seed=1)
    table = ChainTable()
    runner = fake_runner(h)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
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
    be = PATAttnBackend(runner, delegate=delegate, chain_table=table, min_saved_fraction=0.0)
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
        (None, {"kv_cache_dtype": torch.float8_e4m3fnuz}, "KV cache dtype"),
        (None, {"kv_cache_dtype": torch.int8}, "KV cache dtype"),
        (None, {"server_args": SimpleNamespace(speculative_algorithm="EAGLE", dcp_size=1)}, "speculative"),
    ],
)
def test_unsupported_models_refused_by_the_backend(layers: list | None, over: dict, match: str) -> None:
    """``PATAttnBackend`` itself refuses what it cannot serve (``UnsupportedModel``, naming why); the plugin's factory
    turns that into the delegate serving the whole model (tested below)."""
    h = RadixHarness()
    with pytest.raises(backend_mod.UnsupportedModel, match=match):
        PATAttnBackend(fake_runner(h, layers=layers, **over), delegate=RecordingDelegate(), chain_table=ChainTable())


@pytest.mark.parametrize(
    ("hq", "hkv", "head_dim", "match"),
    [(64, 2, D, "unsupported GQA ratio 32"), (HQ, HKV, 96, "unsupported head_dim 96")],
)
def test_shapes_the_kernels_lack_are_problems_on_the_gpu(hq: int, hkv: int, head_dim: int, match: str) -> None:
    """Where the CUDA kernels will run, a head shape they lack (a GQA ratio above ``config.MAX_GQA_GROUP``, a head
    dim other than 64/128/256) is a reason to hand the model to the delegate; GQA 16 is not. (On the CPU the float64
    executor serves any shape, so the backend itself takes them there.)"""
    h = RadixHarness()

    def problems(hq: int, hkv: int, head_dim: int) -> list[str]:
        layers = [RadixAttention(hq, head_dim, head_dim**-0.5, hkv, layer_id=i) for i in range(LAYERS)]
        runner = fake_model_runner(h, hq, hkv, head_dim, LAYERS, torch.bfloat16, layers)
        return [str(p) for p in backend_mod.model_problems(runner, kernels=True)[1]]

    assert any(re.search(match, what) for what in problems(hq, hkv, head_dim))
    assert problems(64, 4, D) == []  # GQA 16 (Qwen3-235B-A22B): served


def test_unsupported_model_served_by_the_delegate_through_the_plugin(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``--attention-backend pat`` on a model PAT cannot serve starts on the delegate (the backend SGLang would have
    picked, here named by PAT_SGLANG_DELEGATE), with one warning naming the problems by layer; a model PAT serves
    gets PAT; a bad PAT setting still stops the start."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    from pat_sglang import plugin

    built: list = []
    monkeypatch.setitem(ATTENTION_BACKENDS, "triton", lambda runner: built.append(runner) or RecordingDelegate())
    monkeypatch.setenv(backend_mod.DELEGATE_ENV, "triton")
    h = RadixHarness()
    runner = fake_runner(h, layers=make_layers(logit_cap=30.0))
    with caplog.at_level("INFO", logger="pat_sglang"):
        be = plugin.create_pat_backend(runner)
    assert isinstance(be, RecordingDelegate) and built == [runner]
    said = [r.getMessage() for r in caplog.records if r.name.startswith("pat_sglang")]
    warned = [r.getMessage() for r in caplog.records if r.name == "pat_sglang.plugin"]
    assert len(warned) == 1 and "cannot serve this model" in warned[0] and "'triton'" in warned[0]
    assert backend_mod.DELEGATE_ENV in warned[0]  # why that delegate
    assert f"attention logit cap (layers 0-{len(runner.model) - 1})" in warned[0]
    assert not any("declined decode batches" in m for m in said)  # the whole model is on the delegate: said once
    caplog.clear()
    with caplog.at_level("INFO", logger="pat_sglang"):
        assert isinstance(plugin.create_pat_backend(fake_runner(RadixHarness())), PATAttnBackend)
    assert any("declined decode batches go to the 'triton'" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv(backend_mod.DELEGATE_ENV, "no_such_backend")
    with pytest.raises(ValueError, match=backend_mod.DELEGATE_ENV):
        plugin.create_pat_backend(fake_runner(RadixHarness()))


def test_unsupported_model_problems_said_once_per_kind() -> None:
    problem = backend_mod.Problem
    err = backend_mod.UnsupportedModel(
        [problem("MLA attention"), problem("logit cap", 0), problem("logit cap", 1), problem("logit cap", 2),
         problem("window", 1), problem("window", 5), problem("k_scale", 3)]
    )
    assert str(err) == ("the pat attention backend cannot serve this model: MLA attention; logit cap (layers 0-2); "
                        "window (layers 1, 5); k_scale (layer 3)")
    assert isinstance(err, ValueError) and len(err.problems) == 7


def test_kernel_constraints_checked_for_gpu() -> None:
    h = RadixHarness()
    _, problems = model_problems(fake_runner(h), kernels=True)
    assert any("dtype" in p.text for p in problems)  # float32: the CUDA kernels serve bf16/fp16 only
    heads, problems = model_problems(fake_runner(h, dtype=torch.bfloat16), kernels=True)
    assert problems == [] and heads == HeadConfig(HQ, HKV, D, torch.bfloat16)


FP8_KV = [torch.float8_e4m3fn, torch.float8_e5m2]


def scaled_layers(k_scale: float, v_scale: float) -> list[RadixAttention]:
    """Layers carrying per-tensor KV scales as SGLang's ``BaseKVCacheMethod`` leaves them after loading."""
    layers = make_layers()
    for layer in layers:
        layer.k_scale = torch.nn.Parameter(torch.tensor(k_scale), requires_grad=False)
        layer.v_scale = torch.nn.Parameter(torch.tensor(v_scale), requires_grad=False)
        layer.k_scale_float, layer.v_scale_float = k_scale, v_scale
    return layers


@pytest.mark.parametrize("kv_dtype", FP8_KV)
def test_fp8_kv_accepted_for_the_kernels(kv_dtype: torch.dtype) -> None:
    """--kv-cache-dtype fp8_e4m3 / fp8_e5m2 with a bf16 model: served, the KV dtype in the heads (and so in the
    planner's bytes: half of bf16's per token)."""
    h = RadixHarness()
    runner = fake_runner(h, dtype=torch.bfloat16, kv_dtype=kv_dtype, layers=scaled_layers(0.5, 2.0))
    heads, problems = model_problems(runner, kernels=True)
    assert problems == [] and heads == HeadConfig(HQ, HKV, D, torch.bfloat16, kv_dtype)
    assert heads.kv_token_bytes * 2 == HeadConfig(HQ, HKV, D, torch.bfloat16).kv_token_bytes
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=ChainTable(), min_saved_fraction=0.0)
    assert be.planner is not None and be.heads.kv_fp8


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda layer: setattr(layer, "k_scale", torch.nn.Parameter(torch.ones(HKV), requires_grad=False)),
         "per-head or per-channel k_scale"),
        (lambda layer: setattr(layer, "v_scale", torch.nn.Parameter(torch.ones(HKV, D), requires_grad=False)),
         "per-head or per-channel v_scale"),
        (lambda layer: setattr(layer, "k_scale_float", None), "not per-tensor floats"),
    ],
)
def test_fp8_kv_scales_pat_cannot_apply_are_refused(edit: Any, match: str) -> None:
    h = RadixHarness()
    layers = scaled_layers(0.5, 0.5)
    edit(layers[1])
    runner = fake_runner(h, dtype=torch.bfloat16, kv_dtype=torch.float8_e4m3fn, layers=layers)
    with pytest.raises(ValueError, match=f"cannot serve this model.*{match}.*layer 1"):
        PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=ChainTable(), min_saved_fraction=0.0)


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("kv_dtype", FP8_KV)
@pytest.mark.parametrize("scales", [None, (0.5, 3.0)])
def test_fp8_forward_decode_equals_naive_over_dequantised_kv(
    page_size: int, kv_dtype: torch.dtype, scales: tuple[float, float] | None
) -> None:
    """The new token is stored as SGLang's other backends store it (k / k_scale in FP8) and attention reads the
    pool dequantised with the layer's scales (1.0 without scales): equal to float64 attention over stored * scale."""
    h = build(page_size, seed=3)
    table = ChainTable()
    layers = make_layers() if scales is None else scaled_layers(*scales)
    runner = fake_runner(h, kv_dtype=kv_dtype, layers=layers)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    fb = decode_batch(h, table)
    be.init_forward_metadata(fb)
    bs = fb.batch_size
    k_scale, v_scale = scales or (1.0, 1.0)
    gen = torch.Generator().manual_seed(4)
    indptr, indices = (torch.from_numpy(a) for a in h.rows())
    for layer in runner.model:
        q = torch.randn(bs, HQ * D, generator=gen)
        k = torch.randn(bs, HKV, D, generator=gen)
        v = torch.randn(bs, HKV, D, generator=gen)
        k_stored, v_stored = (k / k_scale).to(kv_dtype), (v / v_scale).to(kv_dtype)  # before set_kv_buffer's div_
        out = be.forward_decode(q, k, v, layer, fb)
        pool = runner.token_to_kv_pool
        k_buf, v_buf = pool.get_key_buffer(layer.layer_id), pool.get_value_buffer(layer.layer_id)
        assert k_buf.dtype == kv_dtype and pool.k_buffer[layer.layer_id].dtype == torch.uint8
        loc = fb.out_cache_loc
        assert torch.equal(k_buf.view(torch.uint8)[loc], k_stored.view(torch.uint8))
        assert torch.equal(v_buf.view(torch.uint8)[loc], v_stored.view(torch.uint8))
        want = naive_decode(q.view(bs, HQ, D), k_buf, v_buf, indptr, indices, layer.scaling, torch.float64,
                            k_scale, v_scale)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.view(bs, HQ, D).double(), want, rtol=1e-5, atol=1e-5)


def test_cuda_graphs_refused_behind_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    h = RadixHarness()
    be = PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=ChainTable(), min_saved_fraction=0.0)
    monkeypatch.setattr(backend_mod, "CUDA_GRAPHS_ENABLED", False)
    with pytest.raises(RuntimeError, match="--disable-cuda-graph"):
        be.init_cuda_graph_state(8, 8)
    assert be.get_cuda_graph_seq_len_fill_value() == 1


@pytest.mark.parametrize("tiny", [False, True])
def test_cuda_graph_path_on_cpu(monkeypatch: pytest.MonkeyPatch, tiny: bool) -> None:
    """Out-of-graph planning into StaticPlanBuffers (on the CPU ``run`` executes the loaded plan with the
    reference), with padding, for two padded sizes sharing one set of buffers: the plan fits the buffers' limits
    (over them, it is coarsened: ``plan.fallback``, counted), the device buffers hold exactly the loaded plan, and
    the graph path gives naive attention and the eager path's output."""
    h = build(seed=4)
    table = ChainTable()
    runner = fake_runner(h, dtype=torch.bfloat16)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    fb = decode_batch(h, table)
    bs = fb.batch_size
    max_bs = bs + 3
    if tiny:  # room for the no-sharing plan only: one item per request, no partials
        tiny_cap = backend_mod.GraphCapacity(max_bs, max_bs, 0)
        monkeypatch.setattr(backend_mod, "graph_capacity", lambda *a: tiny_cap)
    be.init_cuda_graph_state(max_bs, max_bs)
    buffers = be.graph_buffers
    assert isinstance(buffers, StaticPlanBuffers)
    limits = buffers.limits
    assert limits.max_items >= max_bs and limits.max_entries >= max_bs
    layer = runner.model[1]
    pool = runner.token_to_kv_pool
    fill = be.get_cuda_graph_seq_len_fill_value()
    r2t = h.req_to_token
    gen = torch.Generator().manual_seed(5)
    for step, padded in enumerate((max_bs, bs + 1)):  # SGLang pads to the nearest captured batch size
        view = graph_view(fb, padded, fill)
        be.init_forward_metadata_out_graph(view)
        be.init_forward_metadata_in_graph(view)
        md = be.forward_metadata
        plan = md.plan
        assert md.static and buffers.plan is plan and plan.num_requests == padded
        assert plan.num_items <= buffers.limits_for(padded).max_items <= limits.max_items  # its batch's grid
        assert plan.num_items <= limits.max_items and plan.num_partials <= limits.max_partials
        assert plan.item_req.shape[0] <= limits.max_entries
        assert plan.fallback == ("no sharing" if tiny else "")
        assert be.planner.counters.coarse == (step + 1 if tiny else 0)
        if not tiny:
            assert plan.stats.kv_bytes_planned < plan.stats.kv_bytes_per_request  # shared, within the limits
        assert plan.slot_table.data_ptr() == buffers.slot_table.data_ptr() == r2t.data_ptr()
        rows, seq = view.req_pool_indices.numpy(), view.seq_lens_cpu.numpy()
        assert (rows[bs:] == PADDING_ROW).all() and (seq[bs:] == fill).all()
        loaded = plan_of_buffers(buffers)
        assert_reads_within_rows(loaded, rows, seq, r2t.shape[1])
        assert_plan_exact(loaded, r2t, rows, seq, seed=10 + step, num_slots=h.num_slots)
        # StaticPlanBuffers.run in float64 (its CPU path) over fresh pools: naive attention of the real rows
        q64, k64, v64 = random_pools(h.num_slots, HKV, D, 20 + step, padded, HQ)
        out64 = torch.full((padded, HQ, D), float("nan"), dtype=torch.float64)
        buffers.run(q64, k64, v64, layer.scaling, out64, seq_lens=view.seq_lens, req_rows=view.req_pool_indices)
        want64 = naive_rows(q64[:bs], k64, v64, r2t, rows[:bs], seq[:bs], layer.scaling)
        assert (out64[:bs] - want64).abs().max().item() < 1e-9

        # The backend's forward_decode (bf16 pools) in the graph path, then the eager path on the same step.
        q = torch.randn(padded, HQ * D, generator=gen).bfloat16()
        k = torch.randn(padded, HKV, D, generator=gen).bfloat16()
        v = torch.randn(padded, HKV, D, generator=gen).bfloat16()
        out = torch.full((padded, HQ * D), float("nan"), dtype=torch.bfloat16)
        out.copy_(be.forward_decode(q, k, v, layer, view))
        graph = out.view(padded, HQ, D)[:bs].double()
        be.init_forward_metadata(fb)
        assert not be.forward_metadata.static and be.forward_metadata.plan.num_requests == bs
        eager = be.forward_decode(q[:bs], k[:bs], v[:bs], layer, fb).view(bs, HQ, D).double()
        k_buf, v_buf = pool.get_key_buffer(1), pool.get_value_buffer(1)
        want = naive_rows(q[:bs].view(bs, HQ, D), k_buf, v_buf, r2t, rows[:bs], seq[:bs], layer.scaling)
        assert torch.isfinite(graph).all() and torch.isfinite(eager).all()
        assert ((graph - want).norm() / want.norm()).item() < 2e-2
        assert ((eager - want).norm() / want.norm()).item() < 2e-2
        assert ((graph - eager).norm() / eager.norm()).item() < 1e-2
    assert be.stats.steps == 4 and be.stats.row_reads == 0 and be.planner.counters.unshared == 0
    # the stats line names the slowest step: one of these batches, its forest built, edited or reused, a plan of items
    # (a step whose publishing was taken by an earlier step, or that published nothing, names no route)
    assert re.fullmatch(r"batch \d+, publish [\d.]+ ms( \((unchanged|read in full)\))?, forest (built|edited|reused) "
                        r"[\d.]+ ms, plan_forest [\d.]+ ms"
                        r"( \(split search\))?, load [\d.]+ ms, \d+ items, \d+ partials"
                        r"(, coarsened to fit: (coarser split|one split|no sharing))?",
                        be.stats.slowest), be.stats.slowest
    assert be.stats.slowest in be.stats.summary(be.planner.counters)


@pytest.mark.parametrize("mismatch", ["seq_lens", "rids"])
def test_a_batch_that_is_not_the_published_one_is_not_trusted(mismatch: str) -> None:
    """The published batch is used only when its size, request ids and host lengths agree with the batch being
    planned; otherwise the rows are read back and the batch is planned without sharing, and it is still exact."""
    h = build(1)
    table = ChainTable()
    be = PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    fb = decode_batch(h, table)
    if mismatch == "seq_lens":
        # the batch that runs has a request one token longer than the one the scheduler published
        h.decode(steps=1, only=[0])
        rows, seq = batch_rows(h)
        fb.seq_lens_cpu = torch.from_numpy(seq.copy())
        fb.seq_lens = fb.seq_lens_cpu.clone()
    else:
        fb.rids = list(reversed(fb.rids))
        rows, seq = batch_rows(h)
        fb.req_pool_indices = torch.from_numpy(rows.copy())
    be.init_forward_metadata(fb)
    plan = be.forward_metadata.plan
    assert be.stats.row_reads == 1 and be.planner.counters.unshared == fb.batch_size
    assert plan.stats.kv_bytes_planned == plan.stats.kv_bytes_per_request  # nothing shared, nothing guessed
    assert_plan_exact(plan, h.req_to_token, rows, seq, seed=3, num_slots=h.num_slots)


def test_the_publishers_compiled_pick_is_loaded_with_the_backend(host_core_loads: dict[str, int]) -> None:
    """Binding a table, the backend loads the publisher's compiled batch pick (``host_core.loaded_batch``) once, so that
    the load never lands in a publishing: the first changed batch published afterwards finds it loaded."""
    from pat_sglang.sglang_patches.publish import publish_decode_batch

    h = build()
    table = ChainTable()
    PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    assert host_core_loads["_load_batch"] == 1
    publish_decode_batch(h.schedule_batch(range(len(h.reqs))), table)
    publish_decode_batch(h.schedule_batch([0, 1]), table)
    assert host_core_loads["_load_batch"] == 1 and table.batch is not None


def test_a_collection_during_publishing_is_counted_with_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A garbage collection that runs while the scheduler patch publishes the batch's radix paths (before the
    backend's own step work) counts the step as one with a collection, its seconds in the step's collecting time, and
    is taken once with the publishing time."""
    import gc

    from pat_sglang.sglang_patches import publish as publish_mod

    publish = publish_mod._publish

    def publish_and_collect(batch: Any, table: ChainTable) -> None:
        publish(batch, table)
        gc.collect()

    h = build()
    table = ChainTable()
    be = PATAttnBackend(fake_runner(h), delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    monkeypatch.setattr(publish_mod, "_publish", publish_and_collect)
    fb = decode_batch(h, table)
    assert table.publish_s > 0.0 and table.publish_gc is not None and table.publish_gc.collections >= 1
    assert table.publish_gc.seconds > 0.0
    collected_s = table.publish_gc.seconds
    be.init_forward_metadata(fb)
    assert be.stats.steps == 1 and be.stats.gc_steps == 1
    assert be.stats.gc_s_max >= collected_s
    assert be.stats.host_s_max_no_gc == 0.0  # the one step had a collection
    assert be.stats.publish_s_max > 0.0 and table.take_publish() == (0.0, None, "")  # taken by the step
    monkeypatch.setattr(publish_mod, "_publish", publish)
    be.init_forward_metadata(decode_batch(h, table))
    # the next step published without a forced collection: the slowest step with none is its own
    if be.stats.gc_steps == 1:  # (a collection the interpreter started by itself would count as one, rightly)
        assert be.stats.host_s_max_no_gc > 0.0
