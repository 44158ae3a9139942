"""``bench/tile_sweep.py``'s FP8 pools (``stored_kv``, ``bench_kv_scale``): the one convention the kernel sweeps,
``item_costs.py`` and ``split_regret.py`` make their FP8 pools by."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scripts import load_script

from pat_sglang.config import HeadConfig

SWEEP = load_script(Path(__file__).resolve().parent.parent / "bench" / "tile_sweep.py")


@pytest.mark.parametrize("kv_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_pools_hold_the_values_over_the_bench_scale(kv_dtype: torch.dtype) -> None:
    """``stored_kv``: FP8 pools read back as stored x ``bench_kv_scale`` give the bf16 values within FP8 rounding (and
    the scale is not 1, so the kernels' scale path is exercised); 16-bit pools are the values themselves, scale 1."""
    g = torch.Generator().manual_seed(0)
    k16 = torch.randn(64, 8, 128, generator=g).to(torch.bfloat16)
    v16 = torch.randn(64, 8, 128, generator=g).to(torch.bfloat16)
    bf16 = HeadConfig(32, 8, 128, torch.bfloat16)
    assert SWEEP.stored_kv(k16, v16, bf16) == (k16, v16) and SWEEP.bench_kv_scale(bf16) == 1.0
    fp8 = HeadConfig(32, 8, 128, torch.bfloat16, kv_dtype)
    scale = SWEEP.bench_kv_scale(fp8)
    assert scale != 1.0
    k, v = SWEEP.stored_kv(k16, v16, fp8)
    assert k.dtype == v.dtype == kv_dtype
    bound = 0.07 if kv_dtype == torch.float8_e4m3fn else 0.13  # relative step of 3 / 2 mantissa bits, halved, + slack
    for stored, want in ((k, k16), (v, v16)):
        back = stored.float() * scale
        assert torch.all((back - want.float()).abs() <= bound * want.float().abs() + 1e-2)
