"""Python's and ctypes' share of an eager graph launch (``launch.KernelGraph.launch_unless_capturing``: the capture
query, two nodes' parameters, the launch), with the driver stood in for by no-op C functions (``fake_driver.py``):
the ctypes calls one by one against one call of the host extension module (``kernels/host_launch.c``). The driver's
own work is not in it. Run from anywhere; prints us per launch, best of 15 bursts of 20000, twice each."""

import sys
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[3]), str(HERE)]  # the checkout's root, this folder
import fake_driver  # noqa: E402

from pat_sglang import launch  # noqa: E402

lib = fake_driver.install(launch)
g = fake_driver.graph_on(launch, lib, (None, None))
compiled = g._eager
if compiled is None:
    sys.exit("the host extension module did not load")
for name, eager in (("ctypes", None), ("compiled", compiled), ("ctypes", None), ("compiled", compiled)):
    g._eager = eager
    t = min(timeit.repeat("g.launch_unless_capturing(7)", globals={"g": g}, number=20000, repeat=15)) / 20000 * 1e6
    print(f"{name:9s} {t:.2f} us per eager graph launch (2 nodes, no-op driver)")
