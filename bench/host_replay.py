"""Per-step host time of the PAT backend while SGLang's real RadixCache serves the Mooncake conversation trace (CPU).

What a decode step costs the host, measured the way a running server makes its steps: requests arrive by the
trace's timestamps, are admitted while the running batch is below ``--batch``, are matched against the radix
cache, prefilled in chunks of ``--chunk`` tokens, decode one token per step and finish, all through SGLang
0.5.17's own objects on the CPU. Every decode step is timed as ``publish_decode_batch`` (the scheduler patch,
inside ``ForwardBatch.init_new``) + ``PATAttnBackend.init_forward_metadata_out_graph`` (the CUDA-graph path,
SGLang's default; ``--path eager`` times ``init_forward_metadata`` instead).

Real SGLang objects and calls: ``Req`` (``init_next_round_input`` radix match, ``set_extend_range``,
``update_finish_state``), ``RadixCache`` (``cache_unfinished_req`` after every prefill and, with
``chunked=True``, before each further chunk of a chunked request, as ``Scheduler.stash_chunked_request`` does;
``cache_finished_req`` at finish; ``inc_lock_ref`` at admission; LRU eviction through ``alloc_token_slots``),
``ReqToTokenPool``, ``TokenToKVPoolAllocator`` (page size 1), the backend itself on a CPU model runner with
real ``RadixAttention`` layers (``tests/sglang_harness.fake_model_runner``; the K/V buffers are zero-stride
views, since the host path never reads KV). The graph-path batch is the view ``DecodeCudaGraphRunner`` hands
the backend at replay: padded to SGLang's default capture sizes (1, 2, 4, 8, 12, 16, 24, ..., 256), padding rows 0,
``num_padding`` set, no request ids.

Simulated: the scheduler loop (``Scheduler.get_next_batch_to_run`` without mixed chunks: a prefill iteration
runs whenever a chunked request is in flight, or requests wait and the batch has room; otherwise the running
batch decodes one step), the chunk budget (``--chunk`` tokens per prefill iteration; a request that does not
fit the rest of the budget is chunked, one chunked request at a time), the admission check against KV room
(uncached prompt + remaining output of everything running), and the clock: ``--step-ms`` per decode step,
uncached prompt tokens / ``--prefill-tok-per-ms`` per prefill iteration. Arrival times are the trace's
timestamps times ``--time-scale`` (``auto``: arrivals at four times the rate the server could serve at this batch
and context with nothing cached, so the batch stays at ``--batch`` and the queue never runs dry).

Prompts: each of a request's ``hash_ids`` stands for a run of token ids (equal ids, equal tokens; the trace's
partial last block a prefix of the full one). ``--context C`` sets the prompt lengths in one of two ways:

* ``--scale blocks`` (default): every block is ``512 * C / mean input length`` tokens, the same for every request, so
  the mean prompt is C tokens and the sharing is exactly the trace's at every C (a later conversation turn still
  extends the earlier turn's whole prompt; the same radix-tree shapes and cache-hit ratio, only longer nodes);
  prompts are cut at ``--clip-factor`` (4) x C tokens. This is the one to read "flat in context length" from.
* ``--scale exact``: every prompt exactly C tokens, the request's own hash-id list repeated cyclically or cut: the
  trace's shared prefixes stay shared, but what a later turn shared beyond them is lost, so sharing falls as C
  grows (cache hits 57% of prompt tokens at 1k, 7% at 32k).

Output lengths are the trace's, capped at ``--max-output``; generated tokens are private to each request. The
first ``--batch`` requests (the server's initial population) get a uniform random fraction of their output length,
the residual life of a request met in a running server (``--no-stagger``: full lengths; then the initial population
starts together, most of it reaches the cap together, and finishes and is replaced in waves of a hundred or more
requests per step).

Steps: decode steps run untimed until the batch first reaches 90% of ``--batch`` (the fill), then
``--warmup`` more, then ``--steps`` timed ones (with ``gc.freeze()`` at the end of the fill unless
``--no-gc-freeze``; collections of objects made afterwards still land in timed steps). Per timed step the bench
keeps the host time, batch size, context tokens, and the arrivals (trace requests queued since the previous
decode step), joins (requests new in this decode batch) and leaves (requests of the previous decode batch that
finished).

    .venv/bin/python bench/host_replay.py                       # batch 64, 256 x context 1k, 4k, 16k, 32k
    .venv/bin/python bench/host_replay.py --batch 64 --context 1k 32k --steps 1000
    .venv/bin/python bench/host_replay.py --quick               # batch 8, context 1k, chunk 256: a smoke run
    .venv/bin/python bench/host_replay.py --workload gsp --batch 256 --steps 600   # SGLang's generated-shared-prefix

``--workload gsp`` replays SGLang's ``bench_serving --dataset-name generated-shared-prefix`` defaults instead of the
trace (``pat_sglang.experiments.generated_shared_prefix``: 64 groups x 16 prompts, each the group's 2048-token
system prompt + a unique 128-token question, 256 output tokens, shuffled): every request arrives at once (a closed
loop at concurrency ``--batch``), or ``--rate`` requests per second. Its default context is the prompt length
(2176: blocks at their own size). The initial population is staggered as for the trace (a running server, where the
client's requests came in over the first prefills); ``--no-stagger`` starts them all together, so that the whole
batch finishes and is replaced in one step (the wave SGLang's benchmark starts with).

Targets (issue 9, 2-core CPU): p50 <= 100 us, p99 <= 300 us, max <= 1000 us per step, flat in context length.
At the end the bench runs ``bench/plan_speed.py`` (a separate process) and prints its numbers under the table.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import random
import subprocess
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

logging.getLogger("sglang").setLevel(logging.ERROR)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sglang.srt.managers.schedule_batch import Req, ReqKvInfo
    from sglang.srt.mem_cache.allocation import alloc_token_slots
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.srt.sampling.sampling_params import SamplingParams
    from sglang_harness import RadixHarness, RecordingDelegate, fake_model_runner

from pat_sglang.backend import PATAttnBackend  # noqa: E402
from pat_sglang.experiments.workloads import (  # noqa: E402
    DEFAULT_MOONCAKE_TRACE,
    MOONCAKE_BLOCK_TOKENS,
    OUTPUT_TOKEN_BASE,
    SEGMENT_STRIDE_TOKENS,
    RequestSpec,
    generated_shared_prefix,
    load_mooncake,
)
from pat_sglang.gc_pauses import GC_PAUSES  # noqa: E402
from pat_sglang.sglang_patches import apply_patches  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

DEFAULT_TRACE = DEFAULT_MOONCAKE_TRACE
DEFAULT_BATCHES = (64, 256)
DEFAULT_CONTEXTS = (1024, 4096, 16384, 32768)
TARGET_P50_US, TARGET_P99_US, TARGET_MAX_US = 100.0, 300.0, 1000.0
CACHE_LINE_INT64 = 8  # int64 elements per 64-byte cache line (--evict-mib writes one per line)
LLAMA3_8B = (32, 8, 128)  # q heads, kv heads, head dim (bf16)
ARRIVAL_HEADROOM = 4.0  # auto time scale: arrivals at this multiple of the uncached service rate
VOCAB = 1 << 62  # token ids here reach OUTPUT_TOKEN_BASE + rid * SEGMENT_STRIDE_TOKENS: all "in vocabulary"


def capture_sizes(max_bs: int) -> list[int]:
    """SGLang 0.5.17's default decode CUDA-graph batch sizes (``ServerArgs._generate_decode_cuda_graph_batch_sizes``,
    no speculative decoding) up to ``max_bs``, plus ``max_bs`` itself."""
    sizes = [1, 2, 4, 8, 12] + list(range(16, 257, 8)) + list(range(272, 512, 16)) + list(range(512, max_bs + 1, 32))
    sizes = [s for s in sizes if s <= max_bs]
    if max_bs not in sizes:
        sizes.append(max_bs)
    return sizes


def gsp_specs(rate: float | None) -> list[RequestSpec]:
    """``--workload gsp``: the generated-shared-prefix defaults, all at t=0 or ``rate`` requests per second."""
    specs = generated_shared_prefix()
    if rate is None:
        return specs
    return [RequestSpec(s.rid, i * 1e3 / rate, s.segments, s.output_len) for i, s in enumerate(specs)]


def parse_tokens(text: str) -> int:
    """``1k`` -> 1024, ``32K`` -> 32768, ``5000`` -> 5000."""
    t = text.strip().lower()
    return int(float(t[:-1]) * 1024) if t.endswith("k") else int(t)


def exact_segments(spec: RequestSpec, context: int) -> tuple[tuple[int, int], ...]:
    """``--scale exact``: the request's hash-id blocks repeated cyclically (or cut) to exactly ``context`` tokens."""
    ids = [seg for seg, _ in spec.segments]
    blocks = math.ceil(context / MOONCAKE_BLOCK_TOKENS)
    chosen = [ids[i % len(ids)] for i in range(blocks)]
    last = context - MOONCAKE_BLOCK_TOKENS * (blocks - 1)
    return tuple((h, MOONCAKE_BLOCK_TOKENS) for h in chosen[:-1]) + ((chosen[-1], last),)


