"""What every GPU test module shares: its pytest marks, fresh seeds, the check of a kernel's poisoned output against
the float64 reference, and a backend's decode captured in a CUDA graph the way SGLang's graph runner captures it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import TAIL_SPLIT_ENV, plan_forest
from pat_sglang.workloads import DecodeBatch, tree_batch

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


def capture(run: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """``run`` once on a side stream (a warm-up: it compiles and loads the kernels), then captured in a CUDA graph,
    as SGLang's graph runner does; returns the graph and what the captured call returned (its static output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = run()
    return graph, result


def capture_decode(
    backend: Any, layer: Any, batch: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """What SGLang's ``DecodeCudaGraphRunner`` does for one batch size: the capture batch's metadata outside the graph,
    a warm-up forward on a side stream (it compiles and loads the kernels), then the forward captured; returns the
    graph and its static output. ``q``/``k``/``v`` are the static inputs the replays refill."""
    backend.init_forward_metadata_out_graph(batch, in_capture=True)

    def forward() -> torch.Tensor:
        backend.init_forward_metadata_in_graph(batch)
        return backend.forward_decode(q, k, v, layer, batch)

    return capture(forward)


def tail_split_batch(heads: HeadConfig, device: DeviceSpec, seed: int,
                     monkeypatch: pytest.MonkeyPatch) -> tuple[DecodeBatch, int]:
    """A 512-token prompt under n requests of L own tokens whose plan on ``device`` ends on a nearly empty last wave,
    which the planner cuts finer (``_tail_split``); returns the batch and the uncut plan's item count (the cut plan
    must have more). Fails when no such shape exists on this device, so the test using it cannot pass vacuously."""
    for own in (1024, 2048, 3072):
        for n in (16, 24, 32, 48, 64, 96, 128, 192):
            batch = tree_batch([(1, 512), (n, own)], rng=seed)
            forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
            monkeypatch.setenv(TAIL_SPLIT_ENV, "0")
            plain = plan_forest(forest, heads, device).num_items
            monkeypatch.delenv(TAIL_SPLIT_ENV)
            if plan_forest(forest, heads, device).num_items > plain:
                return batch, plain
    raise AssertionError(f"no two-level tree with a nearly empty last wave for {heads} on {device}")
