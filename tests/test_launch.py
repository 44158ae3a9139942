"""The launch layer's host side without a GPU: where libcuda is missing, eager launches go kernel by kernel (the
graph is not built, and the log says so once), and no stream counts as being captured."""

from __future__ import annotations

import logging

import pytest

from pat_sglang import launch


def test_without_libcuda_launches_go_kernel_by_kernel(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_LIBCUDA", [None])
    monkeypatch.setattr(launch, "_GRAPH_LIB", [])
    monkeypatch.setattr(launch, "_SAID", set())
    k = launch.KernelLaunch(kernel=1, grid=(8, 4), threads=128, smem_bytes=0, args_ptr=0, func=None, name="k")
    with caplog.at_level(logging.WARNING, logger=launch.__name__):
        assert launch.KernelGraph.make([k]) is None
        assert launch.KernelGraph.make([k, k]) is None
    said = [r.message for r in caplog.records if "kernel by kernel" in r.message]
    assert len(said) == 1
    assert launch.stream_capturing(0) is False
    assert launch.KernelGraph.make([]) is None  # nothing to launch: no graph, nothing said


def test_node_params_match_the_drivers_v2_layout() -> None:
    """``CUDA_KERNEL_NODE_PARAMS_v2`` on 64-bit hosts: func, 7 unsigned (grid, block, shared memory), then four
    pointers from offset 40 (kernelParams, extra, kern, ctx): 72 bytes, kern at 56."""
    assert launch._KernelNodeParams.kern.offset == 56
    assert launch._KernelNodeParams.kernel_params.offset == 40
    assert launch.ctypes.sizeof(launch._KernelNodeParams) == 72
