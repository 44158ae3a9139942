"""Replay a workload through SGLang's real RadixCache and a simulated continuous-batching decode loop.

Role in pack-forward-merge: an offline measurement of *pack*. At (sampled) decode steps it builds the prefix
forest exactly as the SGLang backend does (``pat_sglang.radix.request_chain`` from each running request's
``last_node`` plus its private tail in ``req_to_token`` -> ``PrefixForest.from_chains``), plans it with
``plan_forest`` and records what per-request decode, the PAT plan (forward + merge) and the unique-KV floor
would read from HBM in that step.

What is real and what is simulated:

* Real SGLang 0.5.17 objects on the CPU: ``RadixCache`` (page size 1, LRU eviction), ``ReqToTokenPool`` and
  ``TokenToKVPoolAllocator`` (no KV tensors: only slot indices matter here).
* The cache is driven through its public API (``match_prefix``, ``insert``, ``inc_lock_ref``,
  ``dec_lock_ref``, ``evict``, ``evictable_size``) in the same order as ``Req.init_next_round_input`` +
  ``cache_unfinished_req`` (after prefill) and ``cache_finished_req`` (at finish). Real ``Req`` objects are not
  used: they carry sampling, detokenization and grammar state irrelevant here and their
  ``origin_input_ids + output_ids`` list concatenations would be rebuilt per request (not measured; the
  public-API path keeps the 12k-request replay in minutes on 2 cores). A small ``_Running`` record carries the
  fields the pool and cache read (``req_pool_idx``, ``last_node``, ``cache_protected_len``).
* Scheduling is a simplified SGLang scheduler: FIFO waiting queue, a prefill batch (at most
  ``max_prefill_tokens`` new tokens, at least one request) whenever requests wait and fit, then one decode step
  of every running request. Admission needs the batch cap (``max_running``) and room in the KV pool for the
  uncached prompt plus the request's whole remaining output, after what running requests have reserved
  (conservative: no retraction is ever needed). Unlocked radix nodes are evicted (LRU) when the pool runs out.
  Within one prefill batch, requests match and insert one after the other (SGLang matches the batch first),
  so a prompt shared inside one prefill batch is computed once here.
* Time: ``decode_step_ms`` per decode step and ``new_tokens / prefill_tokens_per_ms`` per prefill batch; a crude
  clock that only decides which requests overlap. Arrivals come from the workload.
* SGLang semantics kept: the first output token comes from prefill, so a request with ``output_len = o`` takes
  part in ``o - 1`` decode steps; at decode step ``i`` (1-based) its KV holds ``input_len + i`` tokens (the new
  token's KV is written in that step). At most ``input_len - 1`` prompt tokens are taken from the cache (the
  last prompt token is always recomputed, as ``init_next_round_input`` does).

Bytes are per decode step over all ``num_layers`` layers: ``PlanStats`` counts one layer, all KV heads.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import DeviceSpec, HeadConfig
from ..forest import PrefixForest
from ..planner import plan_forest
from ..radix import chain_tail, request_chain
from .workloads import RequestSpec

LLAMA3_8B_HEADS = HeadConfig(num_q_heads=32, num_kv_heads=8, head_dim=128, dtype=torch.bfloat16)
LLAMA3_8B_LAYERS = 32
# KV pool of one H100 80 GB serving Llama-3-8B bf16: about 0.9 * 80 GB minus 16 GB of weights, at 128 KiB of
# KV per token (32 layers x 4 KiB), rounded down.
DEFAULT_KV_POOL_TOKENS = 400_000
DEFAULT_MAX_RUNNING = 128
DEFAULT_MAX_PREFILL_TOKENS = 16384  # SGLang's default --max-prefill-tokens
DEFAULT_DECODE_STEP_MS = 20.0
DEFAULT_PREFILL_TOKENS_PER_MS = 40.0  # 40k prompt tokens/s
DEFAULT_RECORD_EVERY = 10
PROGRESS_INTERVAL_S = 1.0  # seconds between progress-bar refreshes


def _import_sglang() -> dict[str, Any]:
    """SGLang's cache classes; imported lazily (the import takes seconds and prints CUDA warnings)."""
    logging.getLogger("sglang").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
        from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
        from sglang.srt.mem_cache.cache_init_params import CacheInitParams
        from sglang.srt.mem_cache.memory_pool import ReqToTokenPool
        from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey
    return {
        "TokenToKVPoolAllocator": TokenToKVPoolAllocator,
        "EvictParams": EvictParams,
        "InsertParams": InsertParams,
        "MatchPrefixParams": MatchPrefixParams,
        "CacheInitParams": CacheInitParams,
        "ReqToTokenPool": ReqToTokenPool,
        "RadixCache": RadixCache,
        "RadixKey": RadixKey,
    }


