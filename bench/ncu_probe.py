"""Run one PAT workload a few times, for Nsight Compute: ``ncu --set detailed python bench/ncu_probe.py d``."""

from __future__ import annotations

import sys

import torch

from bench.smoke_gpu import TIMED, tree_indices
from pat_sglang import HeadConfig, plan_forest
from pat_sglang.config import DeviceSpec
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import launch_plan


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "d 64x4096"
    gen = torch.Generator().manual_seed(0)
    indptr, indices, num_slots = tree_indices(TIMED[name], gen)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, DeviceSpec.from_torch()).to("cuda")
    q = torch.randn(len(indptr) - 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(num_slots, 8, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(num_slots, 8, 128, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        launch_plan(plan, q, k, v, 0.1)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
