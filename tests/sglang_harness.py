"""A real SGLang 0.5.17 prefix cache driven on the CPU, as the scheduler drives it.

Used by the SGLang-integration tests: real ``Req`` objects go through ``init_next_round_input``
(radix match), ``ReqToTokenPool.alloc``, KV slot allocation, ``req_to_token`` writes and
``RadixCache.cache_unfinished_req`` (which inserts the prompt and moves ``req.last_node``), then grow
private decode tails. Slot allocation follows SGLang's paged allocators (a request's new tokens start
on a fresh page; a decode token takes the next slot of its last page, or a fresh page); their triton
kernels do not run on the CPU, so the page arithmetic lives here.

Also the pieces a ``PATAttnBackend`` is built from on the CPU: a model runner with real ``RadixAttention``
layers and ``MHATokenToKVPool`` (``fake_model_runner``), a stand-in delegate, and the decode
``ForwardBatch`` of one scheduler step (``decode_batch``).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.managers.schedule_batch import Req
from sglang.srt.mem_cache.allocator.paged import PagedTokenToKVPoolAllocator
from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
from sglang.srt.mem_cache.radix_cache import RadixCache
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
from sglang.srt.sampling.sampling_params import SamplingParams


@dataclass
class RadixHarness:
    page_size: int = 1
    num_slots: int = 1 << 14
    max_reqs: int = 64
    max_context: int = 2048
    reqs: list[Req] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.req_to_token_pool = ReqToTokenPool(
            size=self.max_reqs, max_context_len=self.max_context, device="cpu", enable_memory_saver=False
        )
        if self.page_size == 1:
            self.allocator = TokenToKVPoolAllocator(
                self.num_slots, dtype=torch.bfloat16, device="cpu", kvcache=None, need_sort=False
            )
        else:
            self.allocator = PagedTokenToKVPoolAllocator(
                self.num_slots, self.page_size, dtype=torch.bfloat16, device="cpu", kvcache=None, need_sort=False
            )
        self.cache = RadixCache(
            CacheInitParams(
                disable=False,
                req_to_token_pool=self.req_to_token_pool,
                token_to_kv_pool_allocator=self.allocator,
                page_size=self.page_size,
            )
        )

    @property
    def req_to_token(self) -> torch.Tensor:
        return self.req_to_token_pool.req_to_token

    def _new_slots(self, start: int, n: int, row: int) -> torch.Tensor:
        """Slots for positions [start, start + n) of a row, continuing its last page like SGLang does."""
        ps = self.page_size
        out: list[int] = []
        pos = start
        while len(out) < n:
            if pos % ps:  # continue the partially filled page of this row
                out.append(int(self.req_to_token[row, pos - 1]) + 1 if not out else out[-1] + 1)
            else:
                page = self.allocator.alloc(ps)
                assert page is not None, "harness KV pool exhausted"
                out.append(int(page[0]))
            pos += 1
        return torch.tensor(out, dtype=torch.int64)

    def add_request(self, token_ids: list[int], rid: str | None = None) -> Req:
        """Prefill: match the radix tree, allocate, write req_to_token, then cache the prompt."""
        req = Req(rid or f"r{len(self.reqs)}", "", array("q", token_ids), SamplingParams(max_new_tokens=1 << 20))
        req.init_next_round_input(self.cache)
        prefix = req.prefix_indices
        p = len(prefix)
        assert self.req_to_token_pool.alloc([req]) is not None
        req.set_extend_range(p, len(token_ids))
        row = req.req_pool_idx
        self.req_to_token[row, :p] = prefix.to(torch.int32)
        self.req_to_token[row, p : len(token_ids)] = self._new_slots(p, len(token_ids) - p, row).to(torch.int32)
        self.cache.inc_lock_ref(req.last_node)
        self.cache.cache_unfinished_req(req)
        self.reqs.append(req)
        self.seq_lens.append(len(token_ids))
        return req

    def decode(self, steps: int = 1, only: list[int] | None = None) -> None:
        """Grow private decode tails (the KV slot of each new token)."""
        for _ in range(steps):
            for i in only if only is not None else range(len(self.reqs)):
                req, n = self.reqs[i], self.seq_lens[i]
                self.req_to_token[req.req_pool_idx, n] = int(self._new_slots(n, 1, req.req_pool_idx)[0])
                req.output_ids.append(7)
                self.seq_lens[i] = n + 1

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat (kv_indptr, kv_indices) of the batch, from the req_to_token rows [0:seq_len]."""
        indptr = np.concatenate([[0], np.cumsum(self.seq_lens)]).astype(np.int64)
        indices = np.concatenate(
            [self.req_to_token[r.req_pool_idx, :n].numpy() for r, n in zip(self.reqs, self.seq_lens, strict=True)]
        ).astype(np.int64)
        return indptr, indices

    def schedule_batch(self, only: list[int] | None = None) -> SimpleNamespace:
        """The ``ScheduleBatch`` attributes the publishing patch reads (requests ``only``, or all)."""
        idx = only if only is not None else list(range(len(self.reqs)))
        return SimpleNamespace(
            forward_mode=ForwardMode.DECODE,
            reqs=[self.reqs[i] for i in idx],
            tree_cache=self.cache,
            req_to_token_pool=self.req_to_token_pool,
            seq_lens_cpu=torch.tensor([self.seq_lens[i] for i in idx], dtype=torch.int64),
        )