def block_segments(spec: RequestSpec, factor: float, clip: int) -> tuple[tuple[int, int], ...]:
    """``--scale blocks``: every block ``factor`` times as long (the same factor for every request, so equal hash ids
    stay equal tokens and a shorter run of an id stays a prefix of a longer one), the prompt cut at ``clip`` tokens."""
    out: list[tuple[int, int]] = []
    total = 0
    for seg, n in spec.segments:
        m = min(max(1, round(n * factor)), clip - total)
        out.append((seg, m))
        total += m
        if total >= clip:
            break
    return tuple(out)


class HostOnlyKVPool:
    """K/V buffers of shape [slots, kv heads, head dim] as zero-stride views of one row: the shapes the backend checks
    at start-up, no memory (the host path never reads KV; the real pool at 256 x 32k would be gigabytes)."""

    use_hnd = False

    def __init__(self, slots: int, num_kv: int, head_dim: int, dtype: torch.dtype) -> None:
        self._buf = torch.zeros(1, num_kv, head_dim, dtype=dtype).expand(slots + 1, num_kv, head_dim)

    def get_key_buffer(self, layer_id: int) -> torch.Tensor:
        return self._buf

    def get_value_buffer(self, layer_id: int) -> torch.Tensor:
        return self._buf

    def get_kv_buffer(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._buf, self._buf


@dataclass
class PointConfig:
    batch: int
    context: int
    chunk: int = 8192
    max_output: int = 256
    steps: int = 2000  # timed decode steps
    warmup: int = 10  # untimed decode steps after the fill
    fill_fraction: float = 0.9  # timing starts once the batch first reaches this fraction of ``batch``...
    max_fill_steps: int = 2000  # ... or after this many decode steps, whichever comes first
    step_ms: float = 20.0
    prefill_tok_per_ms: float = 40.0
    time_scale: float | None = None  # None: auto
    scale: str = "blocks"  # prompt lengths: "blocks" (every block scaled, mean = context) or "exact" (all = context)
    clip_factor: float = 4.0  # "blocks": prompts cut at clip_factor * context tokens
    path: str = "graph"  # "graph": init_forward_metadata_out_graph on the padded replay view; "eager"
    heads: tuple[int, int, int] = LLAMA3_8B
    pad: bool = True  # graph path: pad to SGLang's capture sizes as DecodeCudaGraphRunner does
    gc_freeze: bool = True
    stagger_fill: bool = True  # the first ``batch`` requests get a uniform fraction of their output length
    pool_headroom: float = 1.3  # KV slots = headroom * batch * (context + max_output) (+ slack): room for the cache
    progress: bool = False
    # The dispatch gate (pat_sglang.dispatch): False times PAT's full host path on every step (each planned and loaded);
    # True runs the server's default gate, under which batches that share too little get no plan and no load.
    gate: bool = False
    # Cold caches: after every decode step (outside the timed region) one write per 64-byte line over a buffer of this
    # many MiB, as other host work between steps evicts the host path's data (0: none)
    evict_mib: int = 0


@dataclass
class StepRecord:
    host_us: float
    batch_size: int
    context_tokens: int
    arrivals: int  # trace requests queued since the previous decode step
    joined: int  # requests in this decode batch that were not in the previous one
    left: int  # requests of the previous decode batch that finished
    gc: int = 0  # garbage collections that ran inside the timed region
    publish_us: float = 0.0  # the publish_decode_batch part of host_us
    split_search: bool = False  # plan_forest's cost model compared split lengths in this step (StepPhases)
    declined: bool = False  # the dispatch gate gave this step's batch to the delegate (no plan loaded)
    forest: str = "none"  # how the step's forest came about (StepPhases.forest: none, reused, edited, built, remade)
    forest_us: float = 0.0  # building, editing or growing it (StepPhases.forest_s)
    plan_us: float = 0.0  # plan_forest, or the re-made plan (StepPhases.plan_s)


@dataclass
class PointResult:
    config: PointConfig
    time_scale: float
    records: list[StepRecord] = field(default_factory=list)
    untimed_steps: int = 0  # decode steps before the timed ones (fill + warm-up): planned, not timed
    prefill_iterations: int = 0
    chunked_iterations: int = 0  # prefill iterations that left a request mid-prompt (a chunk, more to come)
    chunked_prompts: int = 0  # requests whose prompt was prefilled over more than one iteration
    timed_chunked_iterations: int = 0  # ... of the above, between the first and the last timed step
    admitted: int = 0
    finished: int = 0
    finished_at_prefill: int = 0  # output length 1: done without a decode step
    prompt_tokens: int = 0
    cache_hit_tokens: int = 0
    evictions: int = 0
    wall_s: float = 0.0
    gc_frozen: bool = False
    backend: Any = None

    @property
    def host_us(self) -> np.ndarray:
        return np.array([r.host_us for r in self.records], dtype=np.float64)

    def summary(self) -> dict[str, float]:
        t = self.host_us
        if not t.size:
            return {}
        recs = self.records
        worst = int(np.argmax(t))
        return {
            "steps": float(t.size),
            "mean_bs": float(np.mean([r.batch_size for r in recs])),
            "mean_ctx": float(np.mean([r.context_tokens / max(r.batch_size, 1) for r in recs])),
            "pub_p50": float(np.percentile([r.publish_us for r in recs], 50)),
            "pub_max": float(max(r.publish_us for r in recs)),
            "p50": float(np.percentile(t, 50)),
            "p99": float(np.percentile(t, 99)),
            "max": float(t.max()),
            "arrivals": float(sum(r.arrivals for r in recs)),
            "joined": float(sum(r.joined for r in recs)),
            "left": float(sum(r.left for r in recs)),
            "worst_joined": float(recs[worst].joined),
            "worst_left": float(recs[worst].left),
            "steps_changed": float(sum(1 for r in recs if r.joined or r.left)),
            "steps_gc": float(sum(1 for r in recs if r.gc)),
            "worst_gc": float(recs[worst].gc),
            "worst_search": float(recs[worst].split_search),
            "steps_search": float(sum(1 for r in recs if r.split_search)),
            "search_p50": float(np.percentile([r.host_us for r in recs if r.split_search] or [math.nan], 50)),
            "steps_declined": float(sum(1 for r in recs if r.declined)),
            "served_p50": float(np.percentile([r.host_us for r in recs if not r.declined] or [math.nan], 50)),
            # the slowest step no collection ran in: the host path's own worst (gc_pauses)
            "max_nogc": float(max((r.host_us for r in recs if not r.gc), default=math.nan)),
        }

    def verdict(self) -> str:
        s = self.summary()
        if not s:
            return "no steps"
        missed = [name for name, value, limit in (("p50", s["p50"], TARGET_P50_US), ("p99", s["p99"], TARGET_P99_US),
                                                  ("max", s["max"], TARGET_MAX_US)) if value > limit]
        return "yes" if not missed else "no: " + ",".join(missed)


def auto_time_scale(specs: Sequence[RequestSpec], cfg: PointConfig) -> float:
    """Scale for the trace's timestamps: arrivals at ``ARRIVAL_HEADROOM`` times the rate a server at ``cfg.batch`` x
    ``cfg.context`` could serve if nothing were cached (each finish costs its prompt's prefill time plus ``output /
    batch`` decode steps), so the waiting queue never runs dry and the batch stays at its cap."""
    span_s = (specs[-1].arrival_ms - specs[0].arrival_ms) / 1e3
    trace_rate = len(specs) / max(span_s, 1e-9)
    mean_out = float(np.mean([min(s.output_len, cfg.max_output) for s in specs]))
    per_request_s = cfg.context / (cfg.prefill_tok_per_ms * 1e3) + mean_out * cfg.step_ms / 1e3 / cfg.batch
    return trace_rate * per_request_s / ARRIVAL_HEADROOM


class _Waiting:
    """A queued request: its spec, and its ``Req`` once the scheduler first tries it (the token ids are built then)."""

    __slots__ = ("spec", "req")

    def __init__(self, spec: RequestSpec) -> None:
        self.spec = spec
        self.req: Req | None = None


class ServerSim:
    """SGLang's scheduler loop over a real RadixCache / ReqToTokenPool / allocator, minus the model."""

    def __init__(self, cfg: PointConfig, specs: Sequence[RequestSpec], time_scale: float) -> None:
        self.cfg = cfg
        if cfg.scale not in ("blocks", "exact"):
            raise ValueError(f"scale must be 'blocks' or 'exact', not {cfg.scale!r}")
        longest = cfg.context if cfg.scale == "exact" else int(cfg.clip_factor * cfg.context)
        self.clip = longest
        self.block_factor = cfg.context / float(np.mean([s.input_len for s in specs])) if specs else 1.0
        self.max_context = longest + cfg.max_output + 8
        slots = int(cfg.pool_headroom * cfg.batch * (cfg.context + cfg.max_output + 1)) + 2 * cfg.chunk + longest
        self.num_slots = slots
        self.h = RadixHarness(page_size=1, num_slots=slots, max_reqs=cfg.batch + 2, max_context=self.max_context)
        self.cache = self.h.cache
        self.pool = self.h.req_to_token_pool
        self.allocator = self.h.allocator
        self.r2t = self.pool.req_to_token.numpy()  # shares memory with the pool's tensor
        self.pending = deque(sorted(specs, key=lambda s: (s.arrival_ms, s.rid)))
        self.t0_ms = self.pending[0].arrival_ms if self.pending else 0.0
        self.time_scale = time_scale
        self.waiting: deque[_Waiting] = deque()
        self.running: list[Req] = []
        self.chunked: Req | None = None
        self.out_base: dict[str, int] = {}  # rid -> first generated token id
        self.clock_ms = 0.0
        self.res: PointResult | None = None
        self.stagger_left = cfg.batch if cfg.stagger_fill else 0  # the initial population: see _make_req
        # since the last decode step
        self.arrived = self.joined = self.left = 0
        # the running ScheduleBatch as the publishing patch reads it (one object; .reqs replaced when it changes)
        self.sched = SimpleNamespace(
            forward_mode=ForwardMode.DECODE, reqs=self.running, tree_cache=self.cache, req_to_token_pool=self.pool
        )

    # ----------------------------------------------------------------------------------------- requests
    def arrive(self) -> None:
        while self.pending and (self.pending[0].arrival_ms - self.t0_ms) * self.time_scale <= self.clock_ms:
            self.waiting.append(_Waiting(self.pending.popleft()))
            self.arrived += 1

    def next_arrival_ms(self) -> float | None:
        return (self.pending[0].arrival_ms - self.t0_ms) * self.time_scale if self.pending else None

    def _make_req(self, spec: RequestSpec) -> Req:
        out = max(1, min(spec.output_len, self.cfg.max_output))
        if self.stagger_left > 0:
            # The first batch of requests (the server's initial population) get the residual output of a request met
            # at a random point of its life, as in a server that has been running for a while: without it they all
            # start together, most reach the --max-output cap together, and finish (and are replaced) in waves.
            self.stagger_left -= 1
            out = 1 + int(random.Random(spec.rid).random() * out)
        if self.cfg.scale == "exact":
            segments = exact_segments(spec, self.cfg.context)
        else:
            segments = block_segments(spec, self.block_factor, self.clip)
        scaled = RequestSpec(spec.rid, spec.arrival_ms, segments, out)
        sp = SamplingParams(max_new_tokens=scaled.output_len)
        sp.normalize(None)
        req = Req(f"r{spec.rid}", "", scaled.prompt_tokens(), sp, vocab_size=VOCAB)
        self.out_base[req.rid] = OUTPUT_TOKEN_BASE + spec.rid * SEGMENT_STRIDE_TOKENS
        return req

    def _next_token(self, req: Req) -> int:
        return self.out_base[req.rid] + len(req.output_ids)

    def _reserved(self) -> int:
        """KV the running requests will still allocate for their outputs."""
        return sum(r.sampling_params.max_new_tokens - len(r.output_ids) for r in self.running)

    def _release(self, req: Req) -> None:
        """``mem_cache.common.release_kv_cache`` for a plain request (no spec decoding, nothing over-allocated)."""
        self.cache.cache_finished_req(req, kv_len_to_handle=req.kv_committed_len)
        self.pool.free(req)
        req.kv = None
        self.out_base.pop(req.rid, None)
        res = self.res
        if res is not None:
            res.finished += 1

    # ------------------------------------------------------------------------------------------ prefill
    def prefill_iteration(self) -> bool:
        """One prefill batch if the scheduler would run one now; False if it would decode instead."""
        cfg, res = self.cfg, self.res
        assert res is not None
        cr = self.chunked
        if cr is not None and cr.extend_range.end > len(cr.prefix_indices):
            self.cache.cache_unfinished_req(cr, chunked=True)  # Scheduler.stash_chunked_request
        room_for = cfg.batch - len(self.running) - (1 if cr is not None else 0)
        if cr is None and (room_for <= 0 or not self.waiting):
            return False
        budget = cfg.chunk
        can_run: list[Req] = []
        if cr is not None:  # PrefillAdder.add_chunked_req
            cr.init_next_round_input()
            start = len(cr.prefix_indices)
            left = len(cr.full_untruncated_fill_ids) - start
            n = min(left, budget)
            cr.set_extend_range(start, start + n)
            can_run.append(cr)
            budget -= n
            self.chunked = cr if left > n else None
        new_chunked: Req | None = None
        if self.chunked is None:
            rem_total = self.allocator.available_size() + self.cache.evictable_size() - self._reserved()
            if cr is not None:  # the chunked request's last chunk (this iteration) and its outputs
                rem_total -= cr.extend_range.length + cr.sampling_params.max_new_tokens
            while self.waiting and budget > 0 and len(can_run) - (1 if cr is not None else 0) < room_for:
                item = self.waiting[0]
                if item.req is None:
                    item.req = self._make_req(item.spec)
                req = item.req
                req.init_next_round_input(self.cache)  # radix match
                start = len(req.prefix_indices)
                extend = len(req.full_untruncated_fill_ids) - start
                total = extend + req.sampling_params.max_new_tokens
                if total >= rem_total:  # AddReqResult.NO_TOKEN
                    break
                self.waiting.popleft()
                self.cache.inc_lock_ref(req.last_node)  # PrefillAdder._req_inc_lock_ref
                res.admitted += 1
                res.prompt_tokens += len(req.full_untruncated_fill_ids)
                res.cache_hit_tokens += start
                if extend <= budget:
                    req.set_extend_range(start, start + extend)
                    budget -= extend
                else:  # chunked prefill: the rest of the budget now, more chunks in the next iterations
                    req.set_extend_range(start, start + budget)
                    budget = 0
                    new_chunked = req
                    res.chunked_prompts += 1
                can_run.append(req)
                rem_total -= total
                if new_chunked is not None:
                    break
        if not can_run:
            return False
        if new_chunked is not None:
            self.chunked = new_chunked
        self._run_prefill(can_run)
        return True

    def _run_prefill(self, can_run: list[Req]) -> None:
        """``prepare_for_extend`` (slots, req_to_token) and ``process_batch_result_prefill``."""
        res = self.res
        assert res is not None
        self.pool.alloc(can_run)  # a chunked request keeps its row
        total = sum(r.extend_range.length for r in can_run)
        before = self.cache.evictable_size()
        loc = alloc_token_slots(self.cache, total).numpy()  # evicts LRU cache leaves when short
        if self.cache.evictable_size() < before:
            res.evictions += 1
        pt = 0
        for r in can_run:
            row, start, end = r.req_pool_idx, len(r.prefix_indices), r.extend_range.end
            if start:
                self.r2t[row, :start] = r.prefix_indices.numpy()
            self.r2t[row, start:end] = loc[pt : pt + end - start]
            pt += end - start
            if r.kv is None:
                r.kv = ReqKvInfo(kv_allocated_len=end, swa_evicted_seqlen=0)
            else:
                r.kv.kv_allocated_len = end
            r.kv_committed_len = end
        if self.chunked is not None:
            self.chunked.inflight_middle_chunks += 1
            res.chunked_iterations += 1
        res.prefill_iterations += 1
        self.clock_ms += total / self.cfg.prefill_tok_per_ms
        merged: list[Req] = []
        for r in can_run:
            if r.inflight_middle_chunks > 0:  # a middle chunk: nothing to output yet
                r.inflight_middle_chunks -= 1
                continue
            r.output_ids.append(self._next_token(r))
            r.update_finish_state()
            if r.finished():
                self._release(r)
                res.finished_at_prefill += 1
            else:
                self.cache.cache_unfinished_req(r)
                merged.append(r)
        if merged:  # merge_batch: the new requests join the running batch at its end
            self.running = self.running + merged
            self.joined += len(merged)

    # ------------------------------------------------------------------------------------------- decode
    def prepare_decode(self) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """``ScheduleBatch.prepare_for_decode``: one KV slot per request, written into req_to_token."""
        reqs = self.running
        n = len(reqs)
        loc = alloc_token_slots(self.cache, n)
        rows = np.fromiter((r.req_pool_idx for r in reqs), dtype=np.int64, count=n)
        cols = np.fromiter((r.kv_committed_len for r in reqs), dtype=np.int64, count=n)
        self.r2t[rows, cols] = loc.numpy()
        for r in reqs:
            r.kv.kv_allocated_len += 1
            r.kv_committed_len += 1
        # ScheduleBatch's host mirrors of the rows and lengths (SGLang keeps both in step with ``reqs``)
        self.sched.reqs = reqs
        self.sched.req_pool_indices_cpu = torch.from_numpy(rows)
        self.sched.seq_lens_cpu = torch.from_numpy(cols + 1)
        return rows, cols + 1, loc

    def finish_decode(self) -> None:
        """``process_batch_result_decode``: one token each; finished requests leave (``release_kv_cache``)."""
        done = False
        for r in self.running:
            r.output_ids.append(self._next_token(r))
            r.update_finish_state()
            done = done or r.finished()
        if done:
            keep = []
            for r in self.running:
                if r.finished():
                    self._release(r)
                    self.left += 1
                else:
                    keep.append(r)
            self.running = keep
        self.clock_ms += self.cfg.step_ms


class ReplayView:
    """The ForwardBatch the backend gets: the graph runner's padded replay view, or the eager ForwardBatch."""

    def __init__(self, cfg: PointConfig, fill_value: int) -> None:
        self.cfg = cfg
        self.sizes = capture_sizes(cfg.batch)
        self.fill = fill_value
        n = self.sizes[-1]
        self.rows = torch.zeros(n, dtype=torch.int64)
        self.seq = torch.zeros(n, dtype=torch.int64)
        self.seq_cpu = torch.zeros(n, dtype=torch.int64)
        self.ids = torch.zeros(n, dtype=torch.int64)

    def build(self, rows: np.ndarray, seq_lens: np.ndarray, loc: torch.Tensor, rids: list[str]) -> SimpleNamespace:
        raw = rows.shape[0]
        if self.cfg.path == "eager":
            seq = torch.from_numpy(seq_lens.copy())
            return SimpleNamespace(  # ForwardBatch.init_new's decode fields
                forward_mode=ForwardMode.DECODE, batch_size=raw, input_ids=self.ids[:raw],
                req_pool_indices=torch.from_numpy(rows.copy()), seq_lens=seq, seq_lens_cpu=seq.clone(),
                seq_lens_sum=int(seq_lens.sum()), out_cache_loc=loc, positions=seq - 1, rids=rids, spec_info=None,
            )
        bs = self.sizes[np.searchsorted(self.sizes, raw)] if self.cfg.pad else raw
        self.rows[:raw] = torch.from_numpy(rows)
        self.rows[raw:bs] = 0
        self.seq[:raw] = torch.from_numpy(seq_lens)
        self.seq[raw:bs] = self.fill
        self.seq_cpu[:bs] = self.seq[:bs]
        return SimpleNamespace(  # decode_cuda_graph_runner.build_replay_fb_view
            batch_size=bs, forward_mode=ForwardMode.DECODE, actual_forward_mode=ForwardMode.DECODE,
            input_ids=self.ids[:bs], positions=self.seq[:bs] - 1, req_pool_indices=self.rows[:bs],
            seq_lens=self.seq[:bs], seq_lens_sum=int(seq_lens.sum()) + (bs - raw) * self.fill,
            seq_lens_cpu=self.seq_cpu[:bs], num_padding=bs - raw, encoder_lens=None, out_cache_loc=loc,
            out_cache_loc_dsv4=None, mamba_track_indices=None, spec_info=None,
        )


def make_backend(sim: ServerSim, cfg: PointConfig) -> PATAttnBackend:
    hq, hkv, d = cfg.heads
    # fake_model_runner's own MHATokenToKVPool is sized by the stand-in's num_slots (2 slots, not gigabytes), then
    # replaced by the zero-memory view pool of the real slot count.
    stub = SimpleNamespace(num_slots=1, page_size=1, max_context=sim.max_context, allocator=sim.allocator,
                           req_to_token_pool=sim.pool)
    runner = fake_model_runner(stub, hq, hkv, d, 1, torch.bfloat16, fill=False,
                               token_to_kv_pool=HostOnlyKVPool(sim.num_slots, hkv, d, torch.bfloat16))
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), min_saved_fraction=None if cfg.gate else 0.0)
    if cfg.path == "graph":
        be.init_cuda_graph_state(cfg.batch, cfg.batch)  # DecodeCudaGraphRunner: max_bs, max_bs tokens
    return be


