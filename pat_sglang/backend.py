"""``--attention-backend pat``: SGLang attention backend running decode through pack-forward-merge.

Role in pack-forward-merge: the SGLang host of all three stages, in the shape of SGLang's own backends: a
metadata dataclass made once per step (``init_forward_metadata``, or ``init_forward_metadata_out_graph`` for
CUDA graphs), then ``forward_decode`` per layer stores the new token's K/V and runs *forward* + *merge* over
that one plan. The per-step host work (published radix paths -> forest -> plan) lives in
``pat_sglang.decode_step``; it never reads from the GPU (rows and request ids come from the batch the
scheduler patch published, lengths from ``seq_lens_cpu``, and the KV slots are read by the kernel from
``req_to_token`` on the device), so under SGLang's overlap scheduler the planning of step N+1 runs while the
GPU works on step N. At start-up that path runs once on made-up batches (``pat_sglang.warm_up``), so the first
decode steps do not pay its first-call costs.

Prefill/extend, decode batches PAT cannot plan, and decode batches that share too little for packing to pay
(``pat_sglang.dispatch``: PAT reads the bytes a plain decode kernel reads, only more slowly) go to a delegate SGLang
backend: by default the one SGLang itself would pick for this GPU and model (0.5.17: fa3 on Hopper for MHA models when
its kernels are installed, else flashinfer, else triton), or the one ``PAT_SGLANG_DELEGATE`` names. The log says which.
Models PAT cannot serve (MLA, sliding windows, logit caps, cross attention, unsupported head dims, KV formats
other than the model dtype or per-tensor-scaled FP8, ...) are refused at start-up with the reason, never served
wrongly.

FP8 KV (``--kv-cache-dtype fp8_e4m3`` / ``fp8_e5m2``): the pool holds FP8 (uint8 storage, float8 views from
``get_key_buffer``); the new token is stored with the layer's ``k_scale``/``v_scale`` as SGLang's Triton and
FlashInfer backends store it (``set_kv_buffer`` divides by the scale), and read back with ``k_scale_float`` /
``v_scale_float`` (1.0 when the checkpoint has none), which the kernels apply per tensor. Scales are applied
only to FP8 pools, as fa3 does (a 16-bit pool stores values unscaled).

CUDA graphs: ``init_cuda_graph_state`` sizes ``pat_sglang.kernels.StaticPlanBuffers``; every graph step is
planned to fit their limits (``plan_forest(..., limits=...)``), loaded outside the graph, and the captured
``forward_decode`` only launches. With the graph-variant patch (``sglang_patches.graph_variants``) the runner captures
every batch size twice, once per ``GRAPH_VARIANTS`` entry (PAT's kernels, the delegate's), and replays the one this
step's metadata chose (``replay_variant``); the delegate's own graph state is set up beside PAT's. Without the patch
every graph step runs PAT (said once in the log).

Unchanged steps: the planner hands out last step's plan object while the batch is the same and has not grown far
(``decode_step``); its open items end where the requests end now, read by the kernel from the batch's
``seq_lens`` and ``req_pool_indices`` on the device (eager: the ForwardBatch's; CUDA graphs: the graph runner's
static buffers, whose addresses the captured launches hold, filled by the runner before each replay). Such a step
copies nothing to the device: the static buffers (or the eager plan's device copy) hold the plan already.

Tensor parallelism (``--tp N``) needs nothing across ranks: every rank plans the same batch from its own
published paths (every rank's scheduler keeps an identical radix tree and ``req_to_token``), so the plans
have the same items and partials and differ only in ``plan.heads`` (the rank's ``tp_q_head_num`` /
``tp_k_head_num``). Per backend instance, never per process: the device (``model_runner.gpu_id``), the
planner, the CUDA-graph buffers, the stats, and the chain table, bound to the runner's ``ReqToTokenPool``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend

from . import host_core
from .api import run
from .config import FP8_KV_DTYPES, DeviceSpec, HeadConfig, check_supported
from .decode_step import PADDING_ROW, REMAKE_PLANS_ENV, DecodeStepPlanner, StepBatch
from .dispatch import MIN_SAVED_FRACTION_ENV, DispatchGate, checked_fraction, configured_gate
from .gc_pauses import GC_PAUSES
from .planner import PackPlan, host_int64, max_split_items, same_ints
from .sglang_patches.chain_table import ChainTable, chain_table_for
from .sglang_patches.core import graph_variants_patched
from .step_stats import StepLog, StepStats, describe_step, gc_seconds
from .warm_up import WarmUp, warm_host_path

logger = logging.getLogger(__name__)

DELEGATE_ENV = "PAT_SGLANG_DELEGATE"  # SGLang backend serving prefill/extend and declined decode batches
FALLBACK_DELEGATES = ("flashinfer", "triton")  # when SGLang's own pick is not usable here, in this order
LOG_INTERVAL_S = float(os.environ.get("PAT_SGLANG_LOG_INTERVAL_S", "60"))  # the periodic PAT stats line
PROFILE_RANGE = "pat::plan_step"  # name of the per-step host range in torch profiler traces

# The one switch for CUDA graphs. With it on, graphs run through pat_sglang.kernels.StaticPlanBuffers
# (refused with a clear message if that runtime is missing); with it off, PAT always asks for
# --disable-cuda-graph.
CUDA_GRAPHS_ENABLED = True
# Partial slots of the CUDA-graph buffers per request of the largest captured batch (plus two per target CTA). With 4,
# the split the model picks overflowed them in 50 of 1134 shared-prefix windows (prompts of 1k-16k tokens, seven head
# configurations, 16-bit and FP8), and the plan was made coarser; with 8 in 4 of them, with 16 in none
# (docs/perf/host/2026-12-02-fortyfirst-partials-capacity.txt). A slot holds one request's partial rows in the q dtype:
# at batch 256 and 32 q heads of d128, 8 per request is 2576 slots, 21 MB.
GRAPH_PARTIALS_PER_REQUEST = 8

# Decode CUDA-graph variants (sglang_patches.graph_variants): PAT's kernels, or the delegate's.
PAT_VARIANT = "pat"
DELEGATE_VARIANT = "delegate"
GRAPH_VARIANTS = (PAT_VARIANT, DELEGATE_VARIANT)


# ----------------------------------------------------------------------------------------------- start-up
class Problem(NamedTuple):
    """One reason PAT cannot serve a model: what, and the attention layer it was found in (None: the model)."""

    text: str
    layer: int | None = None

    def __str__(self) -> str:
        return self.text if self.layer is None else f"{self.text} (layer {self.layer})"


def model_problems(model_runner: Any, kernels: bool) -> tuple[HeadConfig | None, list[Problem]]:
    """Per-rank head configuration of the model's attention layers, and why PAT cannot serve it (if so).

    ``kernels``: the CUDA kernels will run (GPU); on the CPU the reference executor serves any dtype.
    """
    from sglang.srt.layers.radix_attention import RadixAttention

    problems: list[Problem] = []
    server_args = model_runner.server_args
    if getattr(model_runner, "use_mla_backend", False):
        problems.append(Problem("MLA attention"))
    if getattr(model_runner.model_config, "is_encoder_decoder", False):
        problems.append(Problem("encoder-decoder models (cross attention)"))
    if getattr(model_runner, "sliding_window_size", None) is not None:
        problems.append(Problem("sliding-window attention"))
    if getattr(server_args, "speculative_algorithm", None):
        problems.append(Problem("speculative decoding (target verify is not plain decode)"))
    if (getattr(server_args, "dcp_size", 1) or 1) > 1:
        problems.append(Problem("decode context parallelism"))
    if getattr(model_runner.token_to_kv_pool_allocator, "translate_kv_loc", None) is not None:
        problems.append(Problem("the unified KV pool (req_to_token holds virtual slots)"))
    if getattr(model_runner.token_to_kv_pool, "use_hnd", False):
        problems.append(Problem("the HND KV cache layout"))

    layers = [m for m in model_runner.model.modules() if isinstance(m, RadixAttention)]
    if not layers:
        return None, [*problems, Problem("no RadixAttention layers found in the model")]
    for layer in layers:
        lid = layer.layer_id
        if layer.logit_cap and layer.logit_cap > 0:
            problems.append(Problem("attention logit cap", lid))
        if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
            problems.append(Problem("sliding-window attention", lid))
        if layer.is_cross_attention:
            problems.append(Problem("cross attention", lid))
        if layer.qk_head_dim != layer.v_head_dim:
            problems.append(Problem(f"qk head dim {layer.qk_head_dim} != v head dim {layer.v_head_dim}", lid))
    shapes = {(layer.tp_q_head_num, layer.tp_k_head_num, layer.qk_head_dim) for layer in layers}
    if len(shapes) > 1:
        problems.append(Problem(f"layers with different head shapes {sorted(shapes)}"))
    num_q, num_kv, head_dim = layers[0].tp_q_head_num, layers[0].tp_k_head_num, layers[0].qk_head_dim

    kv_dtype = getattr(model_runner, "kv_cache_dtype", None) or model_runner.dtype
    model_dtype = getattr(model_runner, "dtype", kv_dtype)
    if kv_dtype != model_dtype and kv_dtype not in FP8_KV_DTYPES:
        problems.append(Problem(
            f"KV cache dtype {kv_dtype} (model dtype {model_dtype}): PAT reads KV in the model dtype or in FP8 "
            f"({', '.join(str(d) for d in FP8_KV_DTYPES)}) with per-tensor scales"
        ))
    if getattr(model_runner.token_to_kv_pool, "is_quantized_kv_cache", False):
        problems.append(Problem("a quantized KV cache recipe (packed data with scale buffers, e.g. FP4/MXFP8)"))
    if kv_dtype in FP8_KV_DTYPES:
        for layer in layers:
            try:
                layer_kv_scales(layer, fp8=True)
            except ValueError as e:
                problems.append(Problem(str(e), layer.layer_id))
    try:
        heads = HeadConfig(num_q, num_kv, head_dim, model_dtype, kv_dtype)
    except ValueError as e:
        return None, [*problems, Problem(str(e))]
    if kernels:
        try:
            check_supported(heads)
        except ValueError as e:
            problems.append(Problem(str(e)))
    k_shape = tuple(model_runner.token_to_kv_pool.get_key_buffer(layers[0].layer_id).shape)
    if len(k_shape) != 3 or k_shape[1:] != (num_kv, head_dim):
        problems.append(Problem(f"KV pool buffers of shape {k_shape}, expected [slots, {num_kv}, {head_dim}]"))
    return heads, problems


def layer_kv_scales(layer: Any, fp8: bool) -> tuple[float, float]:
    """(k_scale, v_scale) the kernels apply when reading ``layer``'s KV: for FP8 pools the layer's per-tensor
    ``k_scale_float``/``v_scale_float`` when it has scales (SGLang's Triton rule: both ``k_scale`` and ``v_scale``
    set), else 1.0; for 16-bit pools 1.0 (stored unscaled). ``ValueError`` for scales PAT does not apply (per head
    or per channel, or not yet resolved to floats; the caller names the layer)."""
    if not fp8 or layer.k_scale is None or layer.v_scale is None:
        return 1.0, 1.0
    for name in ("k_scale", "v_scale"):
        scale = getattr(layer, name)
        if isinstance(scale, torch.Tensor) and scale.numel() != 1:
            raise ValueError(f"FP8 KV with per-head or per-channel {name} of shape {tuple(scale.shape)}")
    k, v = layer.k_scale_float, layer.v_scale_float
    if not isinstance(k, float) or not isinstance(v, float):
        raise ValueError(f"FP8 KV scales that are not per-tensor floats: k_scale_float={k!r}, v_scale_float={v!r}")
    return k, v


def runner_device(model_runner: Any) -> torch.device:
    """The rank's device. ``model_runner.device`` is ``server_args.device``, a bare type (``"cuda"``); the
    rank's GPU is ``model_runner.gpu_id``. Spelled out so plans, static buffers and the planner's SM count
    never depend on which device happens to be current."""
    device = torch.device(model_runner.device)
    gpu_id = getattr(model_runner, "gpu_id", None)
    if device.type != "cpu" and device.index is None and gpu_id is not None:
        device = torch.device(device.type, int(gpu_id))
    return device


def _kernels_available(name: str) -> bool:
    """Whether the named delegate's kernels import here (SGLang picks fa3 without checking its wheel)."""
    try:
        if name == "fa3":
            from sgl_kernel.flash_attn import flash_attn_with_kvcache  # noqa: F401
        elif name == "flashinfer":
            import flashinfer  # noqa: F401
    except Exception:  # ImportError, or a library that fails to load
        return False
    return True


