"""Run one PAT workload a few times, for Nsight Compute (``ncu ... python bench/ncu_probe.py a64``), or
with ``--timing``: a -DPAT_TIMING build, printing per-CTA phase durations grouped by tile m and KV length.
``--head-dim`` picks the head dim, ``--heads HQ/HKV`` the head counts (default 32/8; e.g. 64/4, GQA 16), ``--variant``
a tile_sweep variant instead of the table's.
``--peer flashinfer-tc`` (or ``flashinfer``) runs FlashInfer's decode of the same case instead (its tensor-core or
CUDA-core kernel, as ``bench/bench_kernels.py`` times it), so that one call can profile both side by side:
``ncu -k regex:BatchDecode python -m bench.ncu_probe d64x4096 --head-dim 256 --peer flashinfer-tc``.
``--kv-dtype fp8_e4m3`` (or ``fp8_e5m2``): FP8 pools (random values, K and V scales 0.5), PAT only."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from bench.item_costs import cta_records
from bench.smoke_gpu import tree_indices
from bench.tile_sweep import parse_heads, parse_variant
from pat_sglang import HeadConfig, plan_forest
from pat_sglang.config import DeviceSpec
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import FP8_KV_NAMES, KernelTune, kernels_for, launch_plan
from pat_sglang.planner import ITEM_REQ_BEGIN, ITEM_REQ_END
from pat_sglang.workloads import STANDARD_WORKLOADS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", default="d64x4096", choices=sorted(STANDARD_WORKLOADS))
    ap.add_argument("--timing", action="store_true", help="a -DPAT_TIMING build: per-CTA phase durations")
    ap.add_argument("--head-dim", type=int, choices=(64, 128, 256), default=128)
    ap.add_argument("--heads", type=parse_heads, default=(32, 8), help="q/kv heads, e.g. 64/4 (default 32/8)")
    ap.add_argument("--dump", default=None, help="with --timing: save the CTAs' stamps, tile ms and KV lengths (.npz)")
    ap.add_argument("--variant", type=parse_variant, default=None, help="tile_sweep.py's KVTILE/STAGES/CTAS[/...]")
    ap.add_argument("--peer", choices=("flashinfer", "flashinfer-tc"), default=None,
                    help="run FlashInfer's decode of the case instead of PAT's (CUDA-core or tensor-core kernel)")
    ap.add_argument("--kv-dtype", choices=("bf16", *FP8_KV_NAMES), default="bf16",
                    help="KV pool dtype (FP8: K and V scales 0.5; not with --peer)")
    args = ap.parse_args(argv)
    name, timing, d = args.name, args.timing, args.head_dim
    hq, hkv = args.heads
    fp8 = args.kv_dtype != "bf16"
    if fp8 and args.peer is not None:
        ap.error("--kv-dtype FP8 profiles PAT only (no --peer)")
    if args.peer is not None:
        from bench.bench_kernels import Case, Inputs, peer_fi_decode

        run = peer_fi_decode(Inputs(Case(name, hq, hkv, head_dim=d), n_sets=1), tensor_cores=args.peer.endswith("-tc"))
        for _ in range(3):
            run(0)
        torch.cuda.synchronize()
        return
    gen = torch.Generator().manual_seed(0)
    indptr, indices, num_slots = tree_indices(STANDARD_WORKLOADS[name], gen)
    heads = HeadConfig(hq, hkv, d, torch.bfloat16, FP8_KV_NAMES[args.kv_dtype] if fp8 else None)
    kv_scale = 0.5 if fp8 else 1.0
    plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, DeviceSpec.from_torch()).to("cuda")
    st = plan.stats
    print(f"{name} {hq}/{hkv} d{d}: KV bytes planned {st.kv_bytes_planned}, unique {st.kv_bytes_unique}, per request "
          f"{st.kv_bytes_per_request}, partials {st.partial_bytes}; "
          f"{st.num_items} items x {heads.num_kv_heads} KV heads")
    q = torch.randn(len(indptr) - 1, hq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(num_slots, hkv, d, device="cuda", dtype=torch.bfloat16).to(heads.kv_dtype)
    v = torch.randn(num_slots, hkv, d, device="cuda", dtype=torch.bfloat16).to(heads.kv_dtype)
    tune = args.variant
    if timing:
        tune = KernelTune(timing=True) if tune is None else dataclasses.replace(tune, timing=True)
    for _ in range(3):
        launch_plan(plan, q, k, v, 0.1, tune=tune, k_scale=kv_scale, v_scale=kv_scale)
    torch.cuda.synchronize()
    if not timing:
        return
    stamps = kernels_for(heads, q.device, tune).read_timing(plan.num_items * heads.num_kv_heads).astype("int64")
    items = plan.items.cpu().numpy()
    item_rows = (items[:, ITEM_REQ_END] - items[:, ITEM_REQ_BEGIN]) * heads.group
    groups: dict[tuple[int, int], list] = {}  # (tile m, KV tokens) -> the CTAs' stamps, ns from the first start
    records = cta_records(name, "model", items, item_rows, heads.num_kv_heads, stamps)
    for r in records:
        groups.setdefault((r["tile_m"], r["kv"]), []).append([r["start_ns"], r["first_ns"], r["loop_ns"], r["end_ns"]])
    t0 = stamps[:, 0].min()
    if args.dump:
        np.savez(args.dump, stamps=stamps - t0, tile_m=np.array([r["tile_m"] for r in records]),
                 kv=np.array([r["kv"] for r in records]))
    print(f"{name}: kernel span {(stamps[:, 3].max() - t0) / 1e3:.1f} us, {len(stamps)} CTAs")
    cols = ("tile_m", "kv", "ctas", "start_us", "first_tile", "loop", "epilogue", "end_us")
    print(" ".join(f"{c:>10}" for c in cols))
    for (m, kv), rows in sorted(groups.items()):
        r = torch.from_numpy(np.stack(rows)).double() / 1e3
        print(
            f"{m:>10} {kv:>10} {len(rows):>10} {r[:, 0].median():>10.1f} {(r[:, 1] - r[:, 0]).median():>10.2f} "
            f"{(r[:, 2] - r[:, 1]).median():>10.2f} {(r[:, 3] - r[:, 2]).median():>10.2f} {r[:, 3].max():>10.1f}"
        )


if __name__ == "__main__":
    main()
