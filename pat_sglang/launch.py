"""Driver launches of *forward* and *merge*: one kernel at a time, or a plan's kernels as one CUDA graph.

Role in pack-forward-merge: the last step of ``run``, putting the resolved kernels (``kernels.PlanLaunch``) on torch's
current stream. Outside CUDA graphs, ``run`` is paid per layer (SGLang's eager decode: 32 calls a step for
Llama-3-8B), and on the H200 each ``cuLaunchKernel`` costs ~6 us of host time, while one graph launch of both kernels,
with their parameter values written into the graph's nodes first, costs ~4 us (both measured side by side,
``docs/perf/host/2026-12-01-thirtysecond-eager-graph.txt``). So a plan's launches are built once into a graph
executable (kernels, grids, block sizes, shared memory: fixed per ``PlanLaunch``) and each call only sets the
parameter values and launches it: ``cuGraphExecKernelNodeSetParams`` affects later launches of the executable only,
so launches already queued keep the values they were given. While the stream is being captured into someone else's
graph (SGLang's graph runner, ``torch.cuda.graph``) the kernels are launched one by one instead, and become nodes of
that graph. A launch used once (a plan run once) does not pay for building a graph: ``KernelLauncher`` builds it on
the second call outside a capture.

Everything goes through libcuda by ctypes (about a microsecond a call; cuda-python converts every argument), with
cuda-python's ``cuLaunchKernel`` where libcuda cannot be loaded, and one-at-a-time launches where the graph API is
missing or refuses (said once in the log). A built graph's eager launch (the capture query, each node's parameters,
the launch) is one call of the host extension module (``kernels/host_launch.c``, through libcuda's function pointers)
where that module loads, else those calls one by one through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import host_core

logger = logging.getLogger(__name__)

_VOID_P = ctypes.c_void_p


class _KernelNodeParams(ctypes.Structure):
    """``CUDA_KERNEL_NODE_PARAMS_v2``: a node of the kernel given as a ``CUkernel`` (``kern``; ``func`` null)."""

    _fields_ = [
        ("func", _VOID_P),
        ("grid_x", ctypes.c_uint),
        ("grid_y", ctypes.c_uint),
        ("grid_z", ctypes.c_uint),
        ("block_x", ctypes.c_uint),
        ("block_y", ctypes.c_uint),
        ("block_z", ctypes.c_uint),
        ("smem_bytes", ctypes.c_uint),
        ("kernel_params", _VOID_P),
        ("extra", _VOID_P),
        ("kern", _VOID_P),
        ("ctx", _VOID_P),
    ]


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel's launch as ``PlanLaunch`` resolved it. ``args_ptr``: address of its ``void*[]`` argument array,
    whose parameter struct the caller rewrites before every launch; ``name`` for errors."""

    kernel: int  # CUkernel handle (the driver's library API), also accepted as a CUfunction by cuLaunchKernel
    grid: tuple[int, int]
    threads: int
    smem_bytes: int
    args_ptr: int
    name: str


_LIBCUDA: list = []


def libcuda() -> ctypes.CDLL | None:
    """libcuda with the signatures used here, or None where it cannot be loaded."""
    if not _LIBCUDA:
        try:
            lib = ctypes.CDLL("libcuda.so.1")
            u = ctypes.c_uint
            lib.cuLaunchKernel.restype = ctypes.c_int
            lib.cuLaunchKernel.argtypes = [_VOID_P, u, u, u, u, u, u, u, _VOID_P, _VOID_P, _VOID_P]
            _LIBCUDA.append(lib)
        except (OSError, AttributeError):
            _LIBCUDA.append(None)
    return _LIBCUDA[0]


_GRAPH_LIB: list = []


