"""``--attention-backend pat``: SGLang attention backend running decode through pack-forward-merge.

Role in pack-forward-merge: the SGLang host of all three stages. Once per decode step
(``init_forward_metadata``, not per layer) it builds the prefix forest of the batch from the radix
chains the scheduler patch published (``patches.chain_table``), plus each request's private tail read
from ``req_to_token``, and *packs* it with ``plan_forest``. Every layer's ``forward_decode`` then
stores the new token's K/V and runs *forward* + *merge* over that one plan (``pat_sglang.api.run``: the
CUDA kernels on GPU tensors, the torch reference on CPU tensors).

Prefill/extend, and decode batches PAT cannot plan, go to a delegate SGLang backend (``triton`` unless
``PAT_SGLANG_DELEGATE`` names another), built through SGLang's backend registry. Models PAT cannot serve
(MLA, sliding windows, logit caps, cross attention, fp8 KV, unsupported head dims, ...) are refused at
start-up with the reason, never served wrongly.

Host cost per step (``bench/backend_host_time.py``, CPU only, 2-core AMD EPYC dev VM, Llama-3-8B heads, medians of 20
consecutive decode steps, microseconds publish/forest/plan/load = total). 64 requests on a 4096-token prompt + 256 own
tokens: originally 208/921/249/137 = 1524 with one req_to_token read-back per step (a stream sync on the GPU) plus
``req_pool_indices`` read back; 256 requests 1138/4212/532/736 = 6604. Then (2026-11-24) no device-to-host read in
steady state: rows come from the published batch, tails from the host mirror (``HostTails``; new tokens enter as
placeholders filled on the device from ``out_cache_loc``), and the static-buffer load copies only used prefixes from
double-buffered pinned staging: 135/283/122/90 = 644 and 565/671/175/129 = 1556 (re-measured before the next change).
Now (2026-11-24, ``.venv/bin/python bench/backend_host_time.py``, three runs, the middle one): 48/142/112/81 = 383 and
197/224/159/110 = 690 (runs 690-717; one run with gc.freeze() at start gave 584, so collection pauses in the timed
steps are much of the spread). The steady-state step has no
per-request Python: the chain table tells an unchanged batch by identity checks over the requests' radix nodes in C
loops and hands over last step's entries (``PublishedBatch.entries``, the same tuple); the forest is last step's grown
by ``PrefixForest.with_grown_leaves`` (numpy on the planner's int32 arrays, no node objects). Generated-shared-prefix
(8x8, 16x16 on 2048 + 128): 574 -> 362 and 1692 -> 620 (runs 620-757). ``bench/plan_speed.py`` (256 requests,
4 levels): ``from_flat`` 1236 -> 1097 us (node lists now made on first read only), ``plan_forest`` 101 us.

CUDA graphs: ``init_forward_metadata_out_graph`` plans outside the graph and loads the plan into the
fixed-capacity ``pat_sglang.kernels.StaticPlanBuffers``; the captured ``forward_decode`` only launches.

Tensor parallelism (``--tp N``) needs nothing across ranks. Every rank builds its own backend from its
own model runner and plans the same batch independently: the forest depends only on the radix tree and
``req_to_token``, which every rank's scheduler keeps identical, so the ranks' plans have the same
items and partials and differ only in ``plan.heads``, the rank's ``tp_q_head_num`` / ``tp_k_head_num``
(heads split over ranks; KV heads replicated where ``tp > num_kv_heads``), which its KV pools hold. The
rank's attention output is its heads' slice; the model's o_proj all-reduce combines them as with any
backend. Per backend instance, never per process: the device (``model_runner.device`` is only the type;
the index is ``model_runner.gpu_id``), the plan, the CUDA-graph buffers, the stats, and the chain table,
which is bound to the runner's ``ReqToTokenPool`` (``patches.chain_table.chain_table_for``), so even two
ranks in one process would not read each other's rows.
"""

from __future__ import annotations

import logging
import operator
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend

from patches.chain_table import ChainTable, chain_table_for

from .api import run as run_plan
from .config import DeviceSpec, HeadConfig, check_supported
from .forest import PrefixForest
from .planner import PackPlan, plan_forest

logger = logging.getLogger(__name__)

DELEGATE_ENV = "PAT_SGLANG_DELEGATE"  # SGLang backend serving prefill/extend and declined decode batches
DEFAULT_DELEGATE = "triton"
VALIDATE_ENV = "PAT_SGLANG_VALIDATE_CHAINS"  # "1": check every radix forest against the flat rows (debug)
LOG_INTERVAL_S = 60.0

