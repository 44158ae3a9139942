"""Python's and ctypes' share of an eager graph launch (``launch.KernelGraph.launch_unless_capturing``: the capture
query, two nodes' parameters, the launch), with the driver stood in for by no-op C functions (``fake.c``, built here
with ``cc``): the ctypes calls one by one against one call of the host extension module (``kernels/host_launch.c``).
The driver's own work is not in it. Run from anywhere; prints us per launch, best of 15 bursts of 20000, twice each."""

import ctypes
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))  # the checkout's root
from pat_sglang import launch  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    so = Path(tmp) / "libfake.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(HERE / "fake.c"), "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
P = ctypes.c_void_p
for name, argtypes in (("cuStreamIsCapturing", [P, ctypes.POINTER(ctypes.c_int)]),
                       ("cuGraphExecKernelNodeSetParams_v2", [P, P, ctypes.POINTER(launch._KernelNodeParams)]),
                       ("cuGraphLaunch", [P, P])):
    getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, ctypes.c_int
launch._GRAPH_LIB[:] = [lib]
g = object.__new__(launch.KernelGraph)
g._lib, g._exec, g._graph = lib, P(0x1234), P(None)
g._nodes = [(P(0x100 + i), launch._KernelNodeParams()) for i in range(2)]
compiled = g._compiled_launch()
if compiled is None:
    sys.exit("the host extension module did not load")
for name, eager in (("ctypes", None), ("compiled", compiled), ("ctypes", None), ("compiled", compiled)):
    g._eager = eager
    t = min(timeit.repeat("g.launch_unless_capturing(7)", globals={"g": g}, number=20000, repeat=15)) / 20000 * 1e6
    print(f"{name:9s} {t:.2f} us per eager graph launch (2 nodes, no-op driver)")
