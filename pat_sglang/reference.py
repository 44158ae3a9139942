"""Torch reference executor: runs a ``PackPlan`` exactly as the kernels do, in any dtype (float64 for tests).

Role in pack-forward-merge: the oracle. *forward* = per item, attention of the item's query rows over the
item's KV range (slot indices read from the plan's slot table), giving a normalised partial output and its
log-sum-exp; *merge* = per request, the softmax-weighted combination of its partials. Also holds
``naive_decode``, plain per-request attention, which the plan's result must equal.

Open items (``planner.ITEM_OPEN_END``) end where the kernel ends them: at ``rows[r] * row_stride + seq_lens[r]`` of
their request, from the lengths and rows of the step the plan is run at (``PackPlan.items_at``), which may be longer
than those it was made for.
"""

from __future__ import annotations

import torch

from .config import kv_pool_view
from .planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_REQ_BEGIN, ITEM_REQ_END, PackPlan


def dequantised_rows(
    buffer: torch.Tensor, slots: torch.Tensor, scale: float, compute_dtype: torch.dtype
) -> torch.Tensor:
    """Pool rows ``slots`` in ``compute_dtype``, times ``scale`` (dequantised = stored * scale, SGLang's FP8 KV
    convention; 1 for 16-bit pools). FP8 rows are gathered as bytes: float8 indexing is not implemented everywhere
    in torch."""
    if buffer.element_size() == 1 and buffer.dtype != torch.uint8:
        rows = buffer.view(torch.uint8)[slots].view(buffer.dtype)
    else:
        rows = buffer[slots]
    rows = rows.to(compute_dtype)
    return rows if scale == 1.0 else rows * scale


def _expand_heads(x: torch.Tensor, group: int) -> torch.Tensor:
    """[T, hkv, d] -> [T, hkv * group, d], each KV head repeated for its group (a view-based expand:
    repeat_interleave with an int count is very slow on the CPU)."""
    t, hkv, d = x.shape
    return x[:, :, None, :].expand(t, hkv, group, d).reshape(t, hkv * group, d)


def naive_decode(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
    compute_dtype: torch.dtype = torch.float64,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> torch.Tensor:
    """Plain softmax attention per request over the dequantised KV: the definition PAT must match."""
    batch, hq, _ = q.shape
    group = hq // k_buffer.shape[1]
    out = torch.empty(q.shape, dtype=compute_dtype, device=q.device)
    for b in range(batch):
        idx = kv_indices[int(kv_indptr[b]) : int(kv_indptr[b + 1])].long()
        k = _expand_heads(dequantised_rows(k_buffer, idx, k_scale, compute_dtype), group)  # [T, hq, d]
        v = _expand_heads(dequantised_rows(v_buffer, idx, v_scale, compute_dtype), group)
        s = torch.einsum("hd,thd->ht", q[b].to(compute_dtype), k) * sm_scale
        out[b] = torch.einsum("ht,thd->hd", torch.softmax(s, dim=-1), v)
    return out


def run_reference(
    plan: PackPlan,
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    sm_scale: float,
    compute_dtype: torch.dtype = torch.float64,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    seq_lens: object = None,
    rows: object = None,
) -> torch.Tensor:
    """Execute ``plan`` in torch; returns ``[batch, num_q_heads, head_dim]`` in ``compute_dtype``. FP8 pools
    (or their uint8 storage, read as the plan's KV dtype) are dequantised with ``k_scale``/``v_scale``.
    ``seq_lens``/``rows``: per request, its length and slot-table row now (needed when the plan has open items)."""
    heads = plan.heads
    group = heads.group
    batch = q.shape[0]
    if plan.num_open:
        if seq_lens is None or rows is None:
            raise ValueError("the plan has open items: pass the requests' seq_lens and rows")
        items = torch.from_numpy(plan.items_at(seq_lens, rows))
    else:
        items = plan.items.cpu()
    slot_table = plan.slot_table.cpu().long()
    item_req = plan.item_req.cpu().long()
    item_dst = plan.item_dst.cpu().long()
    qc = q.to(compute_dtype)
    k_buffer, v_buffer = kv_pool_view(k_buffer, heads), kv_pool_view(v_buffer, heads)

    nan = float("nan")
    out = torch.full((batch, heads.num_q_heads, heads.head_dim), nan, dtype=compute_dtype, device=q.device)
    part_o = torch.full(
        (plan.num_partials, heads.num_q_heads, heads.head_dim), nan, dtype=compute_dtype, device=q.device
    )
    part_lse = torch.full((plan.num_partials, heads.num_q_heads), nan, dtype=compute_dtype, device=q.device)

    for it in items.tolist():
        slots = slot_table[it[ITEM_KV_BEGIN] : it[ITEM_KV_END]].to(q.device)
        reqs = item_req[it[ITEM_REQ_BEGIN] : it[ITEM_REQ_END]]
        dsts = item_dst[it[ITEM_REQ_BEGIN] : it[ITEM_REQ_END]]
        k = _expand_heads(dequantised_rows(k_buffer, slots, k_scale, compute_dtype), group)  # [T, hq, d]
        v = _expand_heads(dequantised_rows(v_buffer, slots, v_scale, compute_dtype), group)
        qs = qc[reqs.to(q.device)]  # [R, hq, d]
        s = torch.einsum("rhd,thd->rht", qs, k) * sm_scale
        lse = torch.logsumexp(s, dim=-1)  # [R, hq]
        o = torch.einsum("rht,thd->rhd", torch.exp(s - lse[..., None]), v)
        for j, (r, dst) in enumerate(zip(reqs.tolist(), dsts.tolist(), strict=True)):
            if dst < 0:
                out[r] = o[j]
            else:
                part_o[dst] = o[j]
                part_lse[dst] = lse[j]

    indptr = plan.merge_indptr.cpu().tolist()
    partials = plan.merge_partials.cpu().long()
    for r in range(batch):
        lo, hi = indptr[r], indptr[r + 1]
        if hi == lo:
            continue
        sel = partials[lo:hi].to(q.device)
        w = torch.softmax(part_lse[sel], dim=0)  # [P, hq]
        out[r] = torch.einsum("ph,phd->hd", w, part_o[sel])
    return out


def sampled_naive_decode(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
    count: int = 8,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> tuple[list[int], torch.Tensor]:
    """(requests, their ``naive_decode`` in float64 on the CPU): ``count`` requests spread evenly over the batch, first
    and last included, for checking a fast path on a batch too large for a whole reference. Pools on any device."""
    sel = sorted({int(i) for i in torch.linspace(0, q.shape[0] - 1, count).round().long().tolist()})
    ptr = kv_indptr.cpu().long()
    spans = [(int(ptr[i]), int(ptr[i + 1])) for i in sel]
    sub_ptr = torch.tensor([0] + [e - b for b, e in spans], dtype=torch.int64).cumsum(0)
    sub_idx = torch.cat([kv_indices.cpu()[b:e] for b, e in spans])
    return sel, naive_decode(q[sel].cpu(), k_buffer.cpu(), v_buffer.cpu(), sub_ptr, sub_idx, sm_scale,
                             k_scale=k_scale, v_scale=v_scale)
