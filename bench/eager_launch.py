"""Host time of one eager ``pat_sglang.run`` call (the path SGLang takes per layer with ``--disable-cuda-graph``).

Plans a decode batch once, then calls ``pat_sglang.run`` in bursts of ``--calls`` calls with no synchronisation
inside a burst, each burst from an idle GPU, and reports the median host time per call (``perf_counter`` around each
burst: the CPU cost of checks, argument writes and the launch, one CUDA graph of the plan's kernels where the driver
builds it; the GPU runs behind). Also the GPU time per call (CUDA events around a synchronised loop) for scale, and
the same two numbers for a CUDA-graph replay of the same call. Target (issue 9): <= 15 us host per call.

Then where the host time goes: the same loop with the launch stubbed out (Python: ``run``'s checks, the plan's
launch look-up, argument writes, the stream query), the launch alone with the plan's resolved arguments, and the
kernels launched one by one instead (one ``cuLaunchKernel`` each, as before the graph). The bursts stay far below
the launch queue's depth (~1000 launches): past it the host waits for the GPU and a loop measures GPU time (2000
calls of a128 in one loop: 79 us "host", 300 calls: 26 us).

    python3 bench/eager_launch.py [--workload a32] [--calls 50] [--bursts 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pat_sglang  # noqa: E402
from pat_sglang import kernels  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.reference import naive_decode  # noqa: E402
from pat_sglang.workloads import make_qkv, standard_batch  # noqa: E402

TARGET_US = 15.0


def host_us_per_call(fn, calls: int, bursts: int) -> float:
    """Median over ``bursts`` bursts of ``calls`` back-to-back calls of ``fn``, each burst from an idle GPU, of the
    host microseconds per call. Short bursts keep the launch queue far from full: past it the host waits for the GPU
    and the loop measures GPU time."""
    per_call = []
    for _ in range(bursts):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls * 1e6)
    torch.cuda.synchronize()
    return statistics.median(per_call)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="a32")
    ap.add_argument("--calls", type=int, default=50, help="calls per timed burst")
    ap.add_argument("--bursts", type=int, default=7, help="timed bursts (the median is reported)")
    args = ap.parse_args(argv)
    batch = standard_batch(args.workload)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    q, k, v = make_qkv(batch.batch, 32, 8, 128, batch.num_slots, torch.bfloat16, "cuda", seed=0)
    plan = pat_sglang.plan(batch.kv_indptr, batch.kv_indices, heads, DeviceSpec.from_torch(q.device)).to("cuda")
    out = torch.empty_like(q)
    for _ in range(20):
        pat_sglang.run(plan, q, k, v, out=out)
    torch.cuda.synchronize()
    eager_out = out.clone()
    scale = 1.0 / math.sqrt(128)
    ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), batch.kv_indptr, batch.kv_indices, scale)
    err = float((eager_out.double().cpu() - ref).norm() / ref.norm())
    if not err < 2e-2:
        raise SystemExit(f"eager output differs from float64 attention: relative error {err:.3e}")
    host_us = host_us_per_call(lambda: pat_sglang.run(plan, q, k, v, out=out), args.calls, args.bursts)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(200):
        pat_sglang.run(plan, q, k, v, out=out)
    end.record()
    torch.cuda.synchronize()
    eager_gpu_us = start.elapsed_time(end) / 200 * 1e3
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        pat_sglang.run(plan, q, k, v, out=out)
    torch.cuda.synchronize()
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    if not torch.equal(out, eager_out):
        raise SystemExit("graph replay output differs from the eager output")
    replay_host_us = host_us_per_call(graph.replay, args.calls, args.bursts)
    start.record()
    for _ in range(200):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    graph_gpu_us = start.elapsed_time(end) / 200 * 1e3
    verdict = "met" if host_us <= TARGET_US else "NOT met"
    print(f"device: {torch.cuda.get_device_name()}; workload {args.workload} ({batch.batch} requests), "
          f"{plan.num_items} items, {plan.num_partials} partials; eager vs float64 rel. err {err:.1e}, graph == eager")
    print(f"eager run: host {host_us:.1f} us/call (target <= {TARGET_US:.0f}: {verdict}); "
          f"back-to-back GPU {eager_gpu_us:.1f} us/call")
    print(f"graph replay: host {replay_host_us:.1f} us/call; back-to-back GPU {graph_gpu_us:.1f} us/call")
    python_us, launch_us, one_by_one_us = host_breakdown(plan, q, k, v, out, args.calls, args.bursts)
    launcher = kernels.plan_launch(plan, q.device).launcher
    graph = "one CUDA graph" if launcher.graph is not None else "kernel by kernel"
    print(f"eager host time, split: Python {python_us:.1f} us/call (launch stubbed), the launch ({graph}) "
          f"{launch_us:.1f} us/call; the {len(launcher.launches)} kernels launched one by "
          f"one instead {one_by_one_us:.1f} us/call")
    return 0


def host_breakdown(plan, q, k, v, out, calls: int, bursts: int) -> tuple[float, float, float]:
    """(Python part, the launch as ``run`` makes it, the kernels launched one by one) of one eager ``run``, in host us
    per call (``host_us_per_call``). The launch is one CUDA graph of the plan's kernels with their parameters set per
    call (``pat_sglang.launch.KernelGraph``) where the driver builds one."""
    from pat_sglang.launch import launch_kernel

    launch = kernels.plan_launch(plan, q.device)
    real = kernels.PlanLaunch.launch
    kernels.PlanLaunch.launch = lambda self, stream, device_index=None: None
    try:
        python_us = host_us_per_call(lambda: pat_sglang.run(plan, q, k, v, out=out), calls, bursts)
    finally:
        kernels.PlanLaunch.launch = real
    stream = kernels._raw_stream(q.device.index)
    launch_us = host_us_per_call(lambda: launch.launch(stream), calls, bursts)  # the last run's arguments

    def one_by_one() -> None:
        for kern in launch.launcher.launches:
            launch_kernel(kern, stream)

    return python_us, launch_us, host_us_per_call(one_by_one, calls, bursts)


if __name__ == "__main__":
    sys.exit(main())
