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

import torch

from .config import DeviceSpec, HeadConfig, check_supported, kv_pool_view
from .forest import flat_forest_scanning
from .planner import PackPlan, check_max_slot, plan_forest
from .reference import run_reference


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


def heads_of(q: torch.Tensor, k_buffer: torch.Tensor) -> HeadConfig:
    """The head configuration of these tensors (KV dtype from the pool: a uint8 pool is refused here, since only a
    plan's ``HeadConfig.kv_dtype`` can say which FP8 format it holds)."""
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, num_q_heads, head_dim], got shape {tuple(q.shape)}")
    if k_buffer.dim() != 3:
        raise ValueError(f"k_buffer must be [num_slots, num_kv_heads, head_dim], got {tuple(k_buffer.shape)}")
    if k_buffer.dtype == torch.uint8:
        raise ValueError("a uint8 KV pool needs its FP8 format: pass a float8 view, or a plan whose heads name it")
    return HeadConfig(q.shape[1], k_buffer.shape[1], q.shape[2], q.dtype, k_buffer.dtype)


def check_run_inputs(plan: PackPlan, q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor) -> None:
    k_buffer, v_buffer = kv_pool_view(k_buffer, plan.heads), kv_pool_view(v_buffer, plan.heads)
    heads = heads_of(q, k_buffer)
    if k_buffer.shape != v_buffer.shape:
        raise ValueError(f"k_buffer {tuple(k_buffer.shape)} and v_buffer {tuple(v_buffer.shape)} differ in shape")
    if k_buffer.shape[2] != q.shape[2]:
        raise ValueError(f"head_dim of q ({q.shape[2]}) and k_buffer ({k_buffer.shape[2]}) differ")
    if k_buffer.dtype != v_buffer.dtype:
        raise ValueError(f"k_buffer and v_buffer dtypes differ: {k_buffer.dtype}, {v_buffer.dtype}")
    if k_buffer.dtype != q.dtype and not heads.kv_fp8:
        raise ValueError(f"q and KV pool dtypes differ ({q.dtype}, {k_buffer.dtype}): the pools must match q or be FP8")
    if q.is_cuda and (heads.dtype, heads.kv_dtype) != (plan.heads.dtype, plan.heads.kv_dtype):
        want = f"{plan.heads.dtype}/{plan.heads.kv_dtype}"
        raise ValueError(f"q/KV dtypes {heads.dtype}/{heads.kv_dtype} differ from the plan's {want}")
    if (heads.num_q_heads, heads.num_kv_heads, heads.head_dim) != (
        plan.heads.num_q_heads,
        plan.heads.num_kv_heads,
        plan.heads.head_dim,
    ):
        raise ValueError(f"tensors have heads {heads}, but the plan was made for {plan.heads}")
    if q.shape[0] != plan.num_requests:
        raise ValueError(f"q has batch {q.shape[0]}, the plan has {plan.num_requests} requests")
    if plan.max_slot is not None and plan.max_slot >= k_buffer.shape[0]:
        raise ValueError(f"plan reads KV slot {plan.max_slot}, but the pools hold {k_buffer.shape[0]} slots")
    if not (q.device == k_buffer.device == v_buffer.device):
        raise ValueError("q, k_buffer and v_buffer must be on one device")


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

    Launch-only on CUDA tensors: the inputs are checked in full the first time a plan meets a given set of shapes,
    dtypes and devices, and the kernels and launch arguments are resolved once per plan (``kernels.plan_launch``)."""
    key = (q.shape, k_buffer.shape, v_buffer.shape, q.dtype, k_buffer.dtype, v_buffer.dtype, q.device,
           k_buffer.device, v_buffer.device)
    checked = plan.__dict__.setdefault("_checked_inputs", set())
    if key not in checked:
        check_run_inputs(plan, q, k_buffer, v_buffer)
        if q.is_cuda:
            check_supported(heads_of(q, kv_pool_view(k_buffer, plan.heads)))
        checked.add(key)
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[2])
    if q.is_cuda:
        from .kernels import launch_plan  # imported lazily: needs cuda-python and a GPU

        return launch_plan(plan, q, k_buffer, v_buffer, sm_scale, out, k_scale=k_scale, v_scale=v_scale,
                           seq_lens=seq_lens, req_rows=req_rows)
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