@dataclass(frozen=True)
class ReplayConfig:
    heads: HeadConfig = LLAMA3_8B_HEADS
    num_layers: int = LLAMA3_8B_LAYERS
    device: DeviceSpec = field(default_factory=DeviceSpec)
    max_running: int = DEFAULT_MAX_RUNNING
    kv_pool_tokens: int = DEFAULT_KV_POOL_TOKENS
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    decode_step_ms: float = DEFAULT_DECODE_STEP_MS
    prefill_tokens_per_ms: float = DEFAULT_PREFILL_TOKENS_PER_MS
    record_every: int = DEFAULT_RECORD_EVERY  # plan and record every k-th decode step (1 = all)
    finished_insert: bool = True  # insert prompt + output at finish (SGLang's default)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_running < 1 or self.kv_pool_tokens < 1 or self.record_every < 1 or self.num_layers < 1:
            raise ValueError(f"max_running, kv_pool_tokens, record_every, num_layers must be >= 1: {self}")
        if self.decode_step_ms < 0 or self.prefill_tokens_per_ms <= 0:
            raise ValueError("decode_step_ms must be >= 0 and prefill_tokens_per_ms > 0")


@dataclass
class StepRecord:
    """One recorded decode step. Token counts are per step; bytes are per step over all layers."""

    step: int  # decode step index (0-based, counts every step, recorded or not)
    time_ms: float  # simulated clock at the start of the step
    batch_size: int
    waiting: int  # requests queued (arrived, not admitted)
    pool_used_tokens: int  # KV slots allocated (running requests + cached tree)
    cache_evictable_tokens: int
    request_tokens: int  # sum over requests of KV length: what per-request decode reads
    unique_tokens: int  # distinct KV tokens of the batch (the floor)
    shared_tokens: int  # distinct tokens in forest nodes used by more than one request
    shared_token_ratio: float  # shared_tokens / request_tokens
    shared_read_ratio: float  # per-request reads that fall in shared nodes / request_tokens
    dedup_ratio: float  # 1 - unique_tokens / request_tokens
    forest_nodes: int
    bytes_per_request: int  # per-request decode KV reads
    bytes_pat: int  # PAT: planned KV reads + partial (merge) traffic
    bytes_pat_kv: int
    bytes_pat_partials: int
    bytes_unique: int
    pat_saving: float  # 1 - bytes_pat / bytes_per_request
    num_packs: int
    shared_packs: int  # packs serving more than one request
    max_pack_requests: int
    total_splits: int  # sum over packs of KV splits
    max_splits: int
    num_items: int  # CTAs per KV head
    num_partials: int
    max_tile_m: int
    tile_m_counts: str  # "tile_m:packs" pairs, ";"-separated
    forest_ms: float  # chains out of the radix tree + PrefixForest.from_chains
    plan_ms: float  # plan_forest


STEP_COLUMNS = tuple(StepRecord.__dataclass_fields__)