def shared_prompts(rng: np.random.Generator, num_templates: int = 3, per_template: int = 3) -> list[list[int]]:
    """A system prompt, a few templates on it, unique suffixes on each template, plus one stranger."""
    system = rng.integers(1000, 2000, size=37).tolist()
    prompts = []
    for t in range(num_templates):
        template = system + rng.integers(2000 + 100 * t, 2100 + 100 * t, size=int(rng.integers(5, 40))).tolist()
        for _ in range(per_template):
            prompts.append(template + rng.integers(5000, 9000, size=int(rng.integers(1, 30))).tolist())
    prompts.append(rng.integers(9000, 9999, size=23).tolist())  # shares nothing
    prompts.append(list(prompts[0]))  # an exact repeat of a prompt
    return prompts


class RecordingDelegate:
    """Stands in for the triton delegate (which needs a GPU): records what PAT hands it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def init_forward_metadata(self, fb: Any) -> None:
        self.calls.append("init_forward_metadata")

    def forward_extend(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append("forward_extend")
        return "delegate-extend"

    def forward_decode(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append("forward_decode")
        return "delegate-decode"

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        self.calls.append("init_cuda_graph_state")

    def init_forward_metadata_out_graph(self, fb: Any, in_capture: bool = False) -> None:
        self.calls.append("init_forward_metadata_out_graph" + (" (capture)" if in_capture else ""))

    def init_forward_metadata_in_graph(self, fb: Any) -> None:
        self.calls.append("init_forward_metadata_in_graph")


def fake_model_runner(
    h: RadixHarness,
    num_q: int,
    num_kv: int,
    head_dim: int,
    num_layers: int,
    dtype: torch.dtype = torch.float32,
    layers: list | None = None,
    seed: int = 0,
    fill: bool = True,
    kv_dtype: torch.dtype | None = None,
    **over: Any,
) -> SimpleNamespace:
    """The model-runner attributes PAT reads: ``h``'s pools, real ``RadixAttention`` layers with these (per-rank)
    head counts, and an ``MHATokenToKVPool`` of ``num_kv`` heads filled with random K/V (``seed``; left as allocated
    when ``fill`` is off, for host-time benchmarks that never read it). ``kv_dtype``: the pool's dtype
    (``--kv-cache-dtype``; FP8 pools keep SGLang's uint8 storage), the model dtype when None."""
    kv_dtype = kv_dtype or dtype
    pool = MHATokenToKVPool(
        size=h.num_slots, page_size=h.page_size, dtype=kv_dtype, head_num=num_kv, head_dim=head_dim,
        layer_num=num_layers, device="cpu", enable_memory_saver=False,
    )
    gen = torch.Generator().manual_seed(seed)
    for i in range(num_layers if fill else 0):
        for buf in (pool.k_buffer[i], pool.v_buffer[i]):
            buf.copy_(torch.randn(buf.shape, generator=gen).to(kv_dtype).view(buf.dtype))
    if layers is None:
        layers = [RadixAttention(num_q, head_dim, head_dim**-0.5, num_kv, layer_id=i) for i in range(num_layers)]
    runner = SimpleNamespace(
        device="cpu",
        server_args=SimpleNamespace(speculative_algorithm=None, dcp_size=1),
        model_config=SimpleNamespace(is_encoder_decoder=False, context_len=h.max_context),
        use_mla_backend=False,
        sliding_window_size=None,
        token_to_kv_pool_allocator=h.allocator,
        token_to_kv_pool=pool,
        req_to_token_pool=h.req_to_token_pool,
        model=torch.nn.ModuleList(layers),
        kv_cache_dtype=kv_dtype,
        dtype=dtype,
    )
    for key, value in over.items():
        setattr(runner, key, value)
    return runner


def decode_batch(
    h: RadixHarness,
    table: Any = None,
    mode: ForwardMode = ForwardMode.DECODE,
    only: list[int] | None = None,
) -> ForwardBatch:
    """One decode step of requests ``only`` (or all) as the scheduler makes it: new token slots, publish (into
    ``table``, or the table bound to ``h``'s ReqToTokenPool), then the ForwardBatch."""
    from pat_sglang.sglang_patches.publish import publish_decode_batch

    idx = only if only is not None else list(range(len(h.reqs)))
    h.decode(steps=1, only=idx)  # prepare_for_decode: allocate the step's token and write it into req_to_token
    publish_decode_batch(h.schedule_batch(idx), table)
    rows = torch.tensor([h.reqs[i].req_pool_idx for i in idx], dtype=torch.int64)
    seq_lens = torch.tensor([h.seq_lens[i] for i in idx], dtype=torch.int64)
    out_loc = h.req_to_token[rows, seq_lens - 1].to(torch.int64)
    return ForwardBatch(
        forward_mode=mode,
        batch_size=len(idx),
        input_ids=torch.zeros(len(idx), dtype=torch.int64),
        req_pool_indices=rows,
        seq_lens=seq_lens,
        out_cache_loc=out_loc,
        seq_lens_sum=int(seq_lens.sum()),
        seq_lens_cpu=seq_lens.clone(),
        rids=[h.reqs[i].rid for i in idx],
    )


# ----------------------------------------------------------------------------------------------- per-step checks
# Helpers for the tests of the per-step host path (published radix paths -> forest -> plan over req_to_token).


def slot_free_key(forest: Any) -> tuple:
    """The sharing a ``PrefixForest`` describes, without slots: sorted (requests, start, end) per node (a sorted
    tuple, not a set, so a duplicated node is not hidden)."""
    rp, reqs = forest.req_ptr.tolist(), forest.req_flat.tolist()
    ends = (forest.start + forest.tok).tolist()
    nodes = ((tuple(reqs[rp[i] : rp[i + 1]]), s, e) for i, (s, e) in enumerate(zip(forest.start.tolist(), ends,
                                                                                     strict=True)))
    return tuple(sorted(nodes))


def rows_flat(req_to_token: torch.Tensor, rows: Any, seq_lens: Any) -> tuple[np.ndarray, np.ndarray]:
    """(kv_indptr, kv_indices) of ``req_to_token[row, :seq_len]`` per request, int64."""
    rows, seq_lens = np.asarray(rows, dtype=np.int64), np.asarray(seq_lens, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(seq_lens)]).astype(np.int64)
    parts = [req_to_token[int(r), : int(n)].numpy().astype(np.int64) for r, n in zip(rows, seq_lens, strict=True)]
    return indptr, np.concatenate(parts) if parts else np.zeros(0, np.int64)


