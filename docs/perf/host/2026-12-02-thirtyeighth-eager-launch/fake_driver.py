"""libcuda's eager graph-launch calls stood in for by the no-op C functions of ``fake.c`` (built with ``cc`` into a
temporary folder, loaded with ctypes, signatures as ``pat_sglang.launch`` declares them) and installed as
``launch``'s graph library: what ``bench.py`` and ``eager_call.py`` time against."""

import ctypes
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def install(launch) -> ctypes.CDLL:  # noqa: ANN001 - the pat_sglang.launch module of the checkout being timed
    with tempfile.TemporaryDirectory() as tmp:
        so = Path(tmp) / "libfake.so"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(HERE / "fake.c"), "-o", str(so)], check=True)
        lib = ctypes.CDLL(str(so))
    p = ctypes.c_void_p
    for name, argtypes in (("cuStreamIsCapturing", [p, ctypes.POINTER(ctypes.c_int)]),
                           ("cuGraphExecKernelNodeSetParams_v2", [p, p, ctypes.POINTER(launch._KernelNodeParams)]),
                           ("cuGraphLaunch", [p, p])):
        getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, ctypes.c_int
    launch._GRAPH_LIB[:] = [lib]
    return lib


def graph_on(launch, lib: ctypes.CDLL, launches: tuple):  # noqa: ANN001, ANN201
    """A ``KernelGraph`` of ``launches`` as its ``__init__`` leaves it, on ``lib``, without building a graph."""
    p = ctypes.c_void_p
    g = object.__new__(launch.KernelGraph)
    g._lib, g._exec, g._graph, g.launches = lib, p(0x1234), p(None), launches
    g._nodes = [(p(0x100 + i), launch._KernelNodeParams()) for i in range(len(launches))]
    if hasattr(g, "_compiled_launch"):  # checkouts before the compiled eager launch have none
        g._eager = g._compiled_launch()
    return g