StepHook = Callable[[ServerSim, PATAttnBackend, SimpleNamespace, StepRecord | None], None]


def run_point(
    cfg: PointConfig,
    specs: Sequence[RequestSpec],
    on_step: StepHook | None = None,
) -> PointResult:
    """Replay ``specs`` at one (batch, context) point until ``cfg.steps`` decode steps are timed (or the trace ends).

    ``on_step(sim, backend, view, record)`` runs after every decode step's timed region (``record`` is None for the
    untimed fill and warm-up steps), before the step's results are processed."""
    if cfg.path not in ("graph", "eager"):
        raise ValueError(f"path must be 'graph' or 'eager', not {cfg.path!r}")
    # As the plugin does when a server starts, before its radix cache exists: publishing's radix split and re-caching
    # counters (without them every step publishes its batch in full) and the decode runner's per-variant graphs
    apply_patches()
    wall0 = time.perf_counter()
    scale = cfg.time_scale if cfg.time_scale is not None else auto_time_scale(specs, cfg)
    sim = ServerSim(cfg, specs, scale)
    res = PointResult(config=cfg, time_scale=scale)
    sim.res = res
    be = make_backend(sim, cfg)
    res.backend = be
    fill_value = int(be.get_cuda_graph_seq_len_fill_value()) if hasattr(be, "get_cuda_graph_seq_len_fill_value") else 1
    view_maker = ReplayView(cfg, fill_value)
    prepare = be.init_forward_metadata_out_graph if cfg.path == "graph" else be.init_forward_metadata
    publish = publish_decode_batch
    perf = time.perf_counter
    evict = np.zeros(cfg.evict_mib << 17, dtype=np.int64) if cfg.evict_mib > 0 else None  # 8-byte elements

    bar = None
    if cfg.progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.warmup + cfg.steps, desc=f"bs{cfg.batch} ctx{cfg.context} fill", leave=False,
                       file=sys.stderr, mininterval=0.5)
        except ImportError:  # pragma: no cover - tqdm is in the venv
            bar = None

    started = False
    warm = 0
    chunked_at_start = 0
    decode_steps = 0
    gc_was_frozen = False
    try:
        while len(res.records) < cfg.steps:
            sim.arrive()
            if sim.prefill_iteration():
                continue
            if not sim.running:
                nxt = sim.next_arrival_ms()
                if nxt is None and not sim.waiting:
                    break  # the trace ran out before enough steps were timed
                if nxt is not None and not sim.waiting:
                    sim.clock_ms = max(sim.clock_ms, nxt)
                continue
            full = len(sim.running) >= cfg.fill_fraction * cfg.batch
            if not started and (full or decode_steps >= cfg.max_fill_steps):
                started = True
                if cfg.gc_freeze:
                    gc.collect()
                    gc.freeze()
                    gc_was_frozen = res.gc_frozen = True
                if bar is not None:
                    bar.set_description(f"bs{cfg.batch} ctx{cfg.context}")
            rows, seq_lens, loc = sim.prepare_decode()
            rids = [r.rid for r in sim.running] if cfg.path == "eager" else []
            view = view_maker.build(rows, seq_lens, loc, rids)
            counters = be.planner.counters
            declined0 = counters.declined
            gc0 = GC_PAUSES.mark()
            t0 = perf()
            publish(sim.sched)
            tp = perf()
            prepare(view)
            t1 = perf()
            decode_steps += 1
            rec = None
            if started and warm >= cfg.warmup:
                if not res.records:
                    chunked_at_start = res.chunked_iterations
                phases = be.planner.phases
                rec = StepRecord((t1 - t0) * 1e6, len(rows), int(seq_lens.sum()), sim.arrived, sim.joined, sim.left,
                                 GC_PAUSES.since(gc0).collections, (tp - t0) * 1e6, phases.split_search,
                                 counters.declined > declined0, phases.forest, phases.forest_s * 1e6,
                                 phases.plan_s * 1e6)
                res.records.append(rec)
            else:
                res.untimed_steps += 1
                warm += started
            if bar is not None and started:
                bar.update(1)
                if decode_steps % 16 == 0:
                    bar.set_postfix(bs=len(rows), prefills=res.prefill_iterations)
            sim.arrived = sim.joined = sim.left = 0
            if evict is not None:
                evict[::CACHE_LINE_INT64] += 1
            if on_step is not None:
                on_step(sim, be, view, rec)
            sim.finish_decode()
    finally:
        if bar is not None:
            bar.close()
        if gc_was_frozen:
            gc.unfreeze()
    res.timed_chunked_iterations = res.chunked_iterations - chunked_at_start if res.records else 0
    res.wall_s = time.perf_counter() - wall0
    return res