def naive_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, req_to_token: torch.Tensor, rows: Any, seq_lens: Any,
    sm_scale: float,
) -> torch.Tensor:
    """Plain float64 attention of each request over the KV slots ``req_to_token[row, :seq_len]``."""
    from pat_sglang.reference import naive_decode

    indptr, indices = rows_flat(req_to_token, rows, seq_lens)
    return naive_decode(q, k, v, torch.from_numpy(indptr), torch.from_numpy(indices), sm_scale)


def random_pools(
    num_slots: int, num_kv: int, head_dim: int, seed: int, batch: int = 0, num_q: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh float64 K/V pools ``[num_slots, num_kv, head_dim]`` and q ``[batch, num_q, head_dim]``."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(num_slots, num_kv, head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(num_slots, num_kv, head_dim, generator=gen, dtype=torch.float64)
    q = torch.randn(batch, num_q, head_dim, generator=gen, dtype=torch.float64)
    return q, k, v


def assert_plan_exact(plan: Any, req_to_token: torch.Tensor, rows: Any, seq_lens: Any, seed: int,
                      num_slots: int | None = None, tol: float = 1e-9) -> None:
    """``run_reference(plan)`` in float64 on fresh random q/k/v equals naive attention over the rows
    ``req_to_token[row, :seq_len]`` (the reference poisons its outputs with NaN: every row must be written)."""
    from pat_sglang.reference import run_reference

    heads = plan.heads
    if num_slots is None:
        num_slots = int(req_to_token.max()) + 1
    q, k, v = random_pools(num_slots, heads.num_kv_heads, heads.head_dim, seed, plan.num_requests, heads.num_q_heads)
    scale = heads.head_dim**-0.5
    got = run_reference(plan, q, k, v, scale, seq_lens=seq_lens, rows=rows)  # open items end at these lengths
    want = naive_rows(q, k, v, req_to_token, rows, seq_lens, scale)
    assert torch.isfinite(got).all(), "a request's output was never written"
    err = (got - want).abs().max().item()
    assert err < tol, f"plan differs from naive attention by {err}"


def assert_reads_within_rows(plan: Any, rows: Any, seq_lens: Any, row_stride: int) -> None:
    """Every item reads positions ``[p, p')`` of one row of the slot table, inside ``[0, seq_len)`` of each request
    it lists, and each of those requests holds the same slots at ``[p, p')`` of its own row (an item reads shared KV
    through one member's row)."""
    from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_REQ_BEGIN, ITEM_REQ_END

    rows, seq_lens = np.asarray(rows, dtype=np.int64), np.asarray(seq_lens, dtype=np.int64)
    table = plan.slot_table.numpy()
    item_req = plan.item_req.numpy()
    for it in plan.items_at(seq_lens, rows):  # open items ended at these lengths
        b, e = int(it[ITEM_KV_BEGIN]), int(it[ITEM_KV_END])
        reqs = item_req[int(it[ITEM_REQ_BEGIN]) : int(it[ITEM_REQ_END])]
        row, pos = divmod(b, row_stride)
        assert b < e and (e - 1) // row_stride == row, "an item crosses a row"
        assert e - row * row_stride <= int(seq_lens[reqs].min()), "an item reads past a request's sequence"
        for r in reqs.tolist():
            own = int(rows[r]) * row_stride + pos
            assert np.array_equal(table[own : own + e - b], table[b:e]), f"request {r} holds other slots there"


def plan_work(plan: Any, table: Any, seq_lens: Any = None, rows: Any = None) -> list:
    """A plan's work independent of how it addresses KV and orders items: per item, (its KV slots resolved through
    ``table`` (the plan's slot table, as numpy), its requests, its tile m), sorted; then the partials per request.
    ``seq_lens``/``rows``: where open items end (needed for plans with open items)."""
    from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_REQ_BEGIN, ITEM_REQ_END, ITEM_TILE_M

    table = np.asarray(table)
    item_req = plan.item_req.numpy()
    items = plan.items_at(seq_lens, rows) if plan.num_open else plan.items.numpy()
    work = sorted(
        (
            tuple(table[int(it[ITEM_KV_BEGIN]) : int(it[ITEM_KV_END])].tolist()),
            tuple(item_req[int(it[ITEM_REQ_BEGIN]) : int(it[ITEM_REQ_END])].tolist()),
            int(it[ITEM_TILE_M]),
        )
        for it in items
    )
    return [work, np.diff(plan.merge_indptr.numpy()).tolist(), plan.num_partials]


def plan_of_buffers(buffers: Any) -> Any:
    """The plan the CUDA-graph kernels would read: ``StaticPlanBuffers``' device buffers (the used prefixes) and the
    slot table the graphs were captured with, as a ``PackPlan`` the reference executor can run."""
    import dataclasses

    from pat_sglang.planner import ITEM_REQ_END

    loaded = buffers.plan
    dev = buffers.dev
    n = int(dev["num_items"][0])
    items = dev["items"][:n].clone()
    entries = int(items[:, ITEM_REQ_END].max()) if n else 0
    b = loaded.num_requests
    indptr = dev["merge_indptr"][: b + 1].clone()
    # Padding beyond the plan's requests (up to the buffers' batch): no partials to merge.
    tail = dev["merge_indptr"][b + 1 : buffers.max_batch + 1]
    assert (tail == indptr[-1]).all(), "padding requests of the merge map hold partials"
    return dataclasses.replace(
        loaded,
        items=items,
        slot_table=buffers.slot_table,
        item_req=dev["item_req"][:entries].clone(),
        item_dst=dev["item_dst"][:entries].clone(),
        merge_indptr=indptr,
        merge_partials=dev["merge_partials"][: int(indptr[-1])].clone(),
    )


def record_forests(planner: Any) -> list:
    """Wraps ``planner.forest`` (a ``DecodeStepPlanner``; ``plan`` calls ``self.forest``) to record the forest of
    every planned step, as the planner returns it."""
    seen: list = []
    original = planner.forest

    def forest(batch: Any, *args: Any) -> Any:
        f = original(batch, *args)
        seen.append(f)
        return f

    planner.forest = forest
    return seen


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
