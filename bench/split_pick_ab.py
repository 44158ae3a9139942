"""The planner's split-length picks against another planner's on random trees, timed side by side (GPU).

A change to the split choice's cost model (``pat_sglang.planner``) moves its picks on trees no fixed sweep measured.
This makes a set of random asymmetric trees (``workloads.random_tree``, seeds ``0..--trees``) per head config, and
compares two planners' picks on them:

* ``--picks-out FILE`` (CPU): write the split length each tree's plan takes under the planner found at
  ``--planner-root`` (another checkout, e.g. ``git worktree add ../base HEAD~1``; default this one);
* ``--base FILE`` (GPU): for every tree where this checkout's pick differs from the file's, time both plans (the
  file's length through ``plan_forest(split_tokens=...)``, this one's own pick) as CUDA-graph replays of forward +
  merge, alternating ``--rounds`` times (the median of each side's rounds), each checked against float64 attention
  on 8 sampled requests first; print a line per tree and the geometric mean and range of new / base.

FP8 pools are made as ``bench/tile_sweep.py`` makes them (bf16 values / 0.5, scales 0.5).

    python3 bench/split_pick_ab.py --picks-out base.json --planner-root ../base --kv-dtype fp8_e4m3   # CPU
    python3 bench/split_pick_ab.py --base base.json --kv-dtype fp8_e4m3                               # GPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
HEAD_CONFIGS = ((32, 8, 128), (64, 8, 128), (32, 32, 128), (32, 8, 64), (32, 8, 256))  # q heads, kv heads, head dim
TREE_ARGS = {"max_depth": 5, "max_requests": 256, "max_len": 4096, "max_request_tokens": 400_000}
H200_SMS = 132


def tree_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    from pat_sglang.workloads import layout_tree, random_tree

    rng = np.random.default_rng(seed)
    batch = layout_tree(random_tree(rng, **TREE_ARGS), rng=rng)
    return batch.kv_indptr, batch.kv_indices, batch.num_slots


def picks(kv_dtype: str, trees: int) -> dict[str, int]:
    """``"hq/hkv/hd/seed"`` -> the split length this process's planner picks (on an H200's SM count)."""
    from pat_sglang.config import DeviceSpec, HeadConfig
    from pat_sglang.forest import PrefixForest
    from pat_sglang.kernels import FP8_KV_NAMES
    from pat_sglang.planner import plan_forest

    device = DeviceSpec(sm_count=H200_SMS, arch="sm90")
    configs = [HeadConfig(hq, hkv, hd, torch.bfloat16, FP8_KV_NAMES.get(kv_dtype)) for hq, hkv, hd in HEAD_CONFIGS]
    forests = []  # each tree made once, planned under every head config
    for seed in range(trees):
        indptr, indices, _ = tree_inputs(seed)
        forests.append(PrefixForest.from_flat(indptr, indices))
    return {f"{h.num_q_heads}/{h.num_kv_heads}/{h.head_dim}/{seed}": plan_forest(forest, h, device).split_tokens
            for h in configs for seed, forest in enumerate(forests)}


def time_picks(base: dict[str, int], kv_dtype: str, rounds: int, reps: int) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_kernels import time_graph
    from tile_sweep import check_against

    from pat_sglang.config import DeviceSpec, HeadConfig
    from pat_sglang.forest import PrefixForest
    from pat_sglang.kernels import FP8_KV_NAMES, launch_plan
    from pat_sglang.planner import plan_forest
    from pat_sglang.reference import sampled_naive_decode
    from pat_sglang.workloads import make_qkv

    fp8 = kv_dtype != "bf16"
    kv_scale = 0.5 if fp8 else 1.0
    real = DeviceSpec.from_torch(torch.device("cuda"))
    print(f"device: {torch.cuda.get_device_name()}; KV {kv_dtype}; times in us (median of {rounds} alternating rounds "
          f"of {reps} graph replays)")
    print(f"{'tree':>16} {'base split':>10} {'new split':>10} {'base us':>9} {'new us':>9} {'new/base':>9}")
    ratios = []
    for key, base_split in base.items():
        hq, hkv, hd, seed = (int(x) for x in key.split("/"))
        heads = HeadConfig(hq, hkv, hd, torch.bfloat16, FP8_KV_NAMES.get(kv_dtype))
        indptr, indices, slots = tree_inputs(seed)
        forest = PrefixForest.from_flat(indptr, indices)
        new_plan = plan_forest(forest, heads, real)
        if new_plan.split_tokens == base_split:
            continue
        base_plan = plan_forest(forest, heads, real, split_tokens=base_split)
        q, k, v = make_qkv(indptr.shape[0] - 1, hq, hkv, hd, slots, torch.bfloat16, "cuda", seed=1)
        if fp8:  # stored = value / scale; the kernels and the reference read stored * scale
            k, v = (k.float() / kv_scale).to(heads.kv_dtype), (v.float() / kv_scale).to(heads.kv_dtype)
        scale = 1 / math.sqrt(hd)
        ref = sampled_naive_decode(q, k, v, indptr, indices, scale, k_scale=kv_scale, v_scale=kv_scale)
        calls = []
        for side, host_plan in enumerate((base_plan, new_plan)):
            plan = host_plan.to("cuda")
            out = torch.full_like(q, float("nan"))

            def call(_: int, plan=plan, out=out, q=q, k=k, v=v, scale=scale) -> torch.Tensor:
                return launch_plan(plan, q, k, v, scale, out=out, k_scale=kv_scale, v_scale=kv_scale)

            call(0)
            check_against(out, ref, f"{key} {'base' if side == 0 else 'new'}")
            calls.append(call)
        times: list[list[float]] = [[], []]
        for _ in range(rounds):  # alternating: neither side always runs first
            for side, call in enumerate(calls):
                times[side].append(time_graph(call, 1, reps))
        base_us, new_us = float(np.median(times[0])), float(np.median(times[1]))
        ratios.append(new_us / base_us)
        print(f"{key:>16} {base_split:>10} {new_plan.split_tokens:>10} {base_us:9.1f} {new_us:9.1f} "
              f"{new_us / base_us:9.3f}", flush=True)
    if ratios:
        print(f"{len(ratios)} trees with a different pick: new/base geometric mean "
              f"{math.exp(np.mean(np.log(ratios))):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kv-dtype", choices=("bf16", "fp8_e4m3", "fp8_e5m2"), default="bf16")
    ap.add_argument("--trees", type=int, default=40, help="random trees per head config (seeds 0..N-1)")
    ap.add_argument("--picks-out", type=Path, help="CPU: write the picks of the planner at --planner-root here")
    ap.add_argument("--planner-root", type=Path, default=ROOT, help="the checkout whose pat_sglang makes the picks")
    ap.add_argument("--base", type=Path, help="GPU: time this checkout's picks against this picks file's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    if (args.picks_out is None) == (args.base is None):
        ap.error("give one of --picks-out (CPU) and --base (GPU)")
    if args.picks_out is not None:
        sys.path.insert(0, str(args.planner_root.resolve()))
        import pat_sglang

        print(f"planner: {Path(pat_sglang.__file__).parent}", file=sys.stderr)
        args.picks_out.write_text(json.dumps({"kv_dtype": args.kv_dtype, "picks": picks(args.kv_dtype, args.trees)},
                                             indent=0))
        return 0
    sys.path.insert(0, str(ROOT))
    saved = json.loads(args.base.read_text())
    if saved["kv_dtype"] != args.kv_dtype:
        ap.error(f"{args.base} holds {saved['kv_dtype']} picks, not {args.kv_dtype}")
    return time_picks(saved["picks"], args.kv_dtype, args.rounds, args.reps)


if __name__ == "__main__":
    raise SystemExit(main())
