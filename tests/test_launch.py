"""The launch layer's host side without a GPU: where libcuda is missing, eager launches go kernel by kernel (the
graph is not built, and the log says so once), and no stream counts as being captured; a built graph's eager launch
through the host extension module makes the driver calls the ctypes path makes, in the same order (stand-in driver
functions)."""

from __future__ import annotations

import ctypes
import logging

import pytest

from pat_sglang import host_core, launch


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

            def launch_unless_capturing(self, stream: int) -> bool:
                if stream in rec.capturing:
                    return False
                self.launch(stream)
                return True

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


class _FakeDriver:
    """libcuda's three eager-launch calls as C function pointers (ctypes callbacks) that record what they are given:
    the stream capture query answers ``capturing``; a call named in ``fail`` returns that CUresult."""

    IS_CAPTURING = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
    SET_PARAMS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    LAUNCH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.capturing = False
        self.fail: dict[str, int] = {}

        def is_capturing(stream, status) -> int:  # noqa: ANN001 - ctypes passes its own types
            self.calls.append(("capturing?", stream or 0))
            status[0] = int(self.capturing)
            return self.fail.get("capturing?", 0)

        def set_params(exec_, node, params) -> int:  # noqa: ANN001
            self.calls.append(("set", exec_, node, params))
            return self.fail.get("set", 0)

        def graph_launch(exec_, stream) -> int:  # noqa: ANN001
            self.calls.append(("launch", exec_, stream or 0))
            return self.fail.get("launch", 0)

        self.cuStreamIsCapturing = self.IS_CAPTURING(is_capturing)
        self.cuGraphExecKernelNodeSetParams_v2 = self.SET_PARAMS(set_params)
        self.cuGraphLaunch = self.LAUNCH(graph_launch)
        self.cuGraphExecDestroy = self.cuGraphDestroy = lambda handle: 0


def _graph_on(driver: _FakeDriver) -> launch.KernelGraph:
    """A ``KernelGraph`` of two nodes as ``__init__`` leaves it, on the stand-in driver (no graph is built)."""
    g = object.__new__(launch.KernelGraph)
    g._lib = driver
    g._exec = ctypes.c_void_p(0x1234)
    g._graph = ctypes.c_void_p(None)
    g._nodes = [(ctypes.c_void_p(0x100 + i), launch._KernelNodeParams()) for i in range(2)]
    g._eager = g._compiled_launch()
    return g


@pytest.mark.skipif(host_core.loaded_glue() is None, reason="the host extension module does not build here")
def test_compiled_eager_launch_sets_every_node_then_launches() -> None:
    driver = _FakeDriver()
    g = _graph_on(driver)
    assert g._eager is not None
    params = [ctypes.addressof(p) for _, p in g._nodes]
    assert g.launch_unless_capturing(77) is True
    assert driver.calls == [("capturing?", 77), ("set", 0x1234, 0x100, params[0]), ("set", 0x1234, 0x101, params[1]),
                            ("launch", 0x1234, 77)]
    driver.calls.clear()
    driver.capturing = True  # under someone's capture: nothing set, nothing launched
    assert g.launch_unless_capturing(5) is False and driver.calls == [("capturing?", 5)]
    driver.capturing = False
    for call, name, done in (("capturing?", "cuStreamIsCapturing", 1), ("set", "cuGraphExecKernelNodeSetParams", 2),
                             ("launch", "cuGraphLaunch", 4)):
        driver.calls.clear()
        driver.fail = {call: 700}
        with pytest.raises(RuntimeError, match=f"{name} failed: CUresult 700"):
            g.launch_unless_capturing(3)
        assert len(driver.calls) == done  # stopped at the failed call
        assert ("launch", 0x1234, 3) not in driver.calls[:-1]


def test_eager_launch_without_the_module_makes_the_same_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the extension module is not loaded, the same driver calls go through ctypes (``stream_capturing`` and
    ``launch``)."""
    monkeypatch.setattr(host_core, "loaded_glue", lambda: None)
    driver = _FakeDriver()
    g = _graph_on(driver)
    assert g._eager is None
    monkeypatch.setattr(launch, "_graph_lib", lambda: driver)
    assert g.launch_unless_capturing(77) is True
    assert [c[0] for c in driver.calls] == ["capturing?", "set", "set", "launch"]
    driver.calls.clear()
    driver.capturing = True
    assert g.launch_unless_capturing(5) is False and [c[0] for c in driver.calls] == ["capturing?"]
