"""The public standalone API: ``plan`` once per step, ``run`` per layer, or ``decode_attention`` for both.

Role in pack-forward-merge: the front door. ``plan`` builds the forest from flat KV indices and packs
it (CPU work); ``run`` launches forward + merge (the NVRTC kernels on CUDA tensors, the reference
executor on CPU tensors) and checks the tensors against the plan first, so a bad call is a clear
``ValueError`` rather than a fault inside a kernel.
"""

from __future__ import annotations

import math

import torch

from .config import DeviceSpec, HeadConfig, check_supported
from .forest import PrefixForest
from .planner import PackPlan, plan_forest
from .reference import run_reference


def plan(
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    heads: HeadConfig,
    device: DeviceSpec | None = None,
) -> PackPlan:
    """Find the shared prefixes of a decode batch and pack them. Host tensors or lists are fine."""
    forest = PrefixForest.from_flat(kv_indptr, kv_indices)
    return plan_forest(forest, heads, device)


def heads_of(q: torch.Tensor, k_buffer: torch.Tensor) -> HeadConfig:
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, num_q_heads, head_dim], got shape {tuple(q.shape)}")
    if k_buffer.dim() != 3:
        raise ValueError(f"k_buffer must be [num_slots, num_kv_heads, head_dim], got {tuple(k_buffer.shape)}")
    return HeadConfig(q.shape[1], k_buffer.shape[1], q.shape[2], q.dtype)


def check_run_inputs(plan: PackPlan, q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor) -> None:
    heads = heads_of(q, k_buffer)
    if k_buffer.shape != v_buffer.shape:
        raise ValueError(f"k_buffer {tuple(k_buffer.shape)} and v_buffer {tuple(v_buffer.shape)} differ in shape")
    if k_buffer.shape[2] != q.shape[2]:
        raise ValueError(f"head_dim of q ({q.shape[2]}) and k_buffer ({k_buffer.shape[2]}) differ")
    if not (q.dtype == k_buffer.dtype == v_buffer.dtype):
        raise ValueError(f"q, k_buffer, v_buffer dtypes differ: {q.dtype}, {k_buffer.dtype}, {v_buffer.dtype}")
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
) -> torch.Tensor:
    """Attention of ``q`` over the KV the plan describes; returns ``[batch, num_q_heads, head_dim]``.

    Launch-only on CUDA tensors: the inputs are checked in full the first time a plan meets a given set of shapes,
    dtypes and devices, and the kernels and launch arguments are resolved once per plan (``kernels.plan_launch``)."""
    key = (q.shape, k_buffer.shape, v_buffer.shape, q.dtype, k_buffer.dtype, v_buffer.dtype, q.device,
           k_buffer.device, v_buffer.device)
    checked = plan.__dict__.setdefault("_checked_inputs", set())
    if key not in checked:
        check_run_inputs(plan, q, k_buffer, v_buffer)
        if q.is_cuda:
            check_supported(heads_of(q, k_buffer))
        checked.add(key)
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[2])
    if q.is_cuda:
        from .kernels import launch_plan  # imported lazily: needs cuda-python and a GPU

        return launch_plan(plan, q, k_buffer, v_buffer, sm_scale, out)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    result = run_reference(plan, q, k_buffer, v_buffer, sm_scale, compute).to(q.dtype)
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
) -> torch.Tensor:
    """Prefix-aware decode attention: same result as per-request softmax attention."""
    heads = heads_of(q, k_buffer)
    device = DeviceSpec.from_torch(q.device) if q.is_cuda else None
    p = plan(kv_indptr, kv_indices, heads, device)
    if q.is_cuda:
        p = p.to(q.device)
    return run(p, q, k_buffer, v_buffer, sm_scale)
