"""How finely the planner should split KV: forward+merge time against the number of CTA waves it plans for.

A split length of ``ceil(planned tokens * KV heads / (waves * resident CTAs))`` tokens plans for ``waves`` waves of
CTAs. With ``waves = 1`` a batch of equal-length private rows becomes ~1-2 items
per request, and the grid is a whole number of waves plus a partial one: with 96 rows of ~6k tokens, 768 CTAs on
528 resident slots run as a full wave and a 45% one. More waves make the last one a small fraction, at the cost of
a ~5 us prologue per extra CTA and more merge traffic. This times PAT (CUDA-graph replays, median of ``--reps``)
for ``waves`` in ``--waves`` on:

* ``mooncake96``: the first 96 requests of the Mooncake conversation trace as private rows (input length capped at
  7936 + 64 decoded tokens; the trace's ~8% sharing left out), Llama-3-8B heads;
* the kernel benchmark's ``a128`` (4096 shared + 256 own, bs 128) and ``d64x4096`` (no sharing) trees.

    python3 bench/split_waves.py [--waves 1 2 4 8] [--reps 30] [--flashinfer]

``rule`` is the planner's own choice (its cost model, ``pat_sglang.planner._split_length``; ``bench/tile_sweep.py
--split-tokens`` times fixed lengths on more trees); ``--flashinfer`` adds FlashInfer's paged
decode (tensor cores off/on) on the same inputs, checked against the same float64 sample (needs flashinfer).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_kernels import time_graph  # noqa: E402

import pat_sglang  # noqa: E402
import pat_sglang.planner as planner  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig, load_tile_table  # noqa: E402
from pat_sglang.experiments.workloads import DEFAULT_MOONCAKE_TRACE, load_mooncake  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402
from pat_sglang.reference import sampled_naive_decode  # noqa: E402
from pat_sglang.workloads import make_qkv, standard_batch  # noqa: E402


def mooncake_rows(n: int, cap: int, decoded: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    specs = load_mooncake(DEFAULT_MOONCAKE_TRACE, limit=n)
    lens = np.array([min(sum(t for _, t in spec.segments), cap) + decoded for spec in specs], dtype=np.int64)
    total = int(lens.sum())
    indices = rng.permutation(total).astype(np.int32)
    indptr = np.zeros(n + 1, dtype=np.int32)
    indptr[1:] = np.cumsum(lens)
    return torch.from_numpy(indptr), torch.from_numpy(indices), total


def fi_time(indptr, indices, q, k, v, tensor_cores: bool, ref, reps: int, kv_scale: float | None = None,
            graph: bool = False) -> float:
    """FlashInfer's paged decode (page size 1) on the same batch and inputs: checked against the float64 sample, then
    the median of ``reps`` eager calls timed with CUDA events (kernels of hundreds of us: the launch is hidden), or of
    CUDA-graph replays with ``graph`` (shorter kernels: launch gaps then favour neither side). ``kv_scale``: FP8 pools
    (``k``/``v`` float8), dequantised = stored * kv_scale, passed at run as SGLang's flashinfer backend does."""
    import flashinfer

    n, hkv, d = indptr.shape[0] - 1, k.shape[1], k.shape[2]
    workspace = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tensor_cores)
    wrapper.plan(indptr.cuda(), indices.cuda(), torch.ones(n, dtype=torch.int32, device="cuda"), q.shape[1], hkv, d,
                 1, q_data_type=q.dtype, kv_data_type=k.dtype, sm_scale=1 / math.sqrt(d))
    cache = (k.view(-1, 1, hkv, d), v.view(-1, 1, hkv, d))
    scales = {} if kv_scale is None else {"k_scale": kv_scale, "v_scale": kv_scale}
    out = torch.full_like(q, float("nan"))
    wrapper.run(q, cache, out=out, **scales)
    torch.cuda.synchronize()
    err = float((out[ref[0]].double().cpu() - ref[1]).norm() / ref[1].norm())
    if not err < 2e-2:
        raise SystemExit(f"flashinfer (tensor cores {tensor_cores}): relative error {err:.2e}")
    if graph:
        return time_graph(lambda _: wrapper.run(q, cache, out=out, **scales), 1, reps)
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        wrapper.run(q, cache, out=out, **scales)
        b.record()
        times.append((a, b))
    torch.cuda.synchronize()
    return float(np.median([a.elapsed_time(b) for a, b in times]) * 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--waves", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--flashinfer", action="store_true",
                    help="also time FlashInfer's paged decode (tensor cores on and off) on each case, same inputs")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    real = DeviceSpec.from_torch(torch.device("cuda"))
    cases = {"mooncake96": mooncake_rows(96, 7936, 64, rng)}
    for name in ("a128", "d64x4096"):
        b = standard_batch(name)
        cases[name] = (b.kv_indptr, b.kv_indices, b.num_slots)
    print(f"device: {torch.cuda.get_device_name()}; SMs {real.sm_count}; times in us (graph replay, median)")
    cols = [f"w={w}" for w in args.waves] + ["rule"]
    fi_cols = ["fi_dec", "fi_dec_tc"] if args.flashinfer else []
    print(f"{'case':>12} " + " ".join(f"{c:>16}" for c in cols) + "".join(f"{c:>12}" for c in fi_cols))
    for name, (indptr, indices, slots) in cases.items():
        q, k, v = make_qkv(indptr.shape[0] - 1, 32, 8, 128, slots, torch.bfloat16, "cuda", seed=1)
        ref = None
        cells = []
        forest = PrefixForest.from_flat(indptr, indices)
        for w in [*args.waves, None]:  # None: the planner's own rule on the real device
            if w is None:
                plan = plan_forest(forest, heads, real).to("cuda")
            else:  # w waves' split length, instead of the cost model's choice
                planned = plan_forest(forest, heads, real).stats.kv_bytes_planned // heads.kv_token_bytes
                target = planner.target_ctas(real, load_tile_table(real.arch), heads)
                length = max(1, math.ceil(planned * heads.num_kv_heads / (w * target)))
                plan = plan_forest(forest, heads, real, split_tokens=length).to("cuda")
            out = torch.full_like(q, float("nan"))
            pat_sglang.run(plan, q, k, v, out=out)
            torch.cuda.synchronize()
            if ref is None:
                ref = sampled_naive_decode(q, k, v, indptr, indices, 1 / math.sqrt(128))
            err = float((out[ref[0]].double().cpu() - ref[1]).norm() / ref[1].norm())
            if not err < 2e-2:
                raise SystemExit(f"{name} waves {w}: relative error {err:.2e}")
            us = time_graph(lambda _, plan=plan, out=out, q=q, k=k, v=v: pat_sglang.run(plan, q, k, v, out=out), 1,
                            args.reps)
            cells.append(f"{us:8.1f} ({plan.num_items:4d}it)")
        fi_cells = [f"{fi_time(indptr, indices, q, k, v, tc, ref, args.reps):12.1f}" for tc in (False, True)] \
            if args.flashinfer else []
        print(f"{name:>12} " + " ".join(f"{c:>16}" for c in cells) + "".join(fi_cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
