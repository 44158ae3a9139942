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
    k = launch.KernelLaunch(kernel=1, grid=(8, 4), threads=128, smem_bytes=0, args_ptr=0, name="k")
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


class _Recorder:
    """Stands in for the driver: records kernel-by-kernel launches, graph builds and graph launches, and says
    whether a stream is being captured."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, graphs: bool = True) -> None:
        self.events: list[tuple] = []
        self.capturing: set[int] = set()
        rec = self

        class FakeGraph:
            def __init__(self, launches: tuple) -> None:
                self.launches = launches

            def launch(self, stream: int) -> None:
                rec.events.append(("graph", stream, tuple(k.name for k in self.launches)))

        def make(launches: tuple) -> FakeGraph | None:
            rec.events.append(("build", tuple(k.name for k in launches)))
            return FakeGraph(tuple(launches)) if graphs else None

        monkeypatch.setattr(launch.KernelGraph, "make", staticmethod(make))
        monkeypatch.setattr(launch, "launch_kernel", lambda k, stream: rec.events.append(("kernel", stream, k.name)))
        monkeypatch.setattr(launch, "stream_capturing", lambda stream: stream in rec.capturing)


def _kernels() -> list:
    return [launch.KernelLaunch(kernel=i + 1, grid=(4, 2), threads=128, smem_bytes=0, args_ptr=0, name=n)
            for i, n in enumerate(("forward", "merge"))]


def test_the_graph_is_built_on_the_second_call_outside_a_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch used once goes kernel by kernel and builds no graph; the second call outside a capture builds it and
    launches through it, as every later call does; calls on a stream under capture go kernel by kernel, count for
    nothing, and do so after the graph exists too."""
    rec = _Recorder(monkeypatch)
    launcher = launch.KernelLauncher(_kernels())
    launcher.launch(7)
    assert rec.events == [("kernel", 7, "forward"), ("kernel", 7, "merge")] and launcher.graph is None
    rec.events.clear()
    rec.capturing.add(9)
    launcher.launch(9)  # under capture: not the second call
    assert rec.events == [("kernel", 9, "forward"), ("kernel", 9, "merge")] and launcher.graph is None
    rec.events.clear()
    launcher.launch(7)
    assert rec.events == [("build", ("forward", "merge")), ("graph", 7, ("forward", "merge"))]
    rec.events.clear()
    for _ in range(3):
        launcher.launch(7)
    assert rec.events == [("graph", 7, ("forward", "merge"))] * 3  # built once
    rec.events.clear()
    launcher.launch(9)  # under capture with the graph built: the kernels become nodes of the caller's graph
    assert rec.events == [("kernel", 9, "forward"), ("kernel", 9, "merge")]


def test_without_a_graph_every_call_goes_kernel_by_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the driver cannot build the graph (``KernelGraph.make`` gives None), the build is tried once and every
    call launches kernel by kernel."""
    rec = _Recorder(monkeypatch, graphs=False)
    launcher = launch.KernelLauncher(_kernels()[:1])
    for _ in range(4):
        launcher.launch(3)
    assert rec.events.count(("build", ("forward",))) == 1
    assert [e for e in rec.events if e[0] != "build"] == [("kernel", 3, "forward")] * 4