# The one switch for CUDA graphs. With it on, graphs run through pat_sglang.kernels.StaticPlanBuffers
# (refused with a clear message if that runtime is missing); with it off, PAT always asks for
# --disable-cuda-graph.
CUDA_GRAPHS_ENABLED = True

SENTINEL = 1 << 30  # placeholder slot of a newest token not yet known on the host: SENTINEL + batch index
PADDING_ROW = 0  # ReqToTokenPool row 0 is SGLang's padding row: CUDA-graph padding and dummy batches use it


# ----------------------------------------------------------------------------------------------- start-up
def model_problems(model_runner: Any, kernels: bool) -> tuple[HeadConfig | None, list[str]]:
    """Per-rank head configuration of the model's attention layers, and why PAT cannot serve it (if so).

    ``kernels``: the CUDA kernels will run (GPU); on the CPU the reference executor serves any dtype.
    """
    from sglang.srt.layers.radix_attention import RadixAttention

    problems: list[str] = []
    server_args = model_runner.server_args
    if getattr(model_runner, "use_mla_backend", False):
        problems.append("MLA attention")
    if getattr(model_runner.model_config, "is_encoder_decoder", False):
        problems.append("encoder-decoder models (cross attention)")
    if getattr(model_runner, "sliding_window_size", None) is not None:
        problems.append("sliding-window attention")
    if getattr(server_args, "speculative_algorithm", None):
        problems.append("speculative decoding (target verify is not plain decode)")
    if (getattr(server_args, "dcp_size", 1) or 1) > 1:
        problems.append("decode context parallelism")
    if getattr(model_runner.token_to_kv_pool_allocator, "translate_kv_loc", None) is not None:
        problems.append("the unified KV pool (req_to_token holds virtual slots)")
    if getattr(model_runner.token_to_kv_pool, "use_hnd", False):
        problems.append("the HND KV cache layout")

    layers = [m for m in model_runner.model.modules() if isinstance(m, RadixAttention)]
    if not layers:
        return None, problems + ["no RadixAttention layers found in the model"]
    for layer in layers:
        where = f"layer {layer.layer_id}"
        if layer.logit_cap and layer.logit_cap > 0:
            problems.append(f"attention logit cap ({where})")
        if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
            problems.append(f"sliding-window attention ({where})")
        if layer.is_cross_attention:
            problems.append(f"cross attention ({where})")
        if layer.qk_head_dim != layer.v_head_dim:
            problems.append(f"qk head dim {layer.qk_head_dim} != v head dim {layer.v_head_dim} ({where})")
    shapes = {(layer.tp_q_head_num, layer.tp_k_head_num, layer.qk_head_dim) for layer in layers}
    if len(shapes) > 1:
        problems.append(f"layers with different head shapes {sorted(shapes)}")
    num_q, num_kv, head_dim = layers[0].tp_q_head_num, layers[0].tp_k_head_num, layers[0].qk_head_dim

    kv_dtype = getattr(model_runner, "kv_cache_dtype", None) or model_runner.dtype
    model_dtype = getattr(model_runner, "dtype", kv_dtype)
    if kv_dtype != model_dtype:
        problems.append(f"KV cache dtype {kv_dtype} differs from the model dtype {model_dtype} (quantized KV)")
    try:
        heads = HeadConfig(num_q, num_kv, head_dim, kv_dtype)
    except ValueError as e:
        return None, problems + [str(e)]
    if kernels:
        try:
            check_supported(heads)
        except ValueError as e:
            problems.append(str(e))
    k_shape = tuple(model_runner.token_to_kv_pool.get_key_buffer(layers[0].layer_id).shape)
    if len(k_shape) != 3 or k_shape[1:] != (num_kv, head_dim):
        problems.append(f"KV pool buffers of shape {k_shape}, expected [slots, {num_kv}, {head_dim}]")
    return heads, problems


def runner_device(model_runner: Any) -> torch.device:
    """The rank's device. ``model_runner.device`` is ``server_args.device``, a bare type (``"cuda"``); the
    rank's GPU is ``model_runner.gpu_id``. Spelled out so plans, static buffers and the planner's SM count
    never depend on which device happens to be current."""
    device = torch.device(model_runner.device)
    gpu_id = getattr(model_runner, "gpu_id", None)
    if device.type != "cpu" and device.index is None and gpu_id is not None:
        device = torch.device(device.type, int(gpu_id))
    return device


