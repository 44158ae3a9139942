"""What every GPU test module shares: its pytest marks, fresh seeds, and the check of a kernel's poisoned output
against the float64 reference."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

GPU_ONLY = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TOL = 2e-2  # relative error bound for 16-bit and FP8 KV (the guide's bf16/fp16 bound)


def seed_counter(first: int) -> Callable[[], int]:
    """A fresh seed per call (``first + 1``, ``first + 2``, ...): every check draws new inputs."""
    return itertools.count(first + 1).__next__


def assert_written_and_close(out: torch.Tensor, ref: torch.Tensor, what: str = "", tol: float = TOL) -> None:
    """``out`` (poisoned with NaN before the launch) is fully written and within ``tol`` of ``ref`` (float64)."""
    got = out.double().cpu()
    prefix = f"{what}: " if what else ""
    assert not torch.isnan(got).any(), f"{prefix}{int(torch.isnan(got).sum())} output elements not written"
    err = float((got - ref).norm() / ref.norm())
    assert err < tol, f"{prefix}relative error {err:.3e}"
