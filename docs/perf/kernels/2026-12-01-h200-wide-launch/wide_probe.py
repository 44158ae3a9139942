"""The wide launch (``KernelTune(wide_stages=N)``) on fixed split lengths: CUDA-graph time against the table's kernel,
and from a ``-DPAT_TIMING`` build the wide CTAs' stamps and per-phase cycle counts (H200, 2026-12-01; see README.md).

    python3 docs/perf/kernels/2026-12-01-h200-wide-launch/wide_probe.py CASES SPLITS STAGES [HQ/HKV] [m64]

CASES: ``bench/tile_sweep.py`` cases, comma-separated; SPLITS: split lengths in tokens (0: the planner's choice);
STAGES: wide-launch stages; ``m64``: plans without 128-row items (one consumer warpgroup per CTA). ``SRC=file.cu``
builds another kernel source (the ablations: their outputs are not attention, so they are not checked).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tile_sweep as ts  # noqa: E402
from bench_kernels import time_graph  # noqa: E402

from pat_sglang.config import DeviceSpec, HeadConfig, load_tile_table  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.kernels import KernelTune, kernels_for, launch_plan  # noqa: E402
from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_TILE_M, plan_forest  # noqa: E402
from pat_sglang.reference import naive_decode  # noqa: E402
from pat_sglang.workloads import make_qkv  # noqa: E402

TIMING_WIDE_BASE = 32768  # kernels/pat_decode.cu PAT_TIMING_WIDE_BASE: the wide CTAs' stamps
TIMING_CONSUMER_PROF = 16384  # the wide CTAs' consumer phase cycles (PAT_TIMING_SLOTS / 4)
TIMING_PRODUCER_PROF = 8192  # ... and producer phase cycles (PAT_TIMING_SLOTS / 8)
TIMING_SLOTS = 65536
WIDE_KV_TOKENS = 64


def main() -> None:
    cases = sys.argv[1].split(",")
    splits = [int(x) for x in sys.argv[2].split(",")]
    stages = [int(x) for x in sys.argv[3].split(",")]
    hq, hkv = (int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "32/8").split("/"))
    one_consumer = len(sys.argv) > 5 and sys.argv[5] == "m64"
    source = os.path.abspath(os.environ["SRC"]) if os.environ.get("SRC") else ""
    heads = HeadConfig(hq, hkv, 128, torch.bfloat16)
    real = DeviceSpec.from_torch(torch.device("cuda"))
    tiles = load_tile_table(real.arch)
    wide_tiles = tiles if one_consumer else tiles.with_tile_m(128)
    base = KernelTune(kv_tile=16, stages=4, min_ctas_per_sm=4, wgmma=True, wg_cols=32, source=source)
    scale = 1 / math.sqrt(128)
    for case in cases:
        rng = np.random.default_rng(0)
        ip, idx, slots = ts.case_batch(case, rng)
        q, k, v = make_qkv(ip.shape[0] - 1, hq, hkv, 128, slots, torch.bfloat16, "cuda", seed=1)
        sel = np.linspace(0, q.shape[0] - 1, 8).astype(int)
        ipl = ip.tolist()
        sub_ptr = torch.tensor([0] + list(np.cumsum([ipl[i + 1] - ipl[i] for i in sel])), dtype=torch.int64)
        sub_idx = torch.cat([idx[ipl[i] : ipl[i + 1]] for i in sel])
        ref = (sel, naive_decode(q[sel].cpu(), k.cpu(), v.cpu(), sub_ptr, sub_idx, scale))
        forest = PrefixForest.from_flat(ip, idx)
        plan = plan_forest(forest, heads, real).to("cuda")
        out = torch.empty_like(q)
        t_table = time_graph(lambda _, plan=plan, out=out, q=q, k=k, v=v: launch_plan(plan, q, k, v, scale, out=out),
                             1, 30)
        print(f"{case}: table {t_table:.1f} us (split {plan.split_tokens})", flush=True)
        for st in stages:
            for sp in splits:
                plan = plan_forest(forest, heads, real, tiles=wide_tiles, split_tokens=sp or None).to("cuda")
                tune = dataclasses.replace(base, wide_stages=st)
                out = torch.full_like(q, float("nan"))
                launch_plan(plan, q, k, v, scale, out=out, tune=tune)
                if not source:
                    ts.check_against(out, ref, f"{case} ws{st} s{sp}")
                t = time_graph(lambda _, plan=plan, tune=tune, out=out, q=q, k=k, v=v: launch_plan(
                    plan, q, k, v, scale, out=out, tune=tune), 1, 30)
                report(case, plan, dataclasses.replace(tune, timing=True), q, k, v, out, scale, heads, t, t_table, st,
                       sp)


def report(case: str, plan, timed: KernelTune, q, k, v, out, scale: float, heads: HeadConfig, t: float,
           t_table: float, st: int, sp: int) -> None:
    """One timing-build launch of ``plan``: the wide CTAs' phases from their stamps and cycle counters."""
    launch_plan(plan, q, k, v, scale, out=out, tune=timed)
    torch.cuda.synchronize()
    items = plan.items.cpu().numpy()
    wide = items[items[:, ITEM_TILE_M] >= 64]
    n = len(wide) * heads.num_kv_heads
    stamps = kernels_for(heads, q.device, timed).read_timing(TIMING_SLOTS)
    s = stamps[TIMING_WIDE_BASE : TIMING_WIDE_BASE + n].astype(np.int64)
    consumer = stamps[TIMING_CONSUMER_PROF : TIMING_CONSUMER_PROF + n].astype(np.float64)
    producer = stamps[TIMING_PRODUCER_PROF : TIMING_PRODUCER_PROF + n, :2].astype(np.float64)
    blocks = np.repeat(-(-(wide[:, ITEM_KV_END] - wide[:, ITEM_KV_BEGIN]) // WIDE_KV_TOKENS), heads.num_kv_heads)
    first = (s[:, 1] - s[:, 0]) / 1e3
    per_block = (s[:, 2] - s[:, 1]) / 1e3 / np.maximum(blocks - 1, 1)
    epilogue = (s[:, 3] - s[:, 2]) / 1e3
    print(f"  ws{st} split {sp or plan.split_tokens}: {t:.1f} us ({t / t_table:.2f}x table); wide CTAs {n}, "
          f"tiles/CTA {np.median(blocks):.0f}; wide span {(s[:, 3].max() - s[:, 0].min()) / 1e3:.1f} us; first tile "
          f"{np.median(first):.2f} us, per 64-token block {np.median(per_block):.3f} us, epilogue "
          f"{np.median(epilogue):.2f} us", flush=True)
    c = np.median(consumer / np.maximum(blocks - 1, 1)[:, None], axis=0)
    print(f"      cycles per block (thread 128): full wait {c[0]:.0f}, S {c[1]:.0f}, softmax {c[2]:.0f}, "
          f"PV wait+pins {c[3]:.0f}", flush=True)
    pr = np.median(producer / blocks[:, None], axis=0)
    print(f"      producer cycles per block (thread 0): empty wait {pr[0]:.0f}, issue {pr[1]:.0f}", flush=True)


if __name__ == "__main__":
    main()