def build_delegate(model_runner: Any) -> AttentionBackend:
    """The SGLang backend that serves what PAT does not, built through SGLang's registry."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    name = os.environ.get(DELEGATE_ENV, DEFAULT_DELEGATE)
    if name == "pat" or name not in ATTENTION_BACKENDS:
        raise ValueError(f"{DELEGATE_ENV}={name!r}: name a registered SGLang attention backend other than pat")
    return ATTENTION_BACKENDS[name](model_runner)


# ----------------------------------------------------------------------------------------------- per step
def gather_spans(
    req_to_token: torch.Tensor, rows: np.ndarray, begins: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``req_to_token[rows[i], begins[i]:ends[i]]`` for all i, as host (indptr, values): one gather and one
    device-to-host copy however many requests."""
    lengths = ends - begins
    if np.any(lengths < 0) or np.any(ends > req_to_token.shape[1]):
        raise ValueError("request spans outside the req_to_token rows")
    indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if not req_to_token.is_contiguous():
        raise ValueError("req_to_token must be contiguous")
    starts = rows * req_to_token.stride(0) + begins
    flat_pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
    idx = torch.from_numpy(flat_pos).to(req_to_token.device, non_blocking=True)
    values = req_to_token.reshape(-1)[idx].cpu().numpy().astype(np.int64)
    return indptr, values


