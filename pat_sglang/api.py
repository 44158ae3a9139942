"""The public standalone API: ``plan`` once per step, ``run`` per layer, or ``decode_attention`` for both.

Role in pack-forward-merge: the front door. ``plan`` builds the forest from flat KV indices and packs
it (CPU work); ``run`` launches forward + merge (the NVRTC kernels on CUDA tensors, the reference
executor on CPU tensors) and checks the tensors against the plan first, so a bad call is a clear
``ValueError`` rather than a fault inside a kernel.

FP8 KV: pools in ``torch.float8_e4m3fn`` / ``torch.float8_e5m2`` (or SGLang's uint8 storage of them, when the
plan's ``HeadConfig.kv_dtype`` declares the format) with bf16/fp16 queries; ``k_scale``/``v_scale`` dequantise
(value = stored * scale, per tensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import DeviceSpec, HeadConfig
from .forest import flat_forest_scanning
from .planner import PackPlan, check_max_slot, plan_forest
from .reference import run_reference
from .run_inputs import check_run_inputs, heads_of


def _launch_plan() -> Callable[..., torch.Tensor]:
    """``kernels.launch_plan``, imported on the first CUDA call (it needs cuda-python and a GPU), then cached."""
    global _LAUNCH_PLAN
    if _LAUNCH_PLAN is None:
        from .kernels import launch_plan

        _LAUNCH_PLAN = launch_plan
    return _LAUNCH_PLAN


_LAUNCH_PLAN = None


def plan(
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    heads: HeadConfig,
    device: DeviceSpec | None = None,
) -> PackPlan:
    """Find the shared prefixes of a decode batch and pack them. Host tensors or lists are fine.

    The slots' check (none negative) and maximum (``PackPlan.max_slot``, checked against the pool in ``run``) are
    found on the host library's worker thread while the forest is planned (``flat_forest_scanning``): the same plan
    as ``plan_forest(PrefixForest.from_flat(...))``, and the same errors (a negative slot's before planning's)."""
    forest, settle = flat_forest_scanning(kv_indptr, kv_indices)
    try:
        made = plan_forest(forest, heads, device)  # plans with a provisional slot_max, not read for the plan's shape
    finally:
        max_slot = settle()  # joins the scan on every path; a negative slot raises here, as from_flat would first
    check_max_slot(max_slot)
    made.max_slot = max_slot
    return made


def run(
    plan: PackPlan,
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    sm_scale: float | None = None,
    out: torch.Tensor | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    seq_lens: torch.Tensor | None = None,
    req_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of ``q`` over the KV the plan describes; returns ``[batch, num_q_heads, head_dim]``.
    ``k_scale``/``v_scale``: per-tensor dequantisation scales of the pools (value = stored * scale).
    ``seq_lens``/``req_rows``: for plans with open items (the SGLang backend's, made with ``row_stride``): each
    request's length and slot-table row now (SGLang's ``forward_batch.seq_lens`` and ``req_pool_indices``, int64, on
    q's device), which end its open item; plans from flat indices have none.

    Launch-only on CUDA tensors: the kernels and launch arguments are resolved once per plan
    (``kernels.plan_launch``), and the inputs are checked in full (``run_inputs.check_run_inputs``) whenever that
    launch meets new shapes, strides, dtypes or devices."""
    if sm_scale is None:  # the plan's head dim: q's wherever the checks pass, and known before them
        sm_scale = 1.0 / math.sqrt(plan.heads.head_dim)
    if q.is_cuda:
        return _launch_plan()(plan, q, k_buffer, v_buffer, sm_scale, out, k_scale=k_scale, v_scale=v_scale,
                              seq_lens=seq_lens, req_rows=req_rows)
    check_run_inputs(plan.heads, plan.num_requests, plan.max_slot, q, k_buffer, v_buffer)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    result = run_reference(plan, q, k_buffer, v_buffer, sm_scale, compute, k_scale, v_scale, seq_lens,
                           req_rows).to(q.dtype)
    if out is not None:
        out.copy_(result)
        return out
    return result


def decode_attention(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> torch.Tensor:
    """Prefix-aware decode attention: same result as per-request softmax attention (over the dequantised KV for
    FP8 pools)."""
    heads = heads_of(q, k_buffer)
    device = DeviceSpec.from_torch(q.device) if q.is_cuda else None
    p = plan(kv_indptr, kv_indices, heads, device)
    if q.is_cuda:
        p = p.to(q.device)
    return run(p, q, k_buffer, v_buffer, sm_scale, k_scale=k_scale, v_scale=v_scale)
