"""The eager launch's input checks without a GPU: ``kernels.PlanLaunch`` (as ``plan_launch`` makes it for ``run`` on
CUDA tensors) checks q, the pools and out against the plan whenever it meets new shapes, strides, dtypes or devices,
and only then: a bad call is a ``ValueError`` before anything is launched, a repeated good call writes its arguments
and launches. The kernels and the launch are stand-ins; the tensors are the CPU twins of a real plan's."""

from __future__ import annotations

import gc
import math
import types
import weakref

import pytest
import torch

import pat_sglang
from pat_sglang import kernels
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.run_inputs import check_run_inputs
from pat_sglang.workloads import make_qkv, standard_batch

HEADS = HeadConfig(32, 8, 128, torch.bfloat16)


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch):
    batch = standard_batch("a32")
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, HEADS, DeviceSpec())
    q, k, v = make_qkv(batch.batch, 32, 8, 128, batch.num_slots, torch.bfloat16, "cpu", seed=3)
    variant = types.SimpleNamespace(threads=128, smem_bytes=0, max_tile_m=64, wide_stages=0)
    kern = types.SimpleNamespace(forward=1, merge=2, wide=None, variant=variant)
    tensors = {name: getattr(plan, name) for name in kernels._PLAN_TENSORS}
    tensors["part_o"] = torch.empty((max(plan.num_partials, 1), 32, 128), dtype=torch.bfloat16)
    tensors["part_lse"] = torch.empty((max(plan.num_partials, 1), 32))
    calls = []

    def check(*args: torch.Tensor) -> None:
        calls.append(args)
        check_run_inputs(plan.heads, plan.num_requests, plan.max_slot, *args)

    launch = kernels.PlanLaunch(kern, HEADS, tensors, plan.num_items, plan.num_requests, merge=plan.num_partials > 0,
                                check_inputs=check)
    launches = []
    monkeypatch.setattr(launch, "launch", lambda stream, device_index=None: launches.append(stream))
    monkeypatch.setattr(kernels, "_raw_stream", lambda index: 7)
    return types.SimpleNamespace(plan=plan, q=q, k=k, v=v, launch=launch, calls=calls, launches=launches)


def test_good_calls_write_their_arguments_and_are_checked_once_per_layout(setup) -> None:
    s = setup
    out = torch.empty_like(s.q)
    for _ in range(3):
        assert s.launch(s.q, s.k, s.v, out, 0.1, v_scale=0.5) is out
    assert len(s.calls) == 1 and s.launches == [7, 7, 7]
    f = s.launch.fwd
    assert (f.q, f.k, f.v, f.out) == (s.q.data_ptr(), s.k.data_ptr(), s.v.data_ptr(), out.data_ptr())
    assert (f.q_stride, f.out_stride, f.kv_stride_slot, f.kv_stride_head) == (32 * 128, 32 * 128, 8 * 128, 128)
    assert f.scale_log2 == pytest.approx(0.1 / math.log(2)) and f.v_scale == 0.5
    # other tensors of the same layout (the next layer's q and pools): written, not checked again
    q2, k2, v2 = (t.clone() for t in (s.q, s.k, s.v))
    s.launch(q2, k2, v2, torch.empty_like(q2), 0.1)
    assert len(s.calls) == 1 and s.launch.fwd.k == k2.data_ptr()
    # a pool of another size is checked again (it holds every slot the plan reads: accepted)
    big_k, big_v = (torch.cat([t, t[:5]]) for t in (s.k, s.v))
    s.launch(s.q, big_k, big_v, out, 0.1)
    assert len(s.calls) == 2


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: (s.q, s.k[:10], s.v[:10], torch.empty_like(s.q)), "pools hold"),
        (lambda s: (s.q[:2], s.k, s.v, torch.empty_like(s.q[:2])), "batch"),
        (lambda s: (s.q[:, :4], s.k[:, :1], s.v[:, :1], torch.empty_like(s.q[:, :4])), "heads"),
        (lambda s: (s.q, s.k, s.v.half(), torch.empty_like(s.q)), "dtypes differ"),
        (lambda s: (s.q, s.k, s.v, torch.empty_like(s.q)[:, :16]), "out must match q"),
        (lambda s: (s.q, s.k, s.v, torch.empty_like(s.q, dtype=torch.float16)), "out must match q"),
    ],
)
def test_bad_calls_raise_before_any_launch(setup, edit, match: str) -> None:
    s = setup
    s.launch(s.q, s.k, s.v, torch.empty_like(s.q), 0.1)  # a good layout first: the bad one must not pass as it
    with pytest.raises(ValueError, match=match):
        s.launch(*edit(s), 0.1)
    assert s.launches == [7]
    with pytest.raises(ValueError, match=match):  # and again: a failed check is not remembered as passed
        s.launch(*edit(s), 0.1)