def _graph_lib() -> ctypes.CDLL | None:
    """libcuda with the graph calls' signatures declared, or None where it or one of those calls is missing."""
    if not _GRAPH_LIB:
        lib = libcuda()
        params = ctypes.POINTER(_KernelNodeParams)
        signatures = {
            "cuGraphCreate": [ctypes.POINTER(_VOID_P), ctypes.c_uint],
            "cuGraphAddKernelNode_v2": [ctypes.POINTER(_VOID_P), _VOID_P, _VOID_P, ctypes.c_size_t, params],
            "cuGraphInstantiateWithFlags": [ctypes.POINTER(_VOID_P), _VOID_P, ctypes.c_ulonglong],
            "cuGraphExecKernelNodeSetParams_v2": [_VOID_P, _VOID_P, params],
            "cuGraphLaunch": [_VOID_P, _VOID_P],
            "cuGraphExecDestroy": [_VOID_P],
            "cuGraphDestroy": [_VOID_P],
            "cuStreamIsCapturing": [_VOID_P, ctypes.POINTER(ctypes.c_int)],
        }
        try:
            for name, argtypes in signatures.items():
                fn = getattr(lib, name)
                fn.restype = ctypes.c_int
                fn.argtypes = argtypes
        except AttributeError:
            lib = None
        _GRAPH_LIB.append(lib)
    return _GRAPH_LIB[0]


def stream_capturing(stream: int) -> bool:
    """Whether ``stream`` is being captured into a CUDA graph now (False where libcuda's graph calls are missing:
    then nothing here builds graphs either)."""
    lib = _graph_lib()
    if lib is None:
        return False
    status = ctypes.c_int()
    _check(lib.cuStreamIsCapturing(stream, ctypes.byref(status)), "cuStreamIsCapturing")
    return status.value != 0


def launch_kernel(k: KernelLaunch, stream: int) -> None:
    """``k`` on ``stream`` alone: ctypes ``cuLaunchKernel`` where libcuda loads, else cuda-python's."""
    lib = libcuda()
    if lib is not None:
        err = lib.cuLaunchKernel(k.kernel, k.grid[0], k.grid[1], 1, k.threads, 1, 1, k.smem_bytes, stream, k.args_ptr,
                                 None)
    else:
        from cuda.bindings import driver

        err = driver.cuLaunchKernel(driver.CUfunction(k.kernel), k.grid[0], k.grid[1], 1, k.threads, 1, 1, k.smem_bytes,
                                    driver.CUstream(stream), k.args_ptr, 0)[0]
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver call cuLaunchKernel({k.name}) failed: {err!r}")