def quick_config(**over: Any) -> PointConfig:
    """The ``--quick`` point: batch 8, context 1k, chunks of 256 (every uncached prompt is chunked), short outputs."""
    base = dict(batch=8, context=1024, chunk=256, max_output=24, steps=40, warmup=5, gc_freeze=False)
    base.update(over)
    return PointConfig(**base)


def format_phases(results: Sequence[PointResult]) -> str:
    """Per point and per kind of step (how its forest came about), the medians of the host time and its parts:
    publishing, the forest, ``plan_forest`` and the rest (the backend's batch, the decode-step planner's own work, the
    static-buffer load)."""
    head = (f"{'batch':>5} {'ctx':>6} {'forest':>8} {'steps':>5} {'host_p50':>8} {'publish':>7} {'forest_us':>9} "
            f"{'plan_us':>7} {'rest':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        c = r.config
        for kind in sorted({rec.forest for rec in r.records}):
            recs = [rec for rec in r.records if rec.forest == kind]
            host, pub, forest, plan = (np.array([getattr(x, f) for x in recs], dtype=np.float64)
                                       for f in ("host_us", "publish_us", "forest_us", "plan_us"))
            lines.append(f"{c.batch:>5} {c.context:>6} {kind:>8} {len(recs):>5} {np.median(host):>8.1f} "
                         f"{np.median(pub):>7.1f} {np.median(forest):>9.1f} {np.median(plan):>7.1f} "
                         f"{np.median(host - pub - forest - plan):>6.1f}")
    return "\n".join(lines)


def format_table(results: Sequence[PointResult]) -> str:
    head = (f"{'batch':>5} {'ctx':>6} {'steps':>5} {'mean_bs':>7} {'ctx/req':>7} {'p50_us':>8} {'p99_us':>8} "
            f"{'max_us':>8} {'pub_p50':>7} {'pub_max':>7} {'arrive':>6} {'join':>5} {'leave':>5} {'chg':>4} "
            f"{'chunks':>6} {'gc':>3} {'srch':>4} {'srch_p50':>8} {'decl':>4} {'pat_p50':>7} {'worst':>15} "
            f"{'max_nogc':>8} "
            f"{'tscale':>7} {'wall_s':>6}  targets")
    lines = [head, "-" * len(head)]
    for r in results:
        s = r.summary()
        c = r.config
        if not s:
            lines.append(f"{c.batch:>5} {c.context:>6}  no decode steps timed")
            continue
        worst = (f"+{int(s['worst_joined'])}/-{int(s['worst_left'])}" + (" gc" if s["worst_gc"] else "")
                 + (" srch" if s["worst_search"] else ""))
        lines.append(
            f"{c.batch:>5} {c.context:>6} {int(s['steps']):>5} {s['mean_bs']:>7.1f} {s['mean_ctx']:>7.0f} "
            f"{s['p50']:>8.1f} {s['p99']:>8.1f} {s['max']:>8.1f} {s['pub_p50']:>7.1f} {s['pub_max']:>7.1f} "
            f"{int(s['arrivals']):>6} {int(s['joined']):>5} "
            f"{int(s['left']):>5} {int(s['steps_changed']):>4} {r.timed_chunked_iterations:>6} {int(s['steps_gc']):>3} "
            f"{int(s['steps_search']):>4} {s['search_p50']:>8.1f} {int(s['steps_declined']):>4} "
            f"{s['served_p50']:>7.1f} {worst:>15} {s['max_nogc']:>8.1f} "
            f"{r.time_scale:>7.3f} {r.wall_s:>6.1f}  {r.verdict()}"
        )
    return "\n".join(lines)


def legend(results: Sequence[PointResult], trace: Path | str) -> str:
    c = results[0].config if results else PointConfig(0, 0)
    frozen = any(r.gc_frozen for r in results)
    hq, hkv, d = c.heads
    what = ("publish_decode_batch + init_forward_metadata_out_graph (CUDA-graph replay view, padded to SGLang's "
            "capture sizes)" if c.path == "graph" else "publish_decode_batch + init_forward_metadata (eager)")
    return "\n".join([
        f"host time per decode step = {what}; heads {hq} q / {hkv} kv, d={d}, bf16; 1 torch thread",
        "dispatch gate: " + ("on (the server's default: batches sharing too little get no plan)" if c.gate else
                             "off (every step planned and loaded: PAT's full host path)"),
        f"trace {trace}; chunk {c.chunk} tokens; outputs capped at {c.max_output}; decode step {c.step_ms:g} ms, "
        f"prefill {c.prefill_tok_per_ms:g} tok/ms (simulated clock); tscale = factor on trace timestamps",
        f"gc.freeze() after the fill: {'yes' if frozen else 'no'}; timing starts when the batch first reaches "
        f"{c.fill_fraction:.0%} of its cap, after {c.warmup} more warm-up steps"
        + (f"; caches made cold between steps (a write to every line of {c.evict_mib} MiB)" if c.evict_mib else ""),
        "pub_p50/pub_max: the publish_decode_batch part of the host time (us); "
        "arrive/join/leave: trace arrivals / requests joining / requests finishing between timed steps (sums); "
        "chg: timed steps whose batch changed; chunks: chunked-prefill iterations in the timed window; "
        "gc: timed steps during which the garbage collector ran; srch / srch_p50: timed steps in which plan_forest's "
        "cost model compared split lengths, and their p50 host time (us); decl / pat_p50: timed steps the dispatch "
        "gate gave to the delegate, and the p50 host time of the others (PAT's) (us); worst: joins/leaves at the "
        "slowest step "
        "(gc: a collection ran in it; srch: a split search); max_nogc: the slowest step no collection ran in (us)",
        f"targets: p50 <= {TARGET_P50_US:g} us, p99 <= {TARGET_P99_US:g} us, max <= {TARGET_MAX_US:g} us",
    ])


def run_plan_speed() -> str:
    """``bench/plan_speed.py``'s numbers (its own process: its planner timings are not disturbed by this one's heap)."""
    script = ROOT / "bench" / "plan_speed.py"
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bench/plan_speed.py did not run: {e!r}"
    text = out.stdout.strip()
    if out.returncode != 0:
        text += f"\n(exit {out.returncode})\n" + "\n".join(out.stderr.strip().splitlines()[-8:])
    return text


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "pat_sglang"], capture_output=True, text=True, cwd=ROOT,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "git: unavailable"
    return f"git {head or '?'}" + (" (uncommitted changes in pat_sglang/)" if dirty else "")


