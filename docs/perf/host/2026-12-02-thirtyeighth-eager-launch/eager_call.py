"""The host side of a whole eager CUDA ``run`` call without its driver work: ``api.run``'s CUDA path into
``PlanLaunch`` and its built graph's launch, with CPU tensors of a real plan's shapes (a32 / a128 / e) and libcuda's
graph calls stood in for by no-op C functions (``fake.c``, built here with ``cc``). Runs the checkout it is given
(``--root``, default this file's), so two checkouts can be alternated. Prints us per call, best of 15 bursts of 2000."""

import argparse
import ctypes
import functools
import subprocess
import sys
import tempfile
import timeit
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ap = argparse.ArgumentParser()
ap.add_argument("--root", type=Path, default=HERE.parents[3])
args = ap.parse_args()
sys.path.insert(0, str(args.root))
import torch  # noqa: E402

import pat_sglang  # noqa: E402
from pat_sglang import api, launch  # noqa: E402
from pat_sglang import kernels as K  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.workloads import make_qkv, standard_batch  # noqa: E402

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
K._raw_stream = lambda index: 0
heads = HeadConfig(32, 8, 128, torch.bfloat16)
times = {}
for workload in ("a32", "a128", "e"):
    b = standard_batch(workload)
    plan = pat_sglang.plan(b.kv_indptr, b.kv_indices, heads, DeviceSpec())
    q, k, v = make_qkv(b.batch, 32, 8, 128, b.num_slots, torch.bfloat16, "cpu", seed=1)
    out = torch.empty_like(q)
    variant = types.SimpleNamespace(threads=128, smem_bytes=0, max_tile_m=64, wide_stages=0)
    kern = types.SimpleNamespace(forward=1, merge=2, wide=None, variant=variant)
    tensors = {n: getattr(plan, n) for n in K._PLAN_TENSORS}
    tensors["part_o"] = torch.empty((max(plan.num_partials, 1), 32, 128), dtype=torch.bfloat16)
    tensors["part_lse"] = torch.empty((max(plan.num_partials, 1), 32))
    pl = K.PlanLaunch(kern, heads, tensors, plan.num_items, plan.num_requests, merge=plan.num_partials > 0,
                      check_inputs=functools.partial(api.check_run_inputs, plan.heads, plan.num_requests,
                                                     plan.max_slot))
    graph = object.__new__(launch.KernelGraph)  # as __init__ leaves it, without building a graph
    graph._lib, graph._exec, graph._graph = lib, P(0x1234), P(None)
    graph.launches = pl.launcher.launches
    graph._nodes = [(P(0x100 + i), launch._KernelNodeParams()) for i in range(len(graph.launches))]
    if hasattr(graph, "_compiled_launch"):
        graph._eager = graph._compiled_launch()
    pl.launcher.graph = graph
    plan.__dict__["_launch"] = {(q.device, None): pl}
    call = functools.partial(api._launch_plan(), plan, q, k, v, 0.1, out)
    call()
    times[workload] = min(timeit.repeat(call, number=2000, repeat=15)) / 2000 * 1e6
print(args.root.name, {w: round(t, 2) for w, t in times.items()})
