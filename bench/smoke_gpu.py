"""Quick GPU smoke check of the PAT kernels: build every variant, check against float64, time one case.

Run on the GPU machine: ``python bench/smoke_gpu.py``. It prints one line per check and exits non-zero
on any failure; the full suite is ``pytest -m gpu tests/gpu`` and the full benchmark bench/bench_kernels.py.
"""

from __future__ import annotations

import math
import sys
import time

import torch

from bench.bench_kernels import time_graph
from pat_sglang import HeadConfig, PackPlan, naive_decode, plan_forest
from pat_sglang.config import DeviceSpec
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import KernelTune, all_variants, compile_variant, device_arch, launch_plan
from pat_sglang.workloads import STANDARD_WORKLOADS, tree_batch


def tree_indices(levels: list[tuple[int, int]], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """kv_indptr, kv_indices and pool size of an anchors-style level tree (pat_sglang.workloads)."""
    batch = tree_batch(levels, rng=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return batch.kv_indptr.long(), batch.kv_indices.long(), batch.num_slots


def check(levels, hq, hkv, d, dtype, gen, dev_spec) -> float:
    indptr, indices, num_slots = tree_indices(levels, gen)
    heads = HeadConfig(hq, hkv, d, dtype)
    plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, dev_spec)
    q = torch.randn(len(indptr) - 1, hq, d, generator=gen).to(dtype).cuda()
    k = torch.randn(num_slots, hkv, d, generator=gen).to(dtype).cuda()
    v = torch.randn(num_slots, hkv, d, generator=gen).to(dtype).cuda()
    out = torch.full_like(q, float("nan"))
    scale = 1 / math.sqrt(d)
    launch_plan(plan.to("cuda"), q, k, v, scale, out)
    torch.cuda.synchronize()
    ref = naive_decode(q.cpu(), k.cpu(), v.cpu(), indptr, indices, scale)
    o = out.cpu().double()
    if torch.isnan(o).any():
        return float("nan")
    return float((o - ref).norm() / ref.norm())


TIMED = {name: STANDARD_WORKLOADS[name] for name in ("a64", "a256", "b", "c", "d64x4096", "d256x1024", "e")}
COPY_TBPS = 3.0  # measured device-to-device copy on the H100 (read+write), bench_kernels measures it anew


def time_variants(gen: torch.Generator, dev_spec: DeviceSpec, overrides: list[KernelTune]) -> None:
    """PAT time per workload (Llama-3-8B heads, bf16) against the unique-bytes floor, per kernel variant."""
    hq, hkv, d, dtype = 32, 8, 128, torch.bfloat16
    heads = HeadConfig(hq, hkv, d, dtype)
    for i, o in enumerate(overrides):
        print(f"variant {i}: {o}")
    print(f"{'workload':<12} {'floor_us':>8} " + " ".join(f"{'variant ' + str(i):>14}" for i in range(len(overrides))))
    for name, levels in TIMED.items():
        indptr, indices, num_slots = tree_indices(levels, gen)
        plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, dev_spec).to("cuda")
        sets = []
        for _ in range(3):
            q = torch.randn(len(indptr) - 1, hq, d, device="cuda", dtype=dtype)
            k = torch.randn(num_slots, hkv, d, device="cuda", dtype=dtype)
            v = torch.randn(num_slots, hkv, d, device="cuda", dtype=dtype)
            sets.append((q, k, v, torch.empty_like(q)))
        floor_us = plan.stats.kv_bytes_unique / (COPY_TBPS * 1e12) * 1e6
        row = f"{name:<12} {floor_us:>8.1f} "
        for tune in overrides:
            def launch(i: int, tune: KernelTune = tune, sets: list = sets, plan: PackPlan = plan) -> None:
                q, k, v, out = sets[i]
                launch_plan(plan, q, k, v, 0.1, out, tune)

            us = time_graph(launch, len(sets), reps=15)  # CUDA-graph replays: the GPU never waits for Python
            row += f"{us:>8.1f} ({us / floor_us:>3.1f}x)"
        print(row + f"  items={plan.num_items} partials={plan.num_partials}")


def main() -> int:
    arch = device_arch(torch.device("cuda"))
    t0 = time.time()
    for v in all_variants(arch):
        c = compile_variant(v)
        print(f"built {v} cached={c.from_cache} {c.resource_usage().get('pat_pack_forward')}")
    print(f"build time {time.time() - t0:.1f}s")
    gen = torch.Generator().manual_seed(0)
    dev_spec = DeviceSpec.from_torch()
    cases = [
        ([(1, 300), (4, 40), (8, 17)], 32, 8, 128, torch.bfloat16),
        ([(1, 300), (4, 40), (8, 17)], 32, 8, 128, torch.float16),
        ([(1, 1000), (40, 33)], 32, 8, 128, torch.bfloat16),
        ([(1, 5000), (3, 7)], 8, 1, 64, torch.bfloat16),
        ([(2, 77), (6, 130)], 16, 16, 64, torch.bfloat16),
        ([(1, 513), (5, 9)], 8, 2, 256, torch.bfloat16),
        ([(1, 513), (5, 9)], 8, 2, 256, torch.float16),
        ([(7, 1)], 8, 4, 128, torch.bfloat16),
        ([(64, 700)], 32, 8, 128, torch.bfloat16),
        ([(1, 2048), (2, 512), (4, 100), (300, 20)], 32, 8, 128, torch.bfloat16),
    ]
    fails = 0
    for levels, hq, hkv, d, dtype in cases:
        err = check(levels, hq, hkv, d, dtype, gen, dev_spec)
        ok = err < 2e-2
        fails += not ok
        print(f"{'OK  ' if ok else 'FAIL'} rel_err={err:.2e} levels={levels} heads={hq}/{hkv} d={d} {dtype}")
    if "--time" in sys.argv:
        time_variants(
            gen,
            dev_spec,
            [
                KernelTune(),
                KernelTune(32, 3, 3, 4),
                KernelTune(16, 6, 4, 4),
                KernelTune(64, 2, 2, 8),
            ],
        )
    print(f"{len(cases) - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