@dataclass
class ReplaySummary:
    workload: str
    requests: int
    finished: int
    dropped: int  # never fit in the KV pool on an empty server
    decode_steps: int
    recorded_steps: int
    record_every: int
    sim_time_s: float
    wall_s: float
    prompt_tokens: int
    cache_hit_tokens: int  # prompt tokens matched in the radix cache at admission
    mean_batch: float
    max_batch: int
    mean_dedup_ratio: float  # unweighted mean over recorded steps
    median_dedup_ratio: float
    p90_dedup_ratio: float
    mean_shared_read_ratio: float
    weighted_dedup_ratio: float  # 1 - sum(unique) / sum(request tokens), over recorded steps
    gb_per_step_per_request: float  # mean over recorded steps, all layers (1e9 bytes)
    gb_per_step_pat: float
    gb_per_step_unique: float
    pat_saving: float  # 1 - sum(bytes_pat) / sum(bytes_per_request)
    unique_saving: float  # 1 - sum(bytes_unique) / sum(bytes_per_request): the bound
    steps_with_shared_pack: float  # fraction of recorded steps whose plan has a pack of >1 request
    plan_ms_mean: float
    plan_ms_p50: float
    plan_ms_p99: float
    forest_ms_mean: float

    @property
    def cache_hit_ratio(self) -> float:
        return self.cache_hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def table(self) -> str:
        rows = [
            ("workload", self.workload),
            ("requests (finished / dropped)", f"{self.requests} ({self.finished} / {self.dropped})"),
            ("decode steps (recorded, every k)", f"{self.decode_steps} ({self.recorded_steps}, k={self.record_every})"),
            ("simulated time", f"{self.sim_time_s:.1f} s"),
            ("wall time", f"{self.wall_s:.1f} s"),
            ("radix cache hit (prompt tokens)", f"{self.cache_hit_ratio:.3f} of {self.prompt_tokens}"),
            ("batch size mean / max", f"{self.mean_batch:.1f} / {self.max_batch}"),
            (
                "dedup ratio 1-unique/request mean/p50/p90",
                _fmt3(self.mean_dedup_ratio, self.median_dedup_ratio, self.p90_dedup_ratio),
            ),
            ("dedup ratio, token-weighted", f"{self.weighted_dedup_ratio:.3f}"),
            ("shared-read ratio mean", f"{self.mean_shared_read_ratio:.3f}"),
            (
                "GB/step per-request / PAT / unique",
                _fmt3(self.gb_per_step_per_request, self.gb_per_step_pat, self.gb_per_step_unique),
            ),
            ("PAT bytes saved vs per-request", f"{self.pat_saving:.3f} (bound {self.unique_saving:.3f})"),
            ("steps with a shared pack", f"{self.steps_with_shared_pack:.3f}"),
            ("plan ms mean / p50 / p99", _fmt3(self.plan_ms_mean, self.plan_ms_p50, self.plan_ms_p99)),
            ("forest ms mean", f"{self.forest_ms_mean:.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _fmt3(a: float, b: float, c: float) -> str:
    return f"{a:.3f} / {b:.3f} / {c:.3f}"


@dataclass(eq=False)
class _Running:
    """What SGLang's ``Req`` carries that the pool and cache read, for one admitted request."""

    spec: RequestSpec
    prompt: Any  # array('q')
    req_pool_idx: int | None = None
    last_node: Any = None
    cache_protected_len: int = 0
    seq_len: int = 0  # KV tokens written
    decoded: int = 0  # decode steps taken
    # read by ReqToTokenPool.alloc for requests that reuse a slot (never the case here)
    inflight_middle_chunks: int = 0
    kv_committed_len: int = 0

    @property
    def decode_steps_total(self) -> int:
        return self.spec.output_len - 1


class RadixReplay:
    """One replay: a fresh cache, a workload, per-step records handed to ``sink``."""

    def __init__(self, config: ReplayConfig, max_context_len: int) -> None:
        self.cfg = config
        self.sg = _import_sglang()
        self.pool = self.sg["ReqToTokenPool"](
            size=config.max_running, max_context_len=max_context_len, device="cpu", enable_memory_saver=False
        )
        self.allocator = self.sg["TokenToKVPoolAllocator"](
            size=config.kv_pool_tokens, dtype=config.heads.dtype, device="cpu", kvcache=None, need_sort=False
        )
        self.cache = self.sg["RadixCache"](
            self.sg["CacheInitParams"](
                disable=False,
                req_to_token_pool=self.pool,
                token_to_kv_pool_allocator=self.allocator,
                page_size=1,
                disable_finished_insert=not config.finished_insert,
            )
        )
        self.req_to_token = self.pool.req_to_token.numpy()  # shares memory with the pool's tensor
        self.running: list[_Running] = []
        self.reserved_tokens = 0  # decode slots the running requests will still allocate
        self.cache_hit_tokens = 0
        self.prompt_tokens = 0
        self._head_prompt: tuple[RequestSpec, Any] | None = None

    # ------------------------------------------------------------------ cache operations (SGLang's order)
    def _key(self, tokens: Any) -> Any:
        return self.sg["RadixKey"](tokens, None)

    def _ensure_free(self, num_tokens: int) -> None:
        short = num_tokens - self.allocator.available_size()
        if short > 0:
            self.cache.evict(self.sg["EvictParams"](num_tokens=short))

    def try_admit(self, spec: RequestSpec, force_fail_if_too_big: bool) -> tuple[bool, int]:
        """Prefill ``spec`` if it fits; returns (admitted, new prompt tokens computed). With
        ``force_fail_if_too_big`` (empty server) a request that can never fit raises ``_TooBig``."""
        # The waiting head is retried every round until it fits: build its token ids once.
        if self._head_prompt is None or self._head_prompt[0] is not spec:
            self._head_prompt = (spec, spec.prompt_tokens())
        prompt = self._head_prompt[1]
        # init_next_round_input: match at most input_len - 1 tokens (the last one is always recomputed)
        match = self.cache.match_prefix(self.sg["MatchPrefixParams"](key=self._key(prompt[:-1])))
        prefix = match.device_indices
        last = match.last_device_node
        self.cache.inc_lock_ref(last)
        new_tokens = len(prompt) - len(prefix)
        need = new_tokens + spec.output_len - 1
        room = self.allocator.available_size() + self.cache.evictable_size() - self.reserved_tokens
        if need > room:
            self.cache.dec_lock_ref(last)
            if force_fail_if_too_big:
                raise _TooBig
            return False, 0
        self._ensure_free(new_tokens)
        slots = self.allocator.alloc(new_tokens)
        if slots is None:
            raise RuntimeError("KV allocator out of slots despite the admission check")
        run = _Running(spec=spec, prompt=prompt, last_node=last, cache_protected_len=len(prefix))
        self.pool.alloc([run])
        row = self.req_to_token[run.req_pool_idx]
        row[: len(prefix)] = prefix.numpy()
        row[len(prefix) : len(prompt)] = slots.numpy()
        run.seq_len = len(prompt)
        self._cache_unfinished(run)
        self.cache_hit_tokens += len(prefix)
        self.prompt_tokens += len(prompt)
        self.reserved_tokens += run.decode_steps_total
        self.running.append(run)
        return True, new_tokens

    def _cache_unfinished(self, run: _Running) -> None:
        """``RadixCache.cache_unfinished_req`` for a request whose prompt was just prefilled."""
        key = self._key(run.prompt)
        kv = torch.from_numpy(self.req_to_token[run.req_pool_idx, : run.seq_len].astype(np.int64))
        result = self.cache.insert(self.sg["InsertParams"](key=key, value=kv))
        self.allocator.free(kv[run.cache_protected_len : result.prefix_len])  # duplicates of cached tokens
        match = self.cache.match_prefix(self.sg["MatchPrefixParams"](key=key))
        new_indices, new_last = match.device_indices, match.last_device_node
        assert len(new_indices) == run.seq_len, (len(new_indices), run.seq_len)
        self.req_to_token[run.req_pool_idx, run.cache_protected_len : len(new_indices)] = new_indices[
            run.cache_protected_len :
        ].numpy()
        run.cache_protected_len = len(new_indices)
        self.cache.dec_lock_ref(run.last_node)
        self.cache.inc_lock_ref(new_last)
        run.last_node = new_last

    def _finish(self, run: _Running) -> None:
        """``RadixCache.cache_finished_req``: insert prompt + output KV, free duplicates, unlock, free the row."""
        kv = torch.from_numpy(self.req_to_token[run.req_pool_idx, : run.seq_len].astype(np.int64))
        if self.cfg.finished_insert:
            tokens = run.prompt + run.spec.output_tokens(run.seq_len - len(run.prompt))
            result = self.cache.insert(self.sg["InsertParams"](key=self._key(tokens), value=kv))
            freed_end = result.prefix_len
        else:
            freed_end = run.seq_len
        self.allocator.free(kv[run.cache_protected_len : freed_end])
        self.cache.dec_lock_ref(run.last_node)
        self.pool.free(run)
        self.reserved_tokens -= run.decode_steps_total - run.decoded

    # ------------------------------------------------------------------ decode
    def decode_step(self) -> None:
        """Allocate and write one KV slot per running request (the token decoded in this step)."""
        n = len(self.running)
        self._ensure_free(n)
        slots = self.allocator.alloc(n)
        if slots is None:
            raise RuntimeError("KV allocator out of slots during decode despite reservations")
        rows = np.fromiter((r.req_pool_idx for r in self.running), dtype=np.int64, count=n)
        cols = np.fromiter((r.seq_len for r in self.running), dtype=np.int64, count=n)
        self.req_to_token[rows, cols] = slots.numpy()
        for r in self.running:
            r.seq_len += 1
            r.decoded += 1
        self.reserved_tokens -= n

    def finish_done(self) -> int:
        done = [r for r in self.running if r.decoded >= r.decode_steps_total]
        if done:
            self.running = [r for r in self.running if r.decoded < r.decode_steps_total]
            for r in done:
                self._finish(r)
        return len(done)

    def forest(self) -> PrefixForest:
        """The decode batch's forest, built as the backend does: radix chain + private tail per request."""
        root = self.cache.root_node
        chains = [request_chain(r.last_node, root) for r in self.running]
        tails = [
            chain_tail(c, self.req_to_token[r.req_pool_idx], r.seq_len)
            for c, r in zip(chains, self.running, strict=True)
        ]
        return PrefixForest.from_chains(chains, tails)


class _TooBig(Exception):
    pass


def _progress_bar(total: int, workload: str):
    """A tqdm bar over finished requests (rate and time left) on stderr; None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"[{workload}] requests", unit="req", file=sys.stderr,
                mininterval=PROGRESS_INTERVAL_S)


def measure_step(forest: PrefixForest, cfg: ReplayConfig) -> tuple[dict[str, Any], float]:
    """Plan ``forest`` and return (step statistics, planner milliseconds)."""
    t0 = time.perf_counter()
    plan = plan_forest(forest, cfg.heads, cfg.device)
    plan_ms = (time.perf_counter() - t0) * 1e3
    st = plan.stats
    assert st is not None
    layers = cfg.num_layers
    req_tok = forest.request_tokens()
    uniq = forest.unique_tokens()
    shared = forest.shared_tokens()
    shared_reads = forest.shared_reads()
    pat = st.kv_bytes_planned + st.partial_bytes
    tiles = Counter(p.tile_m for p in plan.packs)
    out = dict(
        batch_size=forest.num_requests,
        request_tokens=req_tok,
        unique_tokens=uniq,
        shared_tokens=shared,
        shared_token_ratio=shared / req_tok,
        shared_read_ratio=shared_reads / req_tok,
        dedup_ratio=1.0 - uniq / req_tok,
        forest_nodes=forest.num_nodes,
        bytes_per_request=st.kv_bytes_per_request * layers,
        bytes_pat=pat * layers,
        bytes_pat_kv=st.kv_bytes_planned * layers,
        bytes_pat_partials=st.partial_bytes * layers,
        bytes_unique=st.kv_bytes_unique * layers,
        pat_saving=1.0 - pat / st.kv_bytes_per_request,
        num_packs=len(plan.packs),
        shared_packs=sum(1 for p in plan.packs if len(p.requests) > 1),
        max_pack_requests=max(len(p.requests) for p in plan.packs),
        total_splits=sum(p.splits for p in plan.packs),
        max_splits=max(p.splits for p in plan.packs),
        num_items=st.num_items,
        num_partials=st.num_partials,
        max_tile_m=max(tiles),
        tile_m_counts=";".join(f"{m}:{c}" for m, c in sorted(tiles.items())),
    )
    return out, plan_ms


def max_context_len(specs: Iterable[RequestSpec]) -> int:
    return max(s.input_len + s.output_len for s in specs) + 1


def run_replay(
    specs: Sequence[RequestSpec],
    cfg: ReplayConfig,
    sink: Callable[[StepRecord], None],
    workload: str = "workload",
) -> ReplaySummary:
    """Run the whole workload; ``sink`` receives every recorded step (write it out, keep what plots need)."""
    if not specs:
        raise ValueError("empty workload")
    sim = RadixReplay(cfg, max_context_len(specs))
    wall0 = time.perf_counter()  # after the SGLang import and pool allocation (seconds, not replay)
    pending = deque(sorted(specs, key=lambda s: (s.arrival_ms, s.rid)))
    waiting: deque[RequestSpec] = deque()
    clock_ms = 0.0
    step = 0
    finished = dropped = 0
    acc = _Accumulator()
    bar = _progress_bar(len(specs), workload) if cfg.progress else None
    done_shown = 0

    while pending or waiting or sim.running:
        while pending and pending[0].arrival_ms <= clock_ms:
            waiting.append(pending.popleft())
        if not waiting and not sim.running:
            clock_ms = pending[0].arrival_ms
            continue

        # --- prefill batch
        new_tokens = 0
        admitted = 0
        while waiting and len(sim.running) < cfg.max_running and (admitted == 0 or new_tokens < cfg.max_prefill_tokens):
            try:
                ok, n = sim.try_admit(waiting[0], force_fail_if_too_big=not sim.running)
            except _TooBig:
                print(f"warning: request {waiting[0].rid} never fits the KV pool; dropped", file=sys.stderr)
                waiting.popleft()
                dropped += 1
                continue
            if not ok:
                break
            waiting.popleft()
            new_tokens += n
            admitted += 1
        if admitted:
            clock_ms += new_tokens / cfg.prefill_tokens_per_ms
            finished += sim.finish_done()  # output_len == 1: done after prefill

        # --- decode step
        if sim.running:
            t_step = clock_ms
            sim.decode_step()
            if step % cfg.record_every == 0:
                t0 = time.perf_counter()
                forest = sim.forest()
                forest_ms = (time.perf_counter() - t0) * 1e3
                stats, plan_ms = measure_step(forest, cfg)
                rec = StepRecord(
                    step=step,
                    time_ms=t_step,
                    waiting=len(waiting),
                    pool_used_tokens=cfg.kv_pool_tokens - sim.allocator.available_size(),
                    cache_evictable_tokens=sim.cache.evictable_size(),
                    forest_ms=forest_ms,
                    plan_ms=plan_ms,
                    **stats,
                )
                acc.add(rec)
                sink(rec)
            step += 1
            clock_ms += cfg.decode_step_ms
            finished += sim.finish_done()

        if bar is not None and finished + dropped > done_shown:
            bar.update(finished + dropped - done_shown)
            done_shown = finished + dropped
            bar.set_postfix(step=step, batch=len(sim.running), waiting=len(waiting), sim_s=f"{clock_ms / 1e3:.0f}",
                            refresh=False)
    if bar is not None:
        bar.close()

    # Every pool slot is either free or held by the tree once all requests are done: the emulation of
    # cache_unfinished_req / cache_finished_req leaked nothing.
    leaked = cfg.kv_pool_tokens - sim.allocator.available_size() - sim.cache.total_size()
    if leaked:
        raise RuntimeError(f"KV slot accounting is off by {leaked} tokens after the replay")
    return acc.summary(
        workload=workload,
        requests=len(specs),
        finished=finished,
        dropped=dropped,
        decode_steps=step,
        record_every=cfg.record_every,
        sim_time_s=clock_ms / 1e3,
        wall_s=time.perf_counter() - wall0,
        prompt_tokens=sim.prompt_tokens,
        cache_hit_tokens=sim.cache_hit_tokens,
    )


class _Accumulator:
    """Per-recorded-step numbers the summary needs (a few floats per step: bounded by steps / k)."""

    def __init__(self) -> None:
        self.cols: dict[str, list[float]] = {
            k: []
            for k in (
                "batch_size",
                "dedup_ratio",
                "shared_read_ratio",
                "request_tokens",
                "unique_tokens",
                "bytes_per_request",
                "bytes_pat",
                "bytes_unique",
                "shared_packs",
                "plan_ms",
                "forest_ms",
            )
        }

    def add(self, rec: StepRecord) -> None:
        for k, v in self.cols.items():
            v.append(getattr(rec, k))

    def summary(self, **kw: Any) -> ReplaySummary:
        c = {k: np.asarray(v, dtype=np.float64) for k, v in self.cols.items()}
        n = c["batch_size"].shape[0]

        def stat(name: str, fn: Callable[[np.ndarray], float]) -> float:
            return float(fn(c[name])) if n else float("nan")

        per_req = c["bytes_per_request"].sum()
        return ReplaySummary(
            recorded_steps=n,
            mean_batch=stat("batch_size", np.mean),
            max_batch=int(stat("batch_size", np.max)) if n else 0,
            mean_dedup_ratio=stat("dedup_ratio", np.mean),
            median_dedup_ratio=stat("dedup_ratio", np.median),
            p90_dedup_ratio=stat("dedup_ratio", lambda a: np.percentile(a, 90)),
            mean_shared_read_ratio=stat("shared_read_ratio", np.mean),
            weighted_dedup_ratio=1.0 - c["unique_tokens"].sum() / c["request_tokens"].sum() if n else float("nan"),
            gb_per_step_per_request=stat("bytes_per_request", np.mean) / 1e9,
            gb_per_step_pat=stat("bytes_pat", np.mean) / 1e9,
            gb_per_step_unique=stat("bytes_unique", np.mean) / 1e9,
            pat_saving=1.0 - c["bytes_pat"].sum() / per_req if n else float("nan"),
            unique_saving=1.0 - c["bytes_unique"].sum() / per_req if n else float("nan"),
            steps_with_shared_pack=stat("shared_packs", lambda a: np.mean(a > 0)),
            plan_ms_mean=stat("plan_ms", np.mean),
            plan_ms_p50=stat("plan_ms", np.median),
            plan_ms_p99=stat("plan_ms", lambda a: np.percentile(a, 99)),
            forest_ms_mean=stat("forest_ms", np.mean),
            **kw,
        )