def test_pools_are_remembered_weakly_and_read_afresh_when_gone(setup) -> None:
    """A layer's pools are read once (their strides written on every call), without keeping them alive: once freed,
    pools of another layout passed next are checked again, and bad ones still raise before any launch."""
    s = setup
    out = torch.empty_like(s.q)
    k2, v2 = s.k.clone(), s.v.clone()
    s.launch(s.q, k2, v2, out, 0.1)
    s.launch(s.q, k2, v2, out, 0.1)
    assert len(s.calls) == 1 and s.launch.fwd.v == v2.data_ptr()
    s.calls.clear()  # the stand-in check keeps what it was passed; the launch must not
    gone = weakref.ref(k2)
    del k2, v2
    gc.collect()
    assert gone() is None  # the launch held no reference to the pools
    wide_k, wide_v = (torch.cat([t, t], dim=2)[:, :, :128] for t in (s.k, s.v))  # a head row stride of 256 elements
    s.launch(s.q, wide_k, wide_v, out, 0.1)
    assert len(s.calls) == 1 and (s.launch.fwd.kv_stride_slot, s.launch.fwd.kv_stride_head) == (8 * 256, 256)
    for _ in range(2):  # a pool too small for the plan's slots, new each time or the same object again
        short_k, short_v = s.k[:10], s.v[:10]
        with pytest.raises(ValueError, match="pools hold"):
            s.launch(s.q, short_k, short_v, out, 0.1)
        with pytest.raises(ValueError, match="pools hold"):
            s.launch(s.q, short_k, short_v, out, 0.1)
    assert s.launches == [7, 7, 7]


def test_uint8_fp8_pools_are_viewed_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """SGLang stores FP8 pools as uint8: each call views them as the plan's FP8 format (the launch reads the view's
    layout, remembered per pool pair) and writes their pointers."""
    heads = HeadConfig(32, 8, 128, torch.bfloat16, torch.float8_e4m3fn)
    batch = standard_batch("a32")
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec())
    q, k, v = make_qkv(batch.batch, 32, 8, 128, batch.num_slots, torch.bfloat16, "cpu", seed=5)
    k8, v8 = (t.to(torch.float8_e4m3fn).view(torch.uint8) for t in (k, v))
    variant = types.SimpleNamespace(threads=128, smem_bytes=0, max_tile_m=64, wide_stages=0)
    kern = types.SimpleNamespace(forward=1, merge=2, wide=None, variant=variant)
    tensors = {name: getattr(plan, name) for name in kernels._PLAN_TENSORS}
    seen = []

    def check(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> None:
        seen.append((k_.dtype, v_.dtype))
        check_run_inputs(plan.heads, plan.num_requests, plan.max_slot, q_, k_, v_)

    launch = kernels.PlanLaunch(kern, heads, tensors, plan.num_items, plan.num_requests, merge=plan.num_partials > 0,
                                check_inputs=check)
    monkeypatch.setattr(launch, "launch", lambda stream, device_index=None: None)
    monkeypatch.setattr(kernels, "_raw_stream", lambda index: 0)
    out = torch.empty_like(q)
    for _ in range(2):
        launch(q, k8, v8, out, 0.1)
    assert seen == [(torch.float8_e4m3fn, torch.float8_e4m3fn)]
    assert (launch.fwd.k, launch.fwd.v) == (k8.data_ptr(), v8.data_ptr())
    assert (launch.fwd.kv_stride_slot, launch.fwd.kv_stride_head) == (8 * 128, 128)