def default_delegate_name(model_runner: Any) -> tuple[str, str]:
    """(backend, why): the backend SGLang would pick for this GPU and model when none is named
    (``ServerArgs._get_default_attn_backend``), if registered and its kernels import; else the first of
    ``FALLBACK_DELEGATES`` that does. Never ``pat``."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    picked, why = None, ""
    try:
        picked = model_runner.server_args._get_default_attn_backend(
            bool(getattr(model_runner, "use_mla_backend", False)), model_runner.model_config
        )
        why = "SGLang's default for this GPU and model"
    except Exception as e:  # a CPU test runner, or an SGLang without the method
        why = f"SGLang's default could not be determined ({type(e).__name__})"
    if picked and picked != "pat" and picked in ATTENTION_BACKENDS and _kernels_available(picked):
        return picked, why
    if picked:
        why = f"SGLang's default {picked!r} is not usable here"
    for name in FALLBACK_DELEGATES:
        if name in ATTENTION_BACKENDS and _kernels_available(name):
            return name, why + f"; using {name}"
    return "triton", why + "; using triton"


class UnsupportedModel(ValueError):
    """The model (or the server's KV cache settings) needs attention PAT does not implement; ``problems`` says what.
    The plugin's factory serves such a model on the delegate instead (``plugin.create_pat_backend``)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("the pat attention backend cannot serve this model: " + "; ".join(_by_layers(self.problems)))


def _by_layers(problems: list[Problem]) -> list[str]:
    """``problems`` with the same text for several layers said once: "logit cap (layers 0-31)", "(layers 1, 5)"."""
    layers: dict[str, list[int]] = {}
    for p in problems:
        ids = layers.setdefault(p.text, [])
        if p.layer is not None:
            ids.append(p.layer)
    out = []
    for text, ids in layers.items():
        if not ids:
            out.append(text)
        elif len(ids) == 1:
            out.append(str(Problem(text, ids[0])))
        elif ids == list(range(ids[0], ids[0] + len(ids))):
            out.append(f"{text} (layers {ids[0]}-{ids[-1]})")
        else:
            out.append(f"{text} (layers {', '.join(map(str, ids))})")
    return out


def build_delegate(model_runner: Any) -> tuple[AttentionBackend, str, str]:
    """The SGLang backend that serves what PAT does not, built through SGLang's registry: (backend, its name, why that
    one). The caller logs what it is used for."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    name = os.environ.get(DELEGATE_ENV)
    if name is not None:
        if name == "pat" or name not in ATTENTION_BACKENDS:
            raise ValueError(f"{DELEGATE_ENV}={name!r}: name a registered SGLang attention backend other than pat")
        why = f"{DELEGATE_ENV}"
    else:
        name, why = default_delegate_name(model_runner)
    return ATTENTION_BACKENDS[name](model_runner), name, why


@dataclass(frozen=True)
class GraphCapacity:
    max_batch: int
    max_items: int
    max_partials: int
    split_items: int | None = None  # StaticPlanBuffers' ``split_items``: per-batch forward grids (None: one grid)


def graph_capacity(max_bs: int, device: DeviceSpec, heads: HeadConfig) -> GraphCapacity:
    """Static-buffer capacities: room for typical shared plans; the planner coarsens any plan to fit them (a coarser
    split length, at worst one item per request and no partials, which needs ``max_bs`` items). Each captured batch
    size gets a forward grid of two items per request plus the KV splits' items (``StaticPlanBuffers.limits_for``),
    not the largest batch's. Partial slots: ``GRAPH_PARTIALS_PER_REQUEST`` per request of the largest batch."""
    return GraphCapacity(
        max_batch=max_bs,
        max_items=2 * max_bs + 2 * device.target_ctas,
        max_partials=GRAPH_PARTIALS_PER_REQUEST * max_bs + 2 * device.target_ctas,
        split_items=max_split_items(heads, device),
    )


@dataclass
class PATMetadata:
    """One decode step's plan, shared by all layers."""

    plan: PackPlan  # on the compute device (eager), or the host copy loaded into the static buffers
    static: bool  # run through the CUDA-graph static buffers


def _warm_up(heads: HeadConfig, device_spec: DeviceSpec, remake: bool) -> WarmUp | None:
    """``warm_host_path`` once, at start-up (its first-call costs would land in the first decode steps that plan);
    a failure is logged and never stops the server (the steps then pay those costs)."""
    try:
        done = warm_host_path(heads, device_spec, remake_plans=remake)
    except Exception as e:  # a warm-up must not take the server down
        logger.warning(f"PAT: the host path's warm-up failed ({e!r}); the first decode steps pay its first-call costs")
        return None
    logger.info(f"PAT: host path warmed up in {1e3 * done.seconds:.1f} ms (publish, forest, plan of made-up batches)")
    return done


# ----------------------------------------------------------------------------------------------- backend
class PATAttnBackend(AttentionBackend):
    def __init__(
        self,
        model_runner: Any,
        delegate: AttentionBackend | None = None,
        chain_table: ChainTable | None = None,
        min_saved_fraction: float | None = None,
    ) -> None:
        """``min_saved_fraction``: decode batches whose plan saves less than this fraction of per-request KV bytes go
        to the delegate, whatever their size (``pat_sglang.dispatch``; default: ``PAT_SGLANG_MIN_SAVED_FRACTION``, else
        the measured gate for the delegate and the KV format, stricter for batches of a few requests; 0: PAT serves
        every decode batch it can plan)."""
        super().__init__()
        self.device = runner_device(model_runner)
        heads, problems = model_problems(model_runner, kernels=self.device.type == "cuda")
        if problems or heads is None:
            raise UnsupportedModel(problems)
        self.heads = heads  # per TP rank: the layers' tp_q_head_num / tp_k_head_num
        self.device_spec = DeviceSpec.from_torch(self.device) if self.device.type == "cuda" else DeviceSpec()
        self.req_to_token_pool = model_runner.req_to_token_pool
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        remake = os.environ.get(REMAKE_PLANS_ENV, "").strip() == "1"
        self.planner = DecodeStepPlanner(heads, self.device_spec, self.req_to_token_pool.req_to_token,
                                         remake_plans=remake)
        if remake:
            logger.info(f"PAT: {REMAKE_PLANS_ENV}=1: a batch whose requests only left and joined gets last step's "
                        "plan re-made for the change (GPU time 0.997-1.008x the full plan's on the H200: joiners "
                        "re-read what they could share)")
        # The delegate's name sets the dispatch gate's default (None: one passed in, judged as fa3)
        delegate_name: str | None = None
        if delegate is None:
            delegate, delegate_name, why = build_delegate(model_runner)
            logger.info(f"PAT: prefill/extend and declined decode batches go to the {delegate_name!r} attention "
                        f"backend ({why})")
        self.delegate = delegate
        # This rank's paths: the table bound to its ReqToTokenPool (the scheduler patch publishes each batch
        # into its pool's table), a fresh one unless this pool already has one or one is passed in.
        pool = self.req_to_token_pool
        if chain_table is None:
            chain_table = chain_table_for(pool) or ChainTable()
        self.chain_table = chain_table_for(pool, chain_table)
        self.chain_table.enabled = True  # publishing costs scheduler time: on only for pools a PAT backend reads
        self.chain_table.reserve_rows(pool.req_to_token.shape[0])  # the compiled read takes rows within its arrays
        # The publisher's compiled batch pick loaded now, as the planner loads its own (DecodeStepPlanner): its first
        # load (the compiler's version check in a subprocess, a dlopen; a compile on a new machine) would otherwise land
        # in the scheduler's first changed decode batch.
        host_core.loaded_batch()
        self.warm_up = _warm_up(heads, self.device_spec, remake)
        # Decode batches whose plan saves less than this fraction of per-request KV bytes go to the delegate.
        if min_saved_fraction is None:
            self.gate = configured_gate(heads, delegate_name)
        else:
            self.gate = DispatchGate(checked_fraction(min_saved_fraction, "min_saved_fraction"))
        # The publisher keeps the gate's bound on every plan's bytes with its node counts (declined before a forest)
        self.chain_table.count_bound(self.planner.bound_shape if self.gate.strictest > 0.0 else None)
        if self.gate.strictest > 0.0:
            logger.info(
                f"PAT: decode batches whose plan saves less than {self.gate.describe()} of per-request KV bytes run on "
                f"the delegate ({MIN_SAVED_FRACTION_ENV}; 0: PAT serves every batch it can plan)"
            )
        else:
            logger.info("PAT: serves every decode batch it can plan (min saved fraction 0)")
        self.forward_metadata: PATMetadata | None = None  # None: the delegate serves the step
        self.graph_buffers: Any = None  # pat_sglang.kernels.StaticPlanBuffers once graphs are set up
        # sglang_patches.graph_variants: the decode graphs captured per batch size (empty: one, running PAT), the one
        # being captured, and the one the current step was prepared for.
        self.graph_variants: tuple[str, ...] = ()
        self.capture_variant: str | None = None
        self.replay_variant: str = PAT_VARIANT
        self._eager_plan: tuple[PackPlan, PackPlan] | None = None  # (host plan, its device copy), eager path
        # (published rows, padding, the rows with the padding rows appended): the last padded batch's rows, taken again
        # while the published rows are the same array (a republished batch keeps it) and the padding the same
        self._padded: tuple[np.ndarray, int, np.ndarray] | None = None
        self.stats = StepStats()
        self.step_log = StepLog.from_env()  # every step's host time as a row, when PAT_SGLANG_STEP_LOG names a folder
        if self.step_log is not None:
            logger.info(f"PAT: every decode step's host time is logged to {self.step_log.path}")
        self._warned: set[str] = set()
        # (k_scale, v_scale) per layer id: fixed once the weights are loaded (checked at start-up by model_problems)
        self._kv_scales: dict[int, tuple[float, float]] = {}

    # -------------------------------------------------------------------- metadata (once per step)
    def init_forward_metadata(self, forward_batch: Any) -> None:
        """Eager entry point: plan decode batches, hand everything else to the delegate."""
        self.forward_metadata = None
        if forward_batch.forward_mode.is_decode():
            self.forward_metadata = self._prepare_or_hand_over(forward_batch, static=False)
            if self.forward_metadata is not None:
                return
        self.delegate.init_forward_metadata(forward_batch)

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        cls = _static_plan_buffers()
        if cls is None:
            raise RuntimeError(
                "the pat attention backend cannot run in CUDA graphs in this build (pat_sglang.kernels."
                "StaticPlanBuffers is unavailable or CUDA_GRAPHS_ENABLED is off): pass --disable-cuda-graph"
            )
        cap = graph_capacity(max_bs, self.device_spec, self.heads)
        self.graph_buffers = cls(self.heads, cap.max_batch, cap.max_items, cap.max_partials, self.device,
                                 split_items=cap.split_items)
        if self.gate.strictest <= 0.0:
            self.graph_variants = ()  # PAT serves every decode batch: one graph per batch size
        elif graph_variants_patched():
            self.graph_variants = GRAPH_VARIANTS
            self.delegate.init_cuda_graph_state(max_bs, max_num_tokens)
        else:
            self.graph_variants = ()
            logger.warning(
                "PAT: the decode graph runner is not patched for per-variant graphs; under CUDA graphs PAT serves "
                "every decode batch, also those that share too little to gain (eager steps still go to the delegate)"
            )

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        return 1  # padded requests read one token of the padding row; their outputs are dropped

    def init_forward_metadata_out_graph(self, forward_batch: Any, in_capture: bool = False) -> None:
        """Capture and replay: plan on the host to fit the static buffers and load it, outside the graph."""
        if not forward_batch.forward_mode.is_decode():
            self.forward_metadata = None
            self.delegate.init_forward_metadata_out_graph(forward_batch, in_capture=in_capture)
            return
        if self.graph_buffers is None:
            raise RuntimeError("PAT: init_cuda_graph_state must run before CUDA-graph metadata")
        if in_capture and self.capture_variant == DELEGATE_VARIANT:
            self.forward_metadata = None
            self.delegate.init_forward_metadata_out_graph(forward_batch, in_capture=True)
            return
        if in_capture:
            # Graph capture runs dummy batches (padding rows, fill lengths) that the scheduler never published: a
            # no-sharing plan of their shape, nothing read back, not counted as serving steps.
            bs = int(forward_batch.batch_size)
            batch = StepBatch(np.full(bs, PADDING_ROW, dtype=np.int64), _seq_lens(forward_batch, bs), bs, None)
            plan = self.planner.plan(batch, self.graph_buffers.limits_for(bs), count=False)
            self.graph_buffers.load(plan)
            self.forward_metadata = PATMetadata(plan, static=True)
            return
        self.forward_metadata = self._prepare_or_hand_over(forward_batch, static=True)
        self.replay_variant = PAT_VARIANT if self.forward_metadata is not None else DELEGATE_VARIANT
        if self.forward_metadata is None:
            self.delegate.init_forward_metadata_out_graph(forward_batch)

    def init_forward_metadata_in_graph(self, forward_batch: Any) -> None:
        if not forward_batch.forward_mode.is_decode() or self.forward_metadata is None:
            self.delegate.init_forward_metadata_in_graph(forward_batch)
        # PAT decode: nothing to record; StaticPlanBuffers.load staged the plan before capture/replay, and the open
        # items end at the runner's static seq_lens / req_pool_indices, which it fills before each replay

    def _prepare_or_hand_over(self, forward_batch: Any, static: bool) -> PATMetadata | None:
        """``_prepare``, with a batch PAT cannot plan handed to the delegate (``None``, counted, logged once) wherever
        the delegate can take it: always eagerly, under CUDA graphs only with the delegate's graph captured (else the
        error stands: never guessed at)."""
        try:
            return self._prepare(forward_batch, static)
        except ValueError as e:
            if static and not self.graph_variants:
                raise
            self.stats.delegated += 1
            self._warn_once("delegated", f"PAT could not plan a decode batch ({e}); the delegate serves it")
            return None

    def _prepare(self, forward_batch: Any, static: bool) -> PATMetadata | None:
        """The step's plan, loaded where the kernels read it; ``None`` when the delegate serves the step."""
        if torch.autograd.profiler._is_profiler_enabled:  # a torch profiler trace shows the host step as one range
            with torch.profiler.record_function(PROFILE_RANGE):
                return self._prepare_step(forward_batch, static)
        return self._prepare_step(forward_batch, static)

    def _prepare_step(self, forward_batch: Any, static: bool) -> PATMetadata | None:
        gc_mark = GC_PAUSES.mark()
        start, cpu_start = time.perf_counter(), time.thread_time()
        batch = self._step_batch(forward_batch)
        # Under CUDA graphs without per-variant graphs, the captured graph runs PAT whatever the gate would say.
        min_saved = 0.0 if static and not self.graph_variants else self.gate.for_batch(batch.n_real)
        limits = self.graph_buffers.limits_for(batch.rows.shape[0]) if static else None
        plan = self.planner.plan(batch, limits, min_saved=min_saved)
        planned = time.perf_counter()
        md = PATMetadata(self._loaded(plan, static), static) if plan is not None else None
        now = time.perf_counter()
        phases = self.planner.phases
        # this step's publishing, if the batch is the one published (each publishing is counted once)
        publish_s, publish_gc, route = (self.chain_table.take_publish() if batch.published is not None
                                        else (0.0, None, ""))
        gc = GC_PAUSES.since(gc_mark)
        self.stats.record(now - start, gc, time.thread_time() - cpu_start,
                          lambda: describe_step(batch.n_real, phases, now - planned, plan, publish_s,
                                                gc_seconds(gc) + gc_seconds(publish_gc), route),
                          publish_s, publish_gc)
        if self.step_log is not None:
            self.step_log.add(batch.n_real, route, publish_s, now - start, phases, now - planned, plan,
                              gc_seconds(gc) + gc_seconds(publish_gc))
        if now - self.stats.last_log >= LOG_INTERVAL_S:
            self.stats.last_log = now
            logger.info(self.stats.summary(self.planner.counters, self.chain_table.routes_clause()))
            self.stats.new_interval()
            if self.step_log is not None:
                self.step_log.flush()
        return md

    def _loaded(self, plan: PackPlan, static: bool) -> PackPlan:
        """``plan`` where the kernels read it: staged into the static buffers (CUDA graphs), or its device copy."""
        if static:
            self.graph_buffers.load(plan)
        elif self.device.type != "cpu":
            last = self._eager_plan
            if last is not None and last[0] is plan:  # the same plan as last step: its device copy
                return last[1]
            self._eager_plan = (plan, plan.to(self.device))
            return self._eager_plan[1]
        return plan

    def _step_batch(self, fb: Any) -> StepBatch:
        """The batch on the host: rows and request ids from the batch the scheduler patch published
        (``ChainTable.batch``), lengths from SGLang's ``seq_lens_cpu``. ``req_pool_indices`` (a GPU tensor) is read
        back only when no published batch matches (counted, and warned about once)."""
        bs = int(fb.batch_size)
        pad = int(getattr(fb, "num_padding", 0) or 0)
        n_real = bs - pad
        seq_lens = _seq_lens(fb, bs)
        rids = getattr(fb, "rids", None)
        pb = self.chain_table.batch
        # The published batch is this one when its size, request ids (where the batch has them) and host lengths
        # agree; anything else is read back rather than guessed.
        if (
            pb is not None
            and pb.rows.shape[0] == n_real
            and (rids is None or tuple(rids) == pb.rids)
            and (pb.seq_lens is None or same_ints(pb.seq_lens, seq_lens[:n_real]))
        ):
            return StepBatch(self._padded_rows(pb.rows, pad), seq_lens, n_real, pb)
        self.stats.row_reads += 1
        self._warn_once(
            "rows",
            "PAT: a decode batch did not match the batch the scheduler published; reading req_pool_indices back "
            "and planning it without sharing (counted in the PAT stats line)",
        )
        rows = fb.req_pool_indices.detach().cpu().numpy().astype(np.int64)[:bs]
        return StepBatch(rows, seq_lens, n_real, None)

    def _padded_rows(self, rows: np.ndarray, pad: int) -> np.ndarray:
        """The published ``rows`` with ``pad`` padding rows (``PADDING_ROW``) after them (read-only, like ``rows``)."""
        if not pad:
            return rows
        last = self._padded
        if last is None or last[0] is not rows or last[1] != pad:
            padded = np.concatenate([rows, np.full(pad, PADDING_ROW, dtype=np.int64)])
            padded.setflags(write=False)
            last = self._padded = (rows, pad, padded)
        return last[2]

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
            # Same store as SGLang's triton backend: the step's new token, before attention reads it; an FP8 pool
            # stores k / k_scale (a 16-bit pool ignores the scales).
            if layer.k_scale is None and layer.v_scale is None:
                self.token_to_kv_pool.set_kv_buffer(layer, forward_batch.out_cache_loc, k, v)
            else:
                self.token_to_kv_pool.set_kv_buffer(
                    layer, forward_batch.out_cache_loc, k, v, layer.k_scale, layer.v_scale
                )
        k_buffer = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_buffer = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        scales = self._kv_scales.get(layer.layer_id)
        if scales is None:
            try:
                scales = self._kv_scales[layer.layer_id] = layer_kv_scales(layer, self.heads.kv_fp8)
            except ValueError as e:  # checked at start-up (model_problems); here only if the scales changed since
                raise ValueError(str(Problem(str(e), layer.layer_id))) from e
        k_scale, v_scale = scales
        q3 = q.reshape(-1, hq, d).contiguous()
        # open items end at the requests' lengths now (under CUDA graphs: the runner's static buffers)
        seq_lens, rows = forward_batch.seq_lens, forward_batch.req_pool_indices
        if md.static:
            out = self.graph_buffers.run(q3, k_buffer, v_buffer, layer.scaling, torch.empty_like(q3), k_scale, v_scale,
                                         seq_lens, rows)
        else:
            out = run(md.plan, q3, k_buffer, v_buffer, layer.scaling, k_scale=k_scale, v_scale=v_scale,
                      seq_lens=seq_lens, req_rows=rows)
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


def _seq_lens(fb: Any, bs: int) -> np.ndarray:
    """The batch's sequence lengths on the host: SGLang's ``seq_lens_cpu`` (``seq_lens`` only where it has none)."""
    lengths = getattr(fb, "seq_lens_cpu", None)
    return host_int64(lengths if lengths is not None else fb.seq_lens)[:bs]


def _static_plan_buffers() -> type | None:
    if not CUDA_GRAPHS_ENABLED:
        return None
    try:
        from .kernels import StaticPlanBuffers
    except ImportError:
        return None
    return StaticPlanBuffers
