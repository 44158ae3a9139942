"""The checks of ``run``'s tensors against the plan they are run with.

Role in pack-forward-merge: the guard in front of *forward*: a call whose tensors do not fit its plan (heads, dtypes,
batch, pool size, devices) is a clear ``ValueError`` before anything is launched, never a fault inside a kernel. The
standalone ``run`` checks CPU calls here; CUDA calls are checked by the plan's resolved launch
(``kernels.PlanLaunch``) whenever it meets new shapes, strides, dtypes or devices.
"""

from __future__ import annotations

import torch

from .config import HeadConfig, check_supported, kv_pool_view


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


def check_run_inputs(plan_heads: HeadConfig, num_requests: int, max_slot: int | None, q: torch.Tensor,
                     k_buffer: torch.Tensor, v_buffer: torch.Tensor) -> None:
    """``q`` and the pools against a plan made for ``plan_heads`` over ``num_requests`` requests reading slots up to
    ``max_slot`` (None: not known); on CUDA tensors also whether the kernels serve those heads."""
    k_buffer, v_buffer = kv_pool_view(k_buffer, plan_heads), kv_pool_view(v_buffer, plan_heads)
    heads = heads_of(q, k_buffer)
    if k_buffer.shape != v_buffer.shape:
        raise ValueError(f"k_buffer {tuple(k_buffer.shape)} and v_buffer {tuple(v_buffer.shape)} differ in shape")
    if k_buffer.shape[2] != q.shape[2]:
        raise ValueError(f"head_dim of q ({q.shape[2]}) and k_buffer ({k_buffer.shape[2]}) differ")
    if k_buffer.dtype != v_buffer.dtype:
        raise ValueError(f"k_buffer and v_buffer dtypes differ: {k_buffer.dtype}, {v_buffer.dtype}")
    if k_buffer.dtype != q.dtype and not heads.kv_fp8:
        raise ValueError(f"q and KV pool dtypes differ ({q.dtype}, {k_buffer.dtype}): the pools must match q or be FP8")
    if q.is_cuda and (heads.dtype, heads.kv_dtype) != (plan_heads.dtype, plan_heads.kv_dtype):
        want = f"{plan_heads.dtype}/{plan_heads.kv_dtype}"
        raise ValueError(f"q/KV dtypes {heads.dtype}/{heads.kv_dtype} differ from the plan's {want}")
    if (heads.num_q_heads, heads.num_kv_heads, heads.head_dim) != (
        plan_heads.num_q_heads,
        plan_heads.num_kv_heads,
        plan_heads.head_dim,
    ):
        raise ValueError(f"tensors have heads {heads}, but the plan was made for {plan_heads}")
    if q.shape[0] != num_requests:
        raise ValueError(f"q has batch {q.shape[0]}, the plan has {num_requests} requests")
    if max_slot is not None and max_slot >= k_buffer.shape[0]:
        raise ValueError(f"plan reads KV slot {max_slot}, but the pools hold {k_buffer.shape[0]} slots")
    if not (q.device == k_buffer.device == v_buffer.device):
        raise ValueError("q, k_buffer and v_buffer must be on one device")
    if q.is_cuda:
        check_supported(heads)
