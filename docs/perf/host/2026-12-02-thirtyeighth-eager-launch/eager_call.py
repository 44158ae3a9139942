"""The host side of a whole eager CUDA ``run`` call without its driver work: ``api.run``'s CUDA path into
``PlanLaunch`` (made by ``kernels.plan_launch``, the kernels stood in for) and its built graph's launch, with CPU
tensors of a real plan's shapes (a32 / a128 / e) and libcuda's graph calls stood in for by no-op C functions
(``fake_driver.py``). Runs the checkout it is given (``--root``, default this file's), so two checkouts can be
alternated. Prints us per call, best of 15 bursts of 2000."""

import argparse
import functools
import sys
import timeit
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ap = argparse.ArgumentParser()
ap.add_argument("--root", type=Path, default=HERE.parents[3])
args = ap.parse_args()
sys.path[:0] = [str(args.root), str(HERE)]
import fake_driver  # noqa: E402
import torch  # noqa: E402

import pat_sglang  # noqa: E402
from pat_sglang import api, launch  # noqa: E402
from pat_sglang import kernels as K  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.workloads import make_qkv, standard_batch  # noqa: E402

lib = fake_driver.install(launch)
K._raw_stream = lambda index: 0
variant = types.SimpleNamespace(threads=128, smem_bytes=0, max_tile_m=64, wide_stages=0)
K.kernels_for = lambda heads, device, tune=None: types.SimpleNamespace(forward=1, merge=2, wide=None, variant=variant)
heads = HeadConfig(32, 8, 128, torch.bfloat16)
times = {}
for workload in ("a32", "a128", "e"):
    b = standard_batch(workload)
    plan = pat_sglang.plan(b.kv_indptr, b.kv_indices, heads, DeviceSpec())
    q, k, v = make_qkv(b.batch, 32, 8, 128, b.num_slots, torch.bfloat16, "cpu", seed=1)
    out = torch.empty_like(q)
    pl = K.plan_launch(plan, q.device)
    pl.launcher.graph = fake_driver.graph_on(launch, lib, pl.launcher.launches)
    call = functools.partial(api._launch_plan(), plan, q, k, v, 0.1, out)
    call()
    times[workload] = min(timeit.repeat(call, number=2000, repeat=15)) / 2000 * 1e6
print(args.root.name, {w: round(t, 2) for w, t in times.items()})