def main(argv: list[str] | None = None) -> list[PointResult]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=("mooncake", "gsp"), default="mooncake",
                    help="mooncake: the --trace file; gsp: SGLang's generated-shared-prefix defaults (see above)")
    ap.add_argument("--rate", type=float, default=None,
                    help="--workload gsp: arrivals per second (default: all at once)")
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake trace (JSON lines)")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="running-batch caps (default 64 256)")
    ap.add_argument("--context", nargs="+", default=None, help="prompt lengths, e.g. 1k 4k 16k 32k (the default)")
    ap.add_argument("--scale", choices=("blocks", "exact"), default="blocks",
                    help="blocks: every hash-id block scaled so the mean prompt is --context (the trace's sharing "
                    "kept exactly; prompts cut at --clip-factor x context); exact: every prompt exactly --context "
                    "tokens, its own hash ids repeated or cut (sharing beyond the trace's prompts is lost)")
    ap.add_argument("--clip-factor", type=float, default=4.0, help="--scale blocks: longest prompt / --context")
    ap.add_argument("--chunk", type=int, default=None, help="chunked-prefill size in tokens (default 8192)")
    ap.add_argument("--max-output", type=int, default=None, help="cap on output lengths (default 256)")
    ap.add_argument("--steps", type=int, default=None, help="timed decode steps per point (default 2000)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the fill (default 10)")
    ap.add_argument("--time-scale", default="auto", help="factor on trace timestamps, or 'auto'")
    ap.add_argument("--step-ms", type=float, default=20.0, help="simulated time of one decode step")
    ap.add_argument("--prefill-tok-per-ms", type=float, default=40.0, help="simulated prefill speed")
    ap.add_argument("--path", choices=("graph", "eager"), default="graph")
    ap.add_argument("--heads", default="32,8,128", help="q heads, kv heads, head dim (default Llama-3-8B)")
    ap.add_argument("--no-pad", action="store_true", help="graph path: do not pad to the capture sizes")
    ap.add_argument("--no-gc-freeze", action="store_true", help="leave the heap unfrozen after the fill")
    ap.add_argument("--no-stagger", action="store_true", help="full output lengths for the initial population too")
    ap.add_argument("--no-plan-speed", action="store_true", help="skip bench/plan_speed.py at the end")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--gate", action="store_true",
                    help="the server's dispatch gate: too little sharing, no plan (default: plan every step)")
    ap.add_argument("--csv", type=Path, default=None, help="write every timed step here")
    ap.add_argument("--phases", action="store_true",
                    help="also the host time's parts per kind of step (publishing, forest, plan_forest, the rest)")
    ap.add_argument("--evict-mib", type=int, default=0,
                    help="cold caches: touch every cache line of a buffer of this many MiB between decode steps")
    ap.add_argument("--quick", action="store_true", help="batch 8, context 1k, chunk 256, 40 steps (tests)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # as backend_host_time.py: the scheduler's host thread, not a BLAS pool
    gsp = args.workload == "gsp"
    if args.rate is not None and (not gsp or args.rate <= 0):
        ap.error("--rate takes a positive rate and --workload gsp")
    specs = gsp_specs(args.rate) if gsp else load_mooncake(args.trace)
    heads = tuple(int(x) for x in args.heads.split(","))
    if len(heads) != 3:
        ap.error("--heads takes three integers: q heads, kv heads, head dim")
    base = quick_config() if args.quick else PointConfig(batch=0, context=0)
    over: dict[str, Any] = {
        "path": args.path, "heads": heads, "pad": not args.no_pad, "step_ms": args.step_ms,
        "prefill_tok_per_ms": args.prefill_tok_per_ms,
        "progress": not args.no_progress and not args.quick,
        # gsp: its own arrival times (auto would rescale a --rate to the service rate)
        "time_scale": (1.0 if gsp else None) if args.time_scale == "auto" else float(args.time_scale),
        "scale": args.scale, "clip_factor": args.clip_factor, "gate": args.gate, "evict_mib": args.evict_mib,
    }
    if not args.quick:
        over["gc_freeze"] = not args.no_gc_freeze
    if args.no_stagger:
        over["stagger_fill"] = False
    for name in ("chunk", "max_output", "steps", "warmup"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    batches = args.batch or ([base.batch] if args.quick else list(DEFAULT_BATCHES))
    contexts = [parse_tokens(c) for c in args.context] if args.context else (
        [base.context] if args.quick else [specs[0].input_len] if gsp else list(DEFAULT_CONTEXTS))

    load0 = os.getloadavg()[0]
    results: list[PointResult] = []
    for bs in batches:
        for ctx in contexts:
            cfg = PointConfig(**{**base.__dict__, **over, "batch": bs, "context": ctx})
            r = run_point(cfg, specs)
            results.append(r)
            s = r.summary()
            if s:
                print(f"  bs {bs} ctx {ctx}: {int(s['steps'])} steps, p50 {s['p50']:.1f} us, p99 {s['p99']:.1f} us, "
                      f"max {s['max']:.1f} us ({r.wall_s:.0f} s)", file=sys.stderr, flush=True)
    print(format_table(results))
    if args.phases:
        print(format_phases(results))
    print(legend(results, "generated-shared-prefix defaults" + (f" at {args.rate:g} req/s" if args.rate else
                                                                ", all at once") if gsp else args.trace))
    print(f"{git_state()}; load average (1 min) {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end "
          f"on {os.cpu_count()} CPUs (other processes inflate the times)")
    if args.csv is not None:
        with open(args.csv, "w") as f:
            f.write("batch,context,step,host_us,publish_us,batch_size,context_tokens,arrivals,joined,left,gc,"
                    "split_search\n")
            for r in results:
                for i, rec in enumerate(r.records):
                    f.write(f"{r.config.batch},{r.config.context},{i},{rec.host_us:.2f},{rec.publish_us:.2f},"
                            f"{rec.batch_size},{rec.context_tokens},{rec.arrivals},{rec.joined},{rec.left},{rec.gc},"
                            f"{int(rec.split_search)}\n")
    if not args.no_plan_speed and not args.quick:
        print("\nbench/plan_speed.py:")
        print(run_plan_speed())
    return results


if __name__ == "__main__":
    main()
