"""PATAttnBackend.forward_decode vs SGLang's own TritonAttnBackend on the same GPU pools and batch (bf16 pools, and
FP8 pools with per-tensor layer scales), eager and through a captured CUDA graph (StaticPlanBuffers) replayed on
later batches; and decode sequences whose unchanged steps run last step's plan (open items ended at each step's
lengths), eagerly and by graph replays.

The graph views keep ``seq_lens`` and ``req_pool_indices`` in static buffers, as SGLang's DecodeCudaGraphRunner does
(the captured kernels read open items' ends from there)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gpu_checks import GPU_ONLY, capture_decode

pytestmark = GPU_ONLY

HQ, HKV, D = 32, 8, 128
CONTEXT = 4096
MAX_REQS = 64
NUM_SLOTS = 1 << 16


# (KV cache dtype, layer k_scale, v_scale); None: no scales on the layers (SGLang reads 1.0)
FP8_ENVS = [(torch.float8_e4m3fn, 0.6, 1.7), (torch.float8_e5m2, None, None)]


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """A model runner stand-in with real SGLang GPU pools; TritonAttnBackend built without a process group.
    Parametrized indirectly with an entry of FP8_ENVS for an FP8 pool (bf16 otherwise), optionally followed by a
    head dim (default D; the runner's ``model_config.v_head_dim``)."""
    kv_dtype, k_scale, v_scale, d = (*getattr(request, "param", (torch.bfloat16, None, None)), D)[:4]
    from sglang.srt.configs.model_config import AttentionArch
    from sglang.srt.layers.attention import triton_backend
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
    from sglang.srt.runtime_context import get_context

    # Single GPU, no TP group: what TritonAttnBackend asks of the parallel state and model architecture.
    monkeypatch.setattr(
        triton_backend, "get_parallel", lambda: SimpleNamespace(attn_tp_size=1, attn_dcp_size=1, attn_dcp_rank=0)
    )
    for name in ("hybrid_gdn_config", "kimi_linear_config", "linear_attn_model_spec"):
        monkeypatch.setattr(triton_backend, name, lambda *a, **k: None)
    override = get_context().override_server_args()
    server_args = override.install()
    layers = [RadixAttention(HQ, d, d**-0.5, HKV, layer_id=i) for i in range(2)]
    if k_scale is not None:  # per-tensor scales as SGLang's BaseKVCacheMethod leaves them after loading
        for layer in layers:
            layer.k_scale = torch.nn.Parameter(torch.tensor(k_scale, device="cuda"), requires_grad=False)
            layer.v_scale = torch.nn.Parameter(torch.tensor(v_scale, device="cuda"), requires_grad=False)
            layer.k_scale_float, layer.v_scale_float = k_scale, v_scale
    pool = MHATokenToKVPool(
        size=NUM_SLOTS, page_size=1, dtype=kv_dtype, head_num=HKV, head_dim=d, layer_num=2,
        device="cuda", enable_memory_saver=False,
    )
    for buf in (*pool.k_buffer, *pool.v_buffer):  # FP8 pools: uint8 storage, filled through a float8 view
        buf.copy_(torch.randn(buf.shape, device="cuda").to(kv_dtype).view(buf.dtype))
    runner = SimpleNamespace(
        device="cuda",
        gpu_id=torch.cuda.current_device(),
        server_args=server_args,
        model_config=SimpleNamespace(
            attention_arch=AttentionArch.MHA,
            context_len=CONTEXT,
            get_max_num_attention_heads=lambda: HQ,
            get_num_kv_heads=lambda tp: HKV // tp,
            v_head_dim=d,
            swa_v_head_dim=None,
            is_encoder_decoder=False,
        ),
        req_to_token_pool=ReqToTokenPool(MAX_REQS, CONTEXT, device="cuda", enable_memory_saver=False),
        token_to_kv_pool=pool,
        token_to_kv_pool_allocator=TokenToKVPoolAllocator(
            NUM_SLOTS, dtype=torch.bfloat16, device="cuda", kvcache=pool, need_sort=False
        ),
        model=torch.nn.ModuleList(layers),
        use_mla_backend=False,
        sliding_window_size=None,
        is_draft_worker=False,
        page_size=1,
        kv_cache_dtype=kv_dtype,
        dtype=torch.bfloat16,
    )
    yield runner
    override.restore()


_node_ids = iter(range(1, 1 << 30))


def _radix_node(value: torch.Tensor, parent: object) -> SimpleNamespace:
    """A radix-tree node as the publish patch reads it: id, value (its slots), parent."""
    return SimpleNamespace(id=next(_node_ids), value=value, parent=parent)


def make_batch(runner, rng: np.random.Generator, bs: int, table=None, shared: bool = True):
    """Rows with a shared system prompt, two templates and private tails; the step's token slot last. With
    ``table`` (a ChainTable), the batch's radix paths are published into it as the scheduler patch does.
    ``shared=False``: private rows of 200-1200 tokens only, published with empty radix paths."""

    r2t = runner.req_to_token_pool.req_to_token
    free = iter(rng.permutation(np.arange(1, NUM_SLOTS)).tolist())
    system = [next(free) for _ in range(700)]
    templates = [[next(free) for _ in range(int(rng.integers(50, 400)))] for _ in range(2)]
    root = SimpleNamespace(id=0, value=None, parent=None)
    sys_node = _radix_node(torch.tensor(system), root)
    tmpl_nodes = [_radix_node(torch.tensor(t), sys_node) for t in templates]
    rows, lens = [], []
    for r in range(bs):
        if not shared:
            rows.append(r + 1)
            lens.append(int(rng.integers(200, 1200)))
            r2t[r + 1, : lens[-1]] = torch.tensor([next(free) for _ in range(lens[-1])], dtype=torch.int32,
                                                  device="cuda")
            continue
        tail = [next(free) for _ in range(int(rng.integers(1, 300)))]
        slots = system + templates[r % 2] + tail
        row = r + 1
        r2t[row, : len(slots)] = torch.tensor(slots, dtype=torch.int32, device="cuda")
        rows.append(row)
        lens.append(len(slots))
    last_nodes = [tmpl_nodes[r % 2] if shared else root for r in range(bs)]
    publish = (rows, [f"r{r}" for r in range(bs)], [None] * bs, last_nodes, root)
    if table is not None:
        table.enabled = True
        table.publish_batch(*publish)
    fb = _forward_batch(r2t, rows, lens)
    fb._pat_next = (publish, free)  # for next_step: the same batch one token later
    return fb


def _forward_batch(r2t: torch.Tensor, rows: list[int], lens: list[int]):
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

    bs = len(rows)
    rows_t = torch.tensor(rows, dtype=torch.int64, device="cuda")
    lens_t = torch.tensor(lens, dtype=torch.int64)
    return ForwardBatch(
        forward_mode=ForwardMode.DECODE,
        batch_size=bs,
        input_ids=torch.zeros(bs, dtype=torch.int64, device="cuda"),
        req_pool_indices=rows_t,
        seq_lens=lens_t.cuda(),
        out_cache_loc=r2t[rows_t, lens_t.cuda() - 1].to(torch.int64),
        seq_lens_sum=int(lens_t.sum()),
        seq_lens_cpu=lens_t,
    )


def next_step(runner, fb, table):
    """The same batch one decode step later: every request's next token gets a fresh slot at the end of its row
    (``req_to_token``), the batch is published again (same rows, ids and radix nodes: an unchanged batch)."""
    publish, free = fb._pat_next
    r2t = runner.req_to_token_pool.req_to_token
    rows = publish[0]
    lens = (fb.seq_lens_cpu + 1).tolist()
    for row, n in zip(rows, lens, strict=True):
        r2t[row, n - 1] = next(free)
    table.publish_batch(*publish)
    nxt = _forward_batch(r2t, rows, lens)
    nxt._pat_next = fb._pat_next
    return nxt


def _chain_tokens(node) -> int:
    """Tokens on a published radix path: its nodes' slots from the root down to ``node``."""
    n = 0
    while node is not None and node.value is not None:
        n += len(node.value)
        node = node.parent
    return n


def changed_step(runner, fb, table, rng: np.random.Generator, leave: int, join: int):
    """The batch one decode step later with ``leave`` of its requests finished and ``join`` new ones in, published as
    the scheduler patch would: survivors get their next token's slot; a joiner takes a free ``req_to_token`` row (a
    leaver's row too, as SGLang hands freed rows out again), shares a survivor's radix path (that path's slots copied
    from the survivor's row, the node objects the same) and has a private tail of its own ending in the step's token."""
    (rows, rids, gens, nodes, root), free = fb._pat_next
    r2t = runner.req_to_token_pool.req_to_token
    lens = fb.seq_lens_cpu.tolist()
    keep = sorted(rng.choice(len(rows), size=len(rows) - leave, replace=False).tolist())
    rows2, rids2, nodes2 = [rows[i] for i in keep], [rids[i] for i in keep], [nodes[i] for i in keep]
    lens2 = [lens[i] + 1 for i in keep]
    for row, n in zip(rows2, lens2, strict=True):
        r2t[row, n - 1] = next(free)
    free_rows = [r for r in range(1, MAX_REQS) if r not in set(rows2)]
    for _ in range(join):
        donor = int(rng.integers(len(keep)))
        prefix = _chain_tokens(nodes2[donor])
        tail = [next(free) for _ in range(int(rng.integers(1, 200)))]
        row = free_rows.pop(int(rng.integers(len(free_rows))))
        r2t[row, :prefix] = r2t[rows2[donor], :prefix]
        r2t[row, prefix : prefix + len(tail)] = torch.tensor(tail, dtype=torch.int32, device="cuda")
        rows2.append(row)
        rids2.append(f"j{next(_node_ids)}")
        nodes2.append(nodes2[donor])
        lens2.append(prefix + len(tail))
    publish = (rows2, rids2, [None] * len(rows2), nodes2, root)
    table.publish_batch(*publish)
    nxt = _forward_batch(r2t, rows2, lens2)
    nxt._pat_next = (publish, free)
    return nxt


class StaticView:
    """What DecodeCudaGraphRunner hands the backend: ``seq_lens`` / ``req_pool_indices`` / ``out_cache_loc`` in
    static buffers (padding: row 0, length ``fill``), refilled for every batch, so captured kernels read each replay's
    values at the captured addresses."""

    def __init__(self, max_bs: int, fill: int) -> None:
        self.max_bs, self.fill = max_bs, fill
        self.seq = torch.full((max_bs,), fill, dtype=torch.int64, device="cuda")
        self.rows = torch.zeros(max_bs, dtype=torch.int64, device="cuda")
        self.loc = torch.zeros(max_bs, dtype=torch.int64, device="cuda")

    def __call__(self, fb):
        from types import SimpleNamespace as View

        bs, pad = fb.batch_size, self.max_bs - fb.batch_size
        self.seq.fill_(self.fill)
        self.rows.zero_()
        self.loc.zero_()
        self.seq[:bs].copy_(fb.seq_lens)
        self.rows[:bs].copy_(fb.req_pool_indices)
        self.loc[:bs].copy_(fb.out_cache_loc)
        return View(
            forward_mode=fb.forward_mode,
            batch_size=self.max_bs,
            req_pool_indices=self.rows,
            seq_lens=self.seq,
            seq_lens_cpu=torch.cat([fb.seq_lens_cpu, torch.full((pad,), self.fill, dtype=torch.int64)]),
            out_cache_loc=self.loc,
            num_padding=pad,
            seq_lens_sum=int(fb.seq_lens_cpu.sum()) + pad * self.fill,
            spec_info=None,
            encoder_lens=None,
        )


def qkv(bs: int, seed: int, d: int = D):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(bs, HQ * d, generator=g, device="cuda").bfloat16()
    k = torch.randn(bs, HKV, d, generator=g, device="cuda").bfloat16()
    v = torch.randn(bs, HKV, d, generator=g, device="cuda").bfloat16()
    return q, k, v


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def triton_reference(runner, fb, layer, q, k, v) -> torch.Tensor:
    """SGLang's Triton decode of this step (it stores the step's K/V first; clones, since an FP8 store divides
    them by the layer's scales in place)."""
    from sglang.srt.layers.attention.triton_backend import TritonAttnBackend

    tb = TritonAttnBackend(runner)
    tb.init_forward_metadata(fb)
    return tb.forward_decode(q, k.clone(), v.clone(), layer, fb)


@pytest.mark.parametrize("env", [(torch.bfloat16, None, None), *FP8_ENVS], indirect=True,
                         ids=["bf16", "fp8_e4m3-scaled", "fp8_e5m2"])
def test_forward_decode_matches_triton(env) -> None:
    from pat_sglang.backend import PATAttnBackend
    from pat_sglang.sglang_patches.chain_table import ChainTable

    table = ChainTable()
    be = PATAttnBackend(env, delegate=object(), chain_table=table, min_saved_fraction=0.0)  # type: ignore[arg-type]
    fb = make_batch(env, np.random.default_rng(0), bs=24, table=table)
    layer = env.model[1]
    q, k, v = qkv(fb.batch_size, 1)
    want = triton_reference(env, fb, layer, q, k, v)
    be.init_forward_metadata(fb)
    assert be.stats.row_reads == 0 and be.planner.counters.unshared == 0
    assert be.forward_metadata is not None and be.forward_metadata.plan.stats.kv_bytes_planned < (
        be.forward_metadata.plan.stats.kv_bytes_per_request
    )
    got = be.forward_decode(q, k.clone(), v.clone(), layer, fb)
    assert got.shape == want.shape and torch.isfinite(got).all()
    assert_matches_triton(env, be, layer, q, got, want, fb)


def assert_matches_triton(env, be, layer, q: torch.Tensor, got: torch.Tensor, want: torch.Tensor, fb) -> None:
    """``q``: every query row of the step's plan (padding included); ``got``/``want``: the real rows.
    PAT's output against Triton's on the same pool. For FP8 pools both are first held against float64 attention over
    the dequantised pool (the plan's reference executor): PAT within 2e-2 of it, and PAT within 2e-2 of Triton
    beyond Triton's own distance from it (FP8 rounding inside Triton's kernel is Triton's, not PAT's to match)."""
    if env.kv_cache_dtype == torch.bfloat16:
        assert rel_err(got, want) < 2e-2
        return
    from pat_sglang.reference import run_reference

    assert be.heads.kv_fp8 and be.heads.kv_dtype == env.kv_cache_dtype
    pool = env.token_to_kv_pool
    k_scale = layer.k_scale_float if layer.k_scale is not None else 1.0
    v_scale = layer.v_scale_float if layer.v_scale is not None else 1.0
    d = env.model_config.v_head_dim
    ref = run_reference(be.forward_metadata.plan.to("cpu"), q.view(-1, HQ, d).cpu(),
                        pool.get_key_buffer(layer.layer_id).cpu(), pool.get_value_buffer(layer.layer_id).cpu(),
                        layer.scaling, torch.float64, k_scale, v_scale, fb.seq_lens.cpu(),
                        fb.req_pool_indices.cpu())[: got.shape[0]]
    pat_err = rel_err(got.view(-1, HQ, d).cpu(), ref)
    triton_err = rel_err(want.view(-1, HQ, d).cpu(), ref)
    print(f"fp8 {env.kv_cache_dtype}: PAT vs float64 {pat_err:.2e}, Triton vs float64 {triton_err:.2e}, "
          f"PAT vs Triton {rel_err(got, want):.2e}")
    assert pat_err < 2e-2
    assert rel_err(got, want) < 2e-2 + triton_err


@pytest.mark.parametrize("env", [(torch.bfloat16, None, None), FP8_ENVS[0], (torch.bfloat16, None, None, 256),
                                 (*FP8_ENVS[0], 256)], indirect=True,
                         ids=["bf16", "fp8_e4m3-scaled", "bf16-d256", "fp8_e4m3-scaled-d256"])
def test_forward_decode_in_cuda_graph_matches_triton(env) -> None:
    kernels = pytest.importorskip("pat_sglang.kernels")
    if not hasattr(kernels, "StaticPlanBuffers"):
        pytest.skip("pat_sglang.kernels has no StaticPlanBuffers")
    from pat_sglang.backend import PATAttnBackend
    from pat_sglang.sglang_patches.chain_table import ChainTable

    max_bs = 32
    table = ChainTable()
    be = PATAttnBackend(env, delegate=object(), chain_table=table, min_saved_fraction=0.0)  # type: ignore[arg-type]
    be.init_cuda_graph_state(max_bs, max_bs)
    layer = env.model[0]
    d = env.model_config.v_head_dim
    # Static like SGLang's graph buffers: the captured K/V store reads this step's slots from there, the captured
    # forward the open items' ends.
    view = StaticView(max_bs, be.get_cuda_graph_seq_len_fill_value())

    fb1 = make_batch(env, np.random.default_rng(1), bs=20, table=table)
    q_s, k_s, v_s = (torch.zeros((max_bs, *t.shape[1:]), dtype=t.dtype, device="cuda") for t in qkv(1, 0, d))
    graph, out_s = capture_decode(be, layer, view(fb1), q_s, k_s, v_s)

    for seed, bs in ((2, 20), (3, 29), (4, 7)):  # replay: new batches, new plans, same graph
        fb = make_batch(env, np.random.default_rng(seed), bs=bs, table=table)
        q, k, v = qkv(bs, seed, d)
        want = triton_reference(env, fb, layer, q, k, v)  # also stores this step's K/V
        vb = view(fb)
        be.init_forward_metadata_out_graph(vb)
        q_s.zero_()
        q_s[:bs].copy_(q)
        k_s.zero_()
        v_s.zero_()
        k_s[:bs].copy_(k)
        v_s[:bs].copy_(v)
        plan = be.forward_metadata.plan
        assert plan.stats.kv_bytes_planned < plan.stats.kv_bytes_per_request  # the shared prefix is packed
        out_s.fill_(float("nan"))  # poison: every real row must be written by this replay
        graph.replay()
        got = out_s[:bs]
        assert torch.isfinite(got).all()
        assert_matches_triton(env, be, layer, q_s, got.reshape(bs, -1), want, vb)
    assert be.stats.row_reads == 0 and be.planner.counters.unshared == 0


@pytest.mark.parametrize("env", [(torch.bfloat16, None, None), FP8_ENVS[0]], indirect=True,
                         ids=["bf16", "fp8_e4m3-scaled"])
@pytest.mark.parametrize("graph", [False, True])
def test_decode_steps_reuse_the_plan(env, graph: bool) -> None:
    """One batch decoding step after step (a new token per request per step, the batch republished unchanged): the
    first step plans, every later step runs that same plan object (no new plan, nothing loaded: its open items end
    at the step's lengths on the device), and each step matches SGLang's Triton decode of that step. Past the
    re-plan bound (lowered here to 3 tokens) a step plans again, and so on. ``graph``: one captured CUDA graph
    replayed for every step."""
    import pat_sglang.decode_step as ds
    from pat_sglang.backend import PATAttnBackend
    from pat_sglang.sglang_patches.chain_table import ChainTable

    mp = pytest.MonkeyPatch()
    mp.setattr(ds, "REPLAN_MIN_GROWTH_TOKENS", 3)
    mp.setattr(ds, "REPLAN_GROWTH_DIVISOR", 1 << 20)  # the bound is the floor: 3 tokens
    try:
        table = ChainTable()
        be = PATAttnBackend(env, delegate=object(), chain_table=table, min_saved_fraction=0.0)  # type: ignore[arg-type]
        layer = env.model[1]
        max_bs, bs = 32, 24
        fb = make_batch(env, np.random.default_rng(21), bs=bs, table=table)
        if graph:
            be.init_cuda_graph_state(max_bs, max_bs)
            view = StaticView(max_bs, be.get_cuda_graph_seq_len_fill_value())
            q_s, k_s, v_s = (torch.zeros((max_bs, *t.shape[1:]), dtype=t.dtype, device="cuda") for t in qkv(1, 0))
            cuda_graph, out_s = capture_decode(be, layer, view(fb), q_s, k_s, v_s)
        plans = []
        for step in range(9):
            if step:
                fb = next_step(env, fb, table)
            q, k, v = qkv(bs, 100 + step)
            want = triton_reference(env, fb, layer, q, k, v)  # stores this step's K/V
            if graph:
                vb = view(fb)
                be.init_forward_metadata_out_graph(vb)
                staged = be.graph_buffers._stage
                q_s.zero_()
                k_s.zero_()
                v_s.zero_()
                q_s[:bs].copy_(q)
                k_s[:bs].copy_(k)
                v_s[:bs].copy_(v)
                out_s.fill_(float("nan"))
                cuda_graph.replay()
                got = out_s[:bs].reshape(bs, -1)
                q_all, at = q_s, vb
            else:
                be.init_forward_metadata(fb)
                got = be.forward_decode(q, k.clone(), v.clone(), layer, fb)
                q_all, at = q, fb
            plan = be.forward_metadata.plan
            plans.append(plan)
            if step % 4:  # steps 1-3, 5-7: the batch grew by at most 3 tokens since step 0 / 4: the same plan
                assert plan is plans[-2], step
                if graph:
                    assert be.graph_buffers.plan is plan and be.graph_buffers._stage == staged  # nothing loaded
            else:
                assert step == 0 or plan is not plans[-2], step
            assert plan.num_open == plan.num_requests
            assert torch.isfinite(got).all(), step
            assert_matches_triton(env, be, layer, q_all, got, want, at)
        assert be.planner.counters.plans_reused == 6
        assert be.stats.row_reads == 0 and be.planner.counters.unshared == 0
    finally:
        mp.undo()


@pytest.mark.parametrize("remake", [False, True], ids=["full-plans", "remade-plans"])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_steps_with_joins_and_leaves_match_triton(env, graph: bool, remake: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode batch whose requests finish and are replaced step after step (joiners on freed rows, sharing the
    survivors' radix paths): every step matches SGLang's Triton decode of that step, eagerly and by replays of one
    graph captured at the largest batch. ``remake``: the backend's planner re-makes last step's plan for the change
    (``PAT_SGLANG_REMAKE_PLANS=1``, its quality bounds lifted so that most changed steps take it), else every changed
    batch gets a forest and a full plan."""
    import pat_sglang.decode_step as ds
    from pat_sglang.backend import PATAttnBackend
    from pat_sglang.sglang_patches.chain_table import ChainTable

    monkeypatch.setenv(ds.REMAKE_PLANS_ENV, "1" if remake else "0")
    monkeypatch.setattr(ds, "REMAKE_MAX_EXTRA_FRACTION", 0.9)
    monkeypatch.setattr(ds, "SPLIT_KEEP_FRACTION", 1.0)
    table = ChainTable()
    be = PATAttnBackend(env, delegate=object(), chain_table=table, min_saved_fraction=0.0)  # type: ignore[arg-type]
    assert be.planner.remake_plans is remake
    layer = env.model[0]
    rng = np.random.default_rng(33)
    max_bs = 32
    fb = make_batch(env, rng, bs=20, table=table)
    if graph:
        be.init_cuda_graph_state(max_bs, max_bs)
        view = StaticView(max_bs, be.get_cuda_graph_seq_len_fill_value())
        q_s, k_s, v_s = (torch.zeros((max_bs, *t.shape[1:]), dtype=t.dtype, device="cuda") for t in qkv(1, 0))
        cuda_graph, out_s = capture_decode(be, layer, view(fb), q_s, k_s, v_s)
    for step in range(10):
        if step:
            leave, join = [(0, 0), (2, 3), (0, 0), (3, 1), (1, 4), (0, 2), (4, 0), (2, 2), (1, 3)][step - 1]
            fb = changed_step(env, fb, table, rng, leave, join)
        bs = fb.batch_size
        q, k, v = qkv(bs, 300 + step)
        want = triton_reference(env, fb, layer, q, k, v)
        if graph:
            vb = view(fb)
            be.init_forward_metadata_out_graph(vb)
            for t, src in ((q_s, q), (k_s, k), (v_s, v)):
                t.zero_()
                t[:bs].copy_(src)
            out_s.fill_(float("nan"))
            cuda_graph.replay()
            got, q_all, at = out_s[:bs].reshape(bs, -1), q_s, vb
        else:
            be.init_forward_metadata(fb)
            got = be.forward_decode(q, k.clone(), v.clone(), layer, fb)
            q_all, at = q, fb
        assert be.forward_metadata is not None, step  # PAT served the step (min saved fraction 0)
        assert torch.isfinite(got).all(), step
        assert_matches_triton(env, be, layer, q_all, got, want, at)
    counters = be.planner.counters
    if remake:
        assert counters.remade >= 3, counters  # the re-made path ran on the GPU, not only full plans
    else:
        assert counters.remade == 0 and counters.built >= 7, counters
    assert be.stats.row_reads == 0


@pytest.mark.parametrize("graph", [False, True])
def test_batches_sharing_too_little_run_on_the_delegate(env, graph: bool) -> None:
    """With the default dispatch fraction and SGLang's Triton backend as the delegate: a batch with a shared prefix runs
    PAT, a batch without sharing runs the delegate; both give Triton's attention. ``graph``: two graphs captured per
    batch size (PAT's, the delegate's, as the graph-variant patch makes the runner do), each step replaying the one its
    metadata chose."""
    from sglang.srt.layers.attention.triton_backend import TritonAttnBackend

    from pat_sglang.backend import DELEGATE_VARIANT, GRAPH_VARIANTS, PAT_VARIANT, PATAttnBackend
    from pat_sglang.sglang_patches import apply_patches
    from pat_sglang.sglang_patches.chain_table import ChainTable

    apply_patches()
    max_bs = 32
    table = ChainTable()
    be = PATAttnBackend(env, delegate=TritonAttnBackend(env), chain_table=table)
    layer = env.model[0]
    graphs = {}
    if graph:
        be.init_cuda_graph_state(max_bs, max_bs)
        assert be.graph_variants == GRAPH_VARIANTS
        view = StaticView(max_bs, be.get_cuda_graph_seq_len_fill_value())
        q_s, k_s, v_s = (torch.zeros((max_bs, *t.shape[1:]), dtype=t.dtype, device="cuda") for t in qkv(1, 0))
        v0 = view(make_batch(env, np.random.default_rng(1), bs=20, table=table))
        for variant in GRAPH_VARIANTS:  # what the patched DecodeCudaGraphRunner.capture_one_shape does
            be.capture_variant = variant
            graphs[variant] = capture_decode(be, layer, v0, q_s, k_s, v_s)
        be.capture_variant = None
    seen = []
    for seed, bs, shared in ((2, 20, True), (3, 24, False), (4, 7, True), (5, 29, False)):
        fb = make_batch(env, np.random.default_rng(seed), bs=bs, table=table, shared=shared)
        q, k, v = qkv(bs, seed)
        want = triton_reference(env, fb, layer, q, k, v)  # also stores this step's K/V
        if graph:
            vb = view(fb)
            be.init_forward_metadata_out_graph(vb)
            variant = be.replay_variant
            g, out_s = graphs[variant]
            for static, t in ((q_s, q), (k_s, k), (v_s, v)):
                static.zero_()
                static[:bs].copy_(t)
            out_s.fill_(float("nan"))  # poison: every real row must be written by this replay
            g.replay()
            got = out_s[:bs].reshape(bs, -1)
        else:
            be.init_forward_metadata(fb)
            variant = PAT_VARIANT if be.forward_metadata is not None else DELEGATE_VARIANT
            got = be.forward_decode(q, k.clone(), v.clone(), layer, fb)
        seen.append(variant)
        assert torch.isfinite(got).all()
        assert rel_err(got, want) < 2e-2
    assert seen == [PAT_VARIANT, DELEGATE_VARIANT, PAT_VARIANT, DELEGATE_VARIANT]
    assert be.planner.counters.declined == 2 and be.stats.row_reads == 0