class KernelGraph:
    """``launches`` as one CUDA graph executable, each kernel after the one before it. ``launch(stream)`` writes every
    kernel's current parameter values into its node, then launches the graph (never on a stream under capture:
    ``KernelLauncher`` launches kernel by kernel there). Build with ``KernelGraph.make``, which returns None where the
    driver cannot."""

    def __init__(self, lib: ctypes.CDLL, launches: Sequence[KernelLaunch]) -> None:
        self._lib = lib
        self.launches = tuple(launches)
        self._graph = _VOID_P()
        self._exec = _VOID_P()
        self._nodes: list[tuple[_VOID_P, _KernelNodeParams]] = []
        _check(lib.cuGraphCreate(ctypes.byref(self._graph), 0), "cuGraphCreate")
        for k in self.launches:
            params = _KernelNodeParams(None, k.grid[0], k.grid[1], 1, k.threads, 1, 1, k.smem_bytes, k.args_ptr, None,
                                       k.kernel, None)
            node = _VOID_P()
            last = self._nodes[-1][0] if self._nodes else None
            deps = (_VOID_P * 1)(last) if last is not None else None
            _check(lib.cuGraphAddKernelNode_v2(ctypes.byref(node), self._graph, deps, 1 if last is not None else 0,
                                               ctypes.byref(params)), f"cuGraphAddKernelNode({k.name})")
            self._nodes.append((node, params))
        _check(lib.cuGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph, 0), "cuGraphInstantiate")
        self._eager = self._compiled_launch()

    def _compiled_launch(self) -> Callable[[int], int] | None:
        """``launch_unless_capturing``'s driver calls as one call of the host extension module (its
        ``graph_launch``, bound to this graph's tables: libcuda's three functions, the nodes, their parameters), or
        None where the module is not loaded."""
        glue = host_core.loaded_glue()
        if glue is None:
            return None
        names = ("cuStreamIsCapturing", "cuGraphExecKernelNodeSetParams_v2", "cuGraphLaunch")
        self._fns = (_VOID_P * 3)(*(ctypes.cast(getattr(self._lib, name), _VOID_P).value for name in names))
        self._node_ptrs = (_VOID_P * len(self._nodes))(*(node.value for node, _ in self._nodes))
        self._param_ptrs = (_VOID_P * len(self._nodes))(*(ctypes.addressof(params) for _, params in self._nodes))
        self._codes = (glue.GRAPH_LAUNCH_CAPTURING, glue.GRAPH_LAUNCH_STAGES)
        tables = (ctypes.addressof(self._fns), self._exec.value, ctypes.addressof(self._node_ptrs),
                  ctypes.addressof(self._param_ptrs), len(self._nodes))
        return functools.partial(glue.graph_launch, *tables)

    @classmethod
    def make(cls, launches: Sequence[KernelLaunch]) -> KernelGraph | None:
        """The graph of ``launches``, or None (with one log line per process) where libcuda or its graph API is
        missing or the graph cannot be built: the caller then launches kernel by kernel. Not while the current stream
        is being captured."""
        if not launches:
            return None
        lib = _graph_lib()
        if lib is None:
            _say_once("PAT: no libcuda graph API here; eager launches go kernel by kernel")
            return None
        try:
            return cls(lib, launches)
        except RuntimeError as e:
            _say_once(f"PAT: eager launches as a CUDA graph failed ({e}); launching kernel by kernel")
            return None

    def launch_unless_capturing(self, stream: int) -> bool:
        """``launch(stream)`` and True, or False (nothing done) while ``stream`` is being captured."""
        if self._eager is None:
            if stream_capturing(stream):
                return False
            self.launch(stream)
            return True
        code = self._eager(stream)
        if code == 0:
            return True
        capturing, stages = self._codes
        if code == capturing:
            return False
        err, stage = divmod(code, stages)
        what = ("cuStreamIsCapturing", "cuGraphExecKernelNodeSetParams", "cuGraphLaunch")[stage - 1]
        raise RuntimeError(f"CUDA driver call {what} failed: CUresult {err}")

    def launch(self, stream: int) -> None:
        set_params = self._lib.cuGraphExecKernelNodeSetParams_v2
        for node, params in self._nodes:
            # the driver copies the values behind params.kernel_params now: the caller's struct holds this call's
            err = set_params(self._exec, node, ctypes.byref(params))
            if err:
                _check(err, "cuGraphExecKernelNodeSetParams")
        _check(self._lib.cuGraphLaunch(self._exec, stream), "cuGraphLaunch")

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_exec", None):
            lib.cuGraphExecDestroy(self._exec)
        if getattr(self, "_graph", None):
            lib.cuGraphDestroy(self._graph)


class KernelLauncher:
    """One resolved launch's kernels on a stream: kernel by kernel until its second call outside a stream capture,
    which builds them into a ``KernelGraph`` that this and every later call launches (on ``device_index``'s context
    where given: the nodes take the current one). Calls under capture never count and always go kernel by kernel (from
    the graph too). Where the driver cannot build the graph, every call goes kernel by kernel."""

    CALLS_BEFORE_GRAPH = 2

    def __init__(self, launches: Sequence[KernelLaunch]) -> None:
        self.launches = tuple(launches)
        self.graph: KernelGraph | None = None
        self._calls_left = self.CALLS_BEFORE_GRAPH

    def launch(self, stream: int, device_index: int | None = None) -> None:
        """The kernels on ``stream`` with the parameter values their structs hold now."""
        if self.graph is not None:  # built: one launch of it, or kernel by kernel into a capture
            if not self.graph.launch_unless_capturing(stream):
                for k in self.launches:
                    launch_kernel(k, stream)
            return
        capturing = stream_capturing(stream)
        if not capturing and self._calls_left > 0:
            self._calls_left -= 1
            if self._calls_left == 0:
                with torch.cuda.device(device_index) if device_index is not None else contextlib.nullcontext():
                    self.graph = KernelGraph.make(self.launches)
        if self.graph is not None and not capturing:
            self.graph.launch(stream)
        else:
            for k in self.launches:
                launch_kernel(k, stream)


def _check(err: int, what: str) -> None:
    if err != 0:
        raise RuntimeError(f"CUDA driver call {what} failed: CUresult {err}")


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        logger.warning(message)