class HostTails:
    """A host mirror of the ``req_to_token`` positions PAT needs: each running request's private tail.

    A row's tail is read from the device once (a new request, or a row whose cached part changed below what the
    mirror holds), then grown by each step's new token (``out_cache_loc``): taken directly when it is a host
    tensor; on the GPU written as a placeholder (``SENTINEL + batch index``, which the plan's device copy fills from
    ``out_cache_loc``) and resolved from an asynchronous device-to-host copy at the next step. Within one request a
    position beyond its cached prefix never changes, so the mirror stays valid while (generation, rid) match.
    ``np.empty``: only the touched rows and positions cost memory."""

    def __init__(self, req_to_token: torch.Tensor) -> None:
        self.req_to_token = req_to_token
        shape = tuple(req_to_token.shape)
        self.mirror = np.empty(shape, dtype=np.int64)
        self.gen = np.full(shape[0], -(1 << 62), dtype=np.int64)
        self.rid = np.full(shape[0], None, dtype=object)  # request id of each row's mirror
        self.lo = np.zeros(shape[0], dtype=np.int64)  # mirror[row, lo:hi] holds req_to_token[row, lo:hi]
        self.hi = np.zeros(shape[0], dtype=np.int64)
        self.pending: Any = None  # (rows, positions, placeholder values, pinned host copy, event)
        self.deferred_now = False  # this step's tails hold placeholders
        self._verified: tuple | None = None  # (id(rows' base), len, id(rids)) of the last step that read nothing
        self._keep: Any = None
        self._pinned: list[torch.Tensor] = []
        self._flip = 0

    def resolve(self) -> None:
        """Write the newest tokens of the last deferred step into the mirror (their copy was queued a step ago)."""
        self.deferred_now = False
        p = self.pending
        if p is None:
            return
        self.pending = None
        rows, pos, placeholder, host, event = p
        if event is not None:
            event.synchronize()  # normally already complete: queued before the last step's forward
        vals = host.numpy()
        still = self.mirror[rows, pos] == placeholder  # rows handed to another request meanwhile are re-read
        self.mirror[rows[still], pos[still]] = vals[still]

    def update(self, rows, seq_lens, cached, gens, rids, loc: torch.Tensor | None, defer: bool) -> bool:
        """Make ``mirror[rows[i], cached[i]:seq_lens[i]]`` the requests' tails; True if req_to_token was read.
        ``gens``: int64 generations of the rows (None: the pool has none)."""
        n = rows.shape[0]
        gen = gens if gens is not None else np.full(n, -1, dtype=np.int64)
        own = self.gen[rows] == gen
        base = rows.base if rows.base is not None else rows  # rows[:n] of the published batch's rows
        key = (id(base), n, id(rids))
        if rids is not None and self._verified != key:
            own &= self.rid[rows] == np.fromiter(rids, dtype=object, count=n)
        ok = own & (self.lo[rows] <= cached) & (self.hi[rows] >= seq_lens - 1)
        read = not ok.all()
        # Same published rows and ids objects as a step that read nothing: the row ids are already checked.
        self._verified = key if not read and rids is not None else None
        self._keep = (base, rids)  # keeps the ids above from being reused by other objects
        if read:
            bad = np.flatnonzero(~ok)
            b_rows, b_lo, b_hi = rows[bad], cached[bad], seq_lens[bad]
            indptr, flat = gather_spans(self.req_to_token, b_rows, b_lo, b_hi)
            dst = np.repeat(b_rows, np.diff(indptr)), flat_positions(b_lo, indptr)
            self.mirror[dst] = flat
            self.gen[b_rows] = gen[bad]
            self.rid[b_rows] = np.fromiter(rids, dtype=object, count=n)[bad] if rids is not None else None
            self.lo[b_rows], self.hi[b_rows] = b_lo, b_hi
        new = np.flatnonzero(self.hi[rows] < seq_lens)  # the step's new token, not yet in the mirror
        if new.shape[0]:
            n_rows, n_pos = rows[new], seq_lens[new] - 1
            if not defer or loc is None:
                self.mirror[n_rows, n_pos] = loc.numpy()[new] if loc is not None else self._read(n_rows, n_pos)
            else:
                placeholder = SENTINEL + new
                self.mirror[n_rows, n_pos] = placeholder
                host = self._host_buffer(n)
                host[:n].copy_(loc[:n], non_blocking=True)
                event = torch.cuda.Event() if loc.is_cuda else None
                if event is not None:
                    event.record()
                self.pending = (n_rows, n_pos, placeholder, _Gathered(host, new), event)
                self.deferred_now = True
            self.hi[n_rows] = seq_lens[new]
        return read

    def _read(self, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return gather_spans(self.req_to_token, rows, pos, pos + 1)[1]

    def _host_buffer(self, n: int) -> torch.Tensor:
        """One of two pinned buffers, alternating: the one a pending copy may still be filling is never reused."""
        if len(self._pinned) < 2 or self._pinned[0].shape[0] < n:
            size = max(n, 256)
            pin = torch.cuda.is_available()
            self._pinned = [torch.empty(size, dtype=torch.int64, pin_memory=pin) for _ in range(2)]
        self._flip ^= 1
        return self._pinned[self._flip]


class _Gathered:
    """``host[idx]`` of a pinned buffer, evaluated only when read (after its copy's event)."""

    def __init__(self, host: torch.Tensor, idx: np.ndarray) -> None:
        self.host, self.idx = host, idx

    def numpy(self) -> np.ndarray:
        return self.host.numpy()[self.idx].astype(np.int64)


def flat_positions(begins: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Positions ``begins[i] + 0, 1, ...`` of each span of ``indptr``, concatenated."""
    lengths = np.diff(indptr)
    return np.repeat(begins - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)


@dataclass(frozen=True)
class GraphCapacity:
    max_batch: int
    max_items: int
    max_kv_tokens: int
    max_partials: int


def graph_capacity(max_bs: int, context_len: int, device: DeviceSpec) -> GraphCapacity:
    """Static-buffer capacities. Typical plans fit the item/partial headroom; any batch fits the last
    re-plan of ``_load_static`` (one item per request, no partials, every request's KV read once), which
    needs only ``max_bs`` items and ``max_bs * context_len`` KV tokens (the plan never reads more KV than
    per-request decode)."""
    return GraphCapacity(
        max_batch=max_bs,
        max_items=2 * max_bs + 2 * device.target_ctas,
        max_kv_tokens=max_bs * context_len,
        max_partials=4 * max_bs + 2 * device.target_ctas,
    )


@dataclass
class PATMetadata:
    """One decode step's plan, shared by all layers."""

    plan: PackPlan  # on the compute device (eager), or the host copy loaded into the static buffers
    forest_source: str  # "radix": published chains; "flat": req_to_token rows (a chain was missing)
    static: bool  # run through the CUDA-graph static buffers


@dataclass
class StepStats:
    steps: int = 0
    plan_s_total: float = 0.0
    plan_s_max: float = 0.0
    radix_steps: int = 0
    flat_fallbacks: int = 0  # steps with a missing/stale chain: forest from the flat rows
    delegated: int = 0  # decode batches PAT could not plan, served by the delegate
    graph_replans: int = 0  # graph steps re-planned coarser to fit the static buffers
    incremental: int = 0  # steps whose forest was last step's with every private tail one token longer
    tail_reads: int = 0  # steps that read private tails from req_to_token (new requests, changed rows)
    row_reads: int = 0  # steps that read req_pool_indices back (no published batch of the right size)
    last_log: float = field(default_factory=lambda: float("-inf"))

    def record(self, seconds: float, source: str) -> None:
        self.steps += 1
        self.plan_s_total += seconds
        self.plan_s_max = max(self.plan_s_max, seconds)
        if source == "radix":
            self.radix_steps += 1
        else:
            self.flat_fallbacks += 1

    @property
    def plan_ms_mean(self) -> float:
        return 1e3 * self.plan_s_total / max(self.steps, 1)

    def summary(self) -> str:
        return (
            f"PAT: {self.steps} decode steps, host planning {self.plan_ms_mean:.3f} ms mean / "
            f"{1e3 * self.plan_s_max:.3f} ms max; forests from radix chains {self.radix_steps}, from flat "
            f"rows (chain missing) {self.flat_fallbacks}; delegated batches {self.delegated}; "
            f"graph re-plans {self.graph_replans}; incremental forests {self.incremental}, steps reading tails "
            f"{self.tail_reads}, reading rows {self.row_reads}"
        )

    def maybe_log(self, now: float) -> None:
        if now - self.last_log >= LOG_INTERVAL_S:
            self.last_log = now
            logger.info(self.summary())


# ----------------------------------------------------------------------------------------------- backend
class PATAttnBackend(AttentionBackend):
    def __init__(
        self,
        model_runner: Any,
        delegate: AttentionBackend | None = None,
        chain_table: ChainTable | None = None,
    ) -> None:
        super().__init__()
        self.device = runner_device(model_runner)
        heads, problems = model_problems(model_runner, kernels=self.device.type == "cuda")
        if problems or heads is None:
            raise ValueError(
                "the pat attention backend cannot serve this model: " + "; ".join(problems) + ". Use another "
                "backend (e.g. --attention-backend triton), or pat for decode only where it applies."
            )
        self.heads = heads  # per TP rank: the layers' tp_q_head_num / tp_k_head_num
        self.device_spec = DeviceSpec.from_torch(self.device) if self.device.type == "cuda" else DeviceSpec()
        self.req_to_token_pool = model_runner.req_to_token_pool
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.context_len = int(model_runner.model_config.context_len)
        self.delegate = delegate if delegate is not None else build_delegate(model_runner)
        # This rank's chains: the table bound to its ReqToTokenPool (the scheduler patch publishes each batch
        # into its pool's table), a fresh one unless this pool already has one or one is passed in.
        pool = self.req_to_token_pool
        if chain_table is None:
            chain_table = chain_table_for(pool) or ChainTable()
        self.chain_table = chain_table_for(pool, chain_table)
        self.chain_table.enabled = True  # publishing costs scheduler time: on only for pools a PAT backend reads
        self.validate = os.environ.get(VALIDATE_ENV) == "1"
        # On the GPU the step's new KV slots (out_cache_loc) are not read back: they enter the plan as placeholders
        # filled on the device, and reach the host tails through an asynchronous copy read the next step.
        self.defer = self.device.type != "cpu" and not self.validate
        self._tails = HostTails(self.req_to_token_pool.req_to_token)
        self._inc: Any = None  # last step's forest structure (see _incremental)
        self.forward_metadata: PATMetadata | None = None
        self.graph_buffers: Any = None  # pat_sglang.kernels.StaticPlanBuffers once graphs are set up
        self.stats = StepStats()
        self._warned: set[str] = set()

    # -------------------------------------------------------------------- metadata (once per step)
    def init_forward_metadata(self, forward_batch: Any) -> None:
        """Eager entry point: plan decode batches, hand everything else to the delegate."""
        self.forward_metadata = None
        if forward_batch.forward_mode.is_decode():
            try:
                self.forward_metadata = self._prepare(forward_batch, static=False)
                return
            except ValueError as e:  # a batch PAT cannot plan is served by the delegate, never guessed at
                self.stats.delegated += 1
                self._warn_once("delegated", f"PAT could not plan a decode batch ({e}); the delegate serves it")
        self.delegate.init_forward_metadata(forward_batch)

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        cls = _static_plan_buffers()
        if cls is None:
            raise RuntimeError(
                "the pat attention backend cannot run in CUDA graphs in this build (pat_sglang.kernels."
                "StaticPlanBuffers is unavailable or CUDA_GRAPHS_ENABLED is off): pass --disable-cuda-graph"
            )
        cap = graph_capacity(max_bs, self.context_len, self.device_spec)
        self.graph_buffers = cls(
            self.heads, cap.max_batch, cap.max_items, cap.max_kv_tokens, cap.max_partials, self.device
        )

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        return 1  # padded requests read one token of the padding row (slot 0); their outputs are dropped

    def init_forward_metadata_out_graph(self, forward_batch: Any, in_capture: bool = False) -> None:
        """Capture and replay: plan on the host and load it into the static buffers, outside the graph."""
        if not forward_batch.forward_mode.is_decode():
            self.forward_metadata = None
            self.delegate.init_forward_metadata_out_graph(forward_batch, in_capture=in_capture)
            return
        if self.graph_buffers is None:
            raise RuntimeError("PAT: init_cuda_graph_state must run before CUDA-graph metadata")
        self.forward_metadata = self._prepare(forward_batch, static=True)

    def init_forward_metadata_in_graph(self, forward_batch: Any) -> None:
        if not forward_batch.forward_mode.is_decode():
            self.delegate.init_forward_metadata_in_graph(forward_batch)
        # decode: nothing to record; StaticPlanBuffers.load already staged the plan before capture/replay

    def _prepare(self, forward_batch: Any, static: bool) -> PATMetadata:
        start = time.perf_counter()
        forest, source = self._forest(forward_batch)
        plan = plan_forest(forest, self.heads, self.device_spec)
        loc = forward_batch.out_cache_loc
        if static:
            plan = self._load_static(forest, plan, loc)
        else:
            patch = self._patch(plan)
            if self.device.type != "cpu":
                plan = plan.to(self.device)
            if patch is not None:
                pos, src = (torch.from_numpy(a).to(loc.device, non_blocking=True) for a in patch)
                plan.kv_slots[pos] = loc[src].to(torch.int32)
        now = time.perf_counter()
        self.stats.record(now - start, source)
        self.stats.maybe_log(now)
        return PATMetadata(plan, source, static)

    # ---------------------------------------------------------------- host batch, tails, forest (no device reads)
    def _host_batch(self, fb: Any) -> tuple[np.ndarray, np.ndarray, Any, int, Any]:
        """(rows, seq_lens, rids or None, real requests, the published batch used or None) on the host. Rows and rids
        come from the batch the scheduler patch published (``ChainTable.batch``), so ``req_pool_indices`` (a GPU
        tensor) is read back only when no batch of this size was published; ``seq_lens_cpu`` is SGLang's host copy."""
        bs = int(fb.batch_size)
        pad = int(getattr(fb, "num_padding", 0) or 0)
        n_real = bs - pad
        seq_t = fb.seq_lens_cpu if getattr(fb, "seq_lens_cpu", None) is not None else fb.seq_lens
        seq_lens = seq_t.detach().cpu().numpy().astype(np.int64)[:bs]
        rids = getattr(fb, "rids", None)
        if rids is not None and len(rids) != n_real:
            rids = None
        pb = self.chain_table.batch
        if pb is not None and pb.rows.shape[0] == n_real and (rids is None or tuple(rids) == pb.rids):
            rows = pb.rows if not pad else np.concatenate([pb.rows, np.full(pad, PADDING_ROW, dtype=np.int64)])
            return rows, seq_lens, pb.rids, n_real, pb
        self.stats.row_reads += 1
        rows = fb.req_pool_indices.detach().cpu().numpy().astype(np.int64)[:bs]
        return rows, seq_lens, tuple(rids) if rids is not None else None, n_real, None

    def _forest(self, forward_batch: Any) -> tuple[PrefixForest, str]:
        """The batch's forest: published radix chains + private tails, or the flat rows if a chain is missing."""
        tails = self._tails
        tails.resolve()  # the newest tokens of earlier steps, copied back asynchronously since
        rows, seq_lens, rids, n_real, pb = self._host_batch(forward_batch)
        generations = getattr(self.req_to_token_pool, "req_generation", None)
        gens = generations.numpy()[rows].astype(np.int64, copy=False) if generations is not None else None
        if pb is not None and pb.entries is not None and (
            gens is None or pb.gens is None or np.array_equal(gens[:n_real], pb.gens)
        ):
            # The published batch's own entries: published for these rows, request ids and generations.
            entries = pb.entries
            cached = np.zeros(rows.shape[0], dtype=np.int64)
            cached[:n_real] = pb.cached
            bad = cached[:n_real] > seq_lens[:n_real]
            missing = int(bad.sum()) + pb.absent
            cached[:n_real][bad] = 0
        else:
            entries, cached, missing = self._lookup(rows, seq_lens, gens, rids, n_real)

        if missing:
            self._inc = None
            self._warn_once(
                "flat",
                f"PAT: {missing} of {rows.shape[0]} requests had no published radix chain; building this step's "
                "forest from the req_to_token rows (counted in the periodic PAT stats line)",
            )
            req_to_token = self.req_to_token_pool.req_to_token
            indptr, flat = gather_spans(req_to_token, rows, np.zeros_like(seq_lens), seq_lens)
            return PrefixForest.from_flat(indptr, flat), "flat"

        real_rows, real_seq = rows[:n_real], seq_lens[:n_real]
        loc = forward_batch.out_cache_loc
        real_gens = gens[:n_real] if gens is not None else None
        read = tails.update(real_rows, real_seq, cached[:n_real], real_gens, rids, loc, self.defer)
        if read:
            self.stats.tail_reads += 1
        forest = self._incremental(rows, seq_lens, entries, n_real, read)
        if forest is None:
            mirror = tails.mirror
            chains = [e.chain for e in entries[:n_real]] + [[] for _ in range(rows.shape[0] - n_real)]
            spans = zip(real_rows.tolist(), cached[:n_real].tolist(), real_seq.tolist(), strict=True)
            tail_views = [mirror[row, c:n] for row, c, n in spans]
            tail_views += [np.zeros(int(n), dtype=np.int64) for n in seq_lens[n_real:]]  # padding: slot 0
            forest = PrefixForest.from_chains(chains, tail_views)
            self._remember(forest, rows, seq_lens, entries, n_real)
        if self.validate:
            req_to_token = self.req_to_token_pool.req_to_token
            full_ptr, full = gather_spans(req_to_token, rows, np.zeros_like(seq_lens), seq_lens)
            if forest.canonical_key() != PrefixForest.from_flat(full_ptr, full).canonical_key():
                raise RuntimeError("PAT: published radix chains disagree with the req_to_token rows")
        return forest, "radix"

    def _lookup(self, rows, seq_lens, gens, rids, n_real) -> tuple[tuple, np.ndarray, int]:
        """(chain entry per real request or None, cached lengths, requests without a usable entry), one lookup per
        request (when the published batch's entries cannot be used)."""
        lookup = self.chain_table.lookup
        entries: list[Any] = []
        cached = np.zeros(rows.shape[0], dtype=np.int64)
        missing = 0
        rows_l = rows.tolist()
        gens_l = gens.tolist() if gens is not None else [None] * rows.shape[0]
        for r in range(n_real):
            entry = lookup(rows_l[r], gens_l[r], rids[r] if rids is not None else None)
            if entry is None or entry.cached_len > seq_lens[r]:
                missing += 1
                entry = None
            else:
                cached[r] = entry.cached_len
            entries.append(entry)
        return tuple(entries), cached, missing

    def _remember(self, forest: PrefixForest, rows, seq_lens, entries, n_real) -> None:
        """Keep the structure of a freshly built forest for the next step's incremental update."""
        fa = forest._arrays()
        last = np.full(forest.num_requests, -1, dtype=np.int64)
        last[fa.req_flat[fa.ends_here]] = fa.entry_node[fa.ends_here]
        leaf = last[:n_real]
        if (leaf < 0).any() or (fa.q[leaf] != 1).any():
            self._inc = None  # a request ends in a shared node (no private tail): no incremental update
            return
        self._inc = (rows.copy(), seq_lens.copy(), entries, forest, leaf, n_real)

    def _incremental(self, rows, seq_lens, entries, n_real, read: bool) -> PrefixForest | None:
        """Last step's forest with every request's private leaf grown by its new token
        (``PrefixForest.with_grown_leaves``), if nothing else changed: same rows, same published chain entries, every
        real request one token longer (padding unchanged)."""
        inc = self._inc
        if inc is None or read:
            return None
        p_rows, p_seq, p_entries, forest, leaf, p_real = inc
        if (
            p_real != n_real
            or not np.array_equal(p_rows, rows)
            or not np.array_equal(p_seq[:n_real] + 1, seq_lens[:n_real])
            or not np.array_equal(p_seq[n_real:], seq_lens[n_real:])
            or (p_entries is not entries and not all(map(operator.is_, p_entries, entries)))
        ):
            return None
        real_rows, real_seq = rows[:n_real], seq_lens[:n_real]
        mirror = self._tails.mirror
        # Last step's newest tokens are known now: they replace the placeholders the forest may still hold.
        last = mirror[real_rows, real_seq - 2] if forest._arrays().slot_max >= SENTINEL else None
        new = forest.with_grown_leaves(leaf, mirror[real_rows, real_seq - 1], last)
        self._inc = (rows.copy(), seq_lens.copy(), entries, new, leaf, n_real)
        self.stats.incremental += 1
        return new

    def _patch(self, plan: PackPlan) -> tuple[np.ndarray, np.ndarray] | None:
        """Where the plan reads placeholder slots (newest tokens not yet copied back): (kv_slots positions, batch
        indices into ``out_cache_loc``); fixes ``plan.max_slot`` to the largest known slot."""
        if not self._tails.deferred_now:
            return None
        kv = plan.kv_slots.numpy()
        mask = kv >= SENTINEL
        pos = np.flatnonzero(mask)
        if pos.shape[0] == 0:
            return None
        known = kv[~mask]
        plan.max_slot = int(known.max()) if known.shape[0] else 0
        return pos, kv[pos].astype(np.int64) - SENTINEL

    def _load_static(self, forest: PrefixForest, plan: PackPlan, loc: torch.Tensor | None = None) -> PackPlan:
        """Load ``plan`` into the static buffers; if it does not fit, re-plan coarser until it does. Placeholder
        slots (``_patch``) are filled on the device from ``loc`` (``out_cache_loc``)."""
        try:
            self.graph_buffers.load(plan, self._kv_patch(plan, loc))
            return plan
        except ValueError as first:
            reason = first
        self.stats.graph_replans += 1
        self._warn_once("replan", f"PAT: a decode plan exceeded the CUDA-graph buffers ({reason}); re-planning")
        # One KV split per pack: fewer items and partials, same sharing.
        coarse = plan_forest(forest, self.heads, self.device_spec, min_split_tokens=self.context_len)
        try:
            self.graph_buffers.load(coarse, self._kv_patch(coarse, loc))
            return coarse
        except ValueError:
            pass
        # No sharing: one item per request, no partials; graph_capacity guarantees this fits.
        n = forest.num_requests
        private = PrefixForest.from_chains([[] for _ in range(n)], [forest.request_slots(r) for r in range(n)])
        last = plan_forest(private, self.heads, self.device_spec, min_split_tokens=self.context_len)
        self.graph_buffers.load(last, self._kv_patch(last, loc))
        return last

    def _kv_patch(self, plan: PackPlan, loc: torch.Tensor | None) -> Any:
        patch = self._patch(plan)
        if patch is None:
            return None
        if loc is None:
            raise RuntimeError("PAT: placeholder slots but no out_cache_loc")
        return patch[0], patch[1], loc

    # -------------------------------------------------------------------- per layer
    def forward_decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer: Any,
        forward_batch: Any,
        save_kv_cache: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        md = self.forward_metadata
        if md is None:
            return self.delegate.forward_decode(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)
        extra = sorted(name for name, value in kwargs.items() if value is not None)
        if extra:
            raise ValueError(f"the pat attention backend does not support {extra} (layer {layer.layer_id})")
        hq, d = self.heads.num_q_heads, self.heads.head_dim
        if (layer.tp_q_head_num, layer.tp_k_head_num, layer.qk_head_dim) != (hq, self.heads.num_kv_heads, d):
            raise ValueError(f"layer {layer.layer_id} heads differ from the planned {self.heads}")
        if save_kv_cache and k is not None:
            # Same store as SGLang's triton backend: the step's new token, before attention reads it.
            self.token_to_kv_pool.set_kv_buffer(layer, forward_batch.out_cache_loc, k, v)
        k_buffer = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_buffer = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        q3 = q.reshape(-1, hq, d).contiguous()
        if md.static:
            out = self.graph_buffers.run(q3, k_buffer, v_buffer, layer.scaling, torch.empty_like(q3))
        else:
            out = run_plan(md.plan, q3, k_buffer, v_buffer, layer.scaling)
        return out.reshape(-1, hq * d)

    def forward_extend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer: Any,
        forward_batch: Any,
        save_kv_cache: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        return self.delegate.forward_extend(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)


def _static_plan_buffers() -> type | None:
    if not CUDA_GRAPHS_ENABLED:
        return None
    try:
        from .kernels import StaticPlanBuffers
    except ImportError:
        return None
    return StaticPlanBuffers
