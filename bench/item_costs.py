"""What each forward CTA costs, by tile m and KV length: the measurements the planner's split cost model is fitted to
(GPU; the fit and the report run on the CPU from the saved records).

The split choice (``pat_sglang.planner._launch_costs``) simulates the launch with a fixed cost per item by tile m
(``ITEM_OVERHEAD_SLOT_BYTES``) plus its KV bytes, and a cost per partial of the longest merge chain; those constants
come from this measurement (``docs/perf/kernels/2026-11-29-h200-item-costs/``). This measures the terms
directly: a ``-DPAT_TIMING`` build stamps every CTA (start, first KV tile landed, KV loop end, end; ``%globaltimer``),
so each CTA's duration can be set against its tile m and KV length, and the merge's time is the whole launch (graph
replays of the plain build) less the forward span.

    python3 bench/item_costs.py [--cases gsp64 b a64 ...] [--split-tokens 2048 1024 512] [--out DIR]
                                [--heads 64/8] [--head-dim 256] [--kv-dtype fp8_e4m3] [--costs]

The model's constants were fitted on 32/8 heads, d128, bf16 (the defaults). ``--heads``, ``--head-dim`` and
``--kv-dtype`` measure other configurations, e.g. FP8 pools (made as ``bench/tile_sweep.py`` makes them: the bf16
values / 0.5, scales 0.5), whose items do not cost their bytes at the bf16 rate
(``docs/perf/kernels/2026-12-01-h200-fp8-split-model/``). Each run's ``launches.csv`` names its configuration;
``--costs`` prints the fit as that configuration's ``planner.MEASURED_ITEM_COSTS`` entry (also with ``--report``).

writes ``DIR/ctas.csv.gz`` (one row per CTA: case, split, item, KV head, tile m, rows, KV tokens, the four stamps in
ns from the launch's first start) and ``DIR/launches.csv`` (per case and split: items, partials, the longest merge
chain, forward span and whole launch in us), and prints per tile m the least-squares fit
``duration_us = overhead_us + us_per_ktoken * kv / 1000`` over all CTAs, with the launches' table. ``--report DIR``
prints the fit and the table again from saved files (CPU).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CTA_FIELDS = ("case", "split", "item", "kv_head", "tile_m", "rows", "kv", "start_ns", "first_ns", "loop_ns", "end_ns")
LAUNCH_FIELDS = ("case", "split", "items", "partials", "max_chain", "forward_us", "launch_us")
CONFIG_FIELDS = ("heads", "head_dim", "kv_dtype")  # written into launches.csv beside LAUNCH_FIELDS
DEFAULT_CASES = ("gsp64", "gsp256", "rollout64", "b", "c", "e", "a64", "a128", "d64x4096")


def cta_records(case: str, split: str, items: np.ndarray, item_rows: np.ndarray, num_kv_heads: int,
                stamps: np.ndarray) -> list[dict[str, object]]:
    """One record per forward CTA. ``items``: the plan's item rows (host, ``ITEM_*`` columns); ``item_rows``: query
    rows of each item (requests x GQA group); ``stamps``: ``[items * kv_heads, 4]`` globaltimer stamps in the
    kernel's CTA order (``blockIdx.y * gridDim.x + blockIdx.x``: item-major, KV head minor)."""
    from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_TILE_M  # noqa: PLC0415

    if stamps.shape != (items.shape[0] * num_kv_heads, 4):
        raise ValueError(f"stamps {stamps.shape} for {items.shape[0]} items x {num_kv_heads} KV heads")
    t0 = int(stamps[:, 0].min())
    out = []
    for cta, st in enumerate(stamps.tolist()):
        item, head = divmod(cta, num_kv_heads)
        row = items[item]
        out.append({
            "case": case, "split": split, "item": item, "kv_head": head, "tile_m": int(row[ITEM_TILE_M]),
            "rows": int(item_rows[item]), "kv": int(row[ITEM_KV_END] - row[ITEM_KV_BEGIN]),
            "start_ns": st[0] - t0, "first_ns": st[1] - t0, "loop_ns": st[2] - t0, "end_ns": st[3] - t0,
        })
    return out


def fit_tile_costs(records: Iterable[dict[str, object]]) -> dict[int, tuple[float, float, int]]:
    """Per tile m: (overhead us, us per 1000 KV tokens, CTAs) of the least-squares line through the CTAs' durations
    (end - start) against their KV tokens. A tile m whose CTAs all have one KV length gets its mean duration as the
    overhead and NaN per token (the line is not determined)."""
    by_tile: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        duration_us = (float(r["end_ns"]) - float(r["start_ns"])) / 1e3
        by_tile.setdefault(int(r["tile_m"]), []).append((float(r["kv"]), duration_us))
    fits = {}
    for tile, points in sorted(by_tile.items()):
        kv, dur = np.array(points).T
        if np.ptp(kv) == 0:
            fits[tile] = (float(dur.mean()), math.nan, len(points))
            continue
        slope, intercept = np.polyfit(kv / 1e3, dur, 1)
        fits[tile] = (float(intercept), float(slope), len(points))
    return fits


def config_heads(launch: dict[str, object]):  # -> HeadConfig | None
    """The heads a run was measured with, from a ``launches.csv`` row's config columns (``CONFIG_FIELDS``); None for
    rows written before those columns existed (then the defaults: 32/8, d128, bf16)."""
    import torch  # noqa: PLC0415

    from pat_sglang.config import HeadConfig  # noqa: PLC0415
    from pat_sglang.kernels import FP8_KV_NAMES  # noqa: PLC0415

    if not launch.get("heads"):
        return None
    hq, hkv = (int(x) for x in str(launch["heads"]).split("/"))
    return HeadConfig(hq, hkv, int(launch["head_dim"]), torch.bfloat16, FP8_KV_NAMES.get(str(launch["kv_dtype"])))


def cost_entry(fits: dict[int, tuple[float, float, int]], launches: list[dict[str, object]]) -> str:
    """The fit as a ``planner.MEASURED_ITEM_COSTS`` entry for the run's configuration (from ``launches``' config
    columns, keyed by ``planner.cost_key``): per tile m with a determined line, (fixed cost, cost per KV token of one
    KV head) in slot bytes (``planner.SLOT_BYTES_PER_US`` per us). A CTA streams one KV head's tokens, so its us per
    1000 tokens is per 1000 head-tokens."""
    from pat_sglang.planner import SLOT_BYTES_PER_US, cost_key  # noqa: PLC0415

    heads = config_heads(launches[0]) if launches else None
    if heads is None:
        raise ValueError("launches without the run's configuration (written before --heads/--kv-dtype existed)")
    costs = {tile: (round(overhead * SLOT_BYTES_PER_US), round(per_k / 1e3 * SLOT_BYTES_PER_US))
             for tile, (overhead, per_k, _) in fits.items() if math.isfinite(per_k) and overhead > 0 and per_k > 0}
    body = ", ".join(f"{tile}: ({fixed}, {token})" for tile, (fixed, token) in sorted(costs.items()))
    kind, head_dim, group = cost_key(heads)
    return f"(\"{kind}\", {head_dim}, {group}): {{{body}}},"


def write_csv(path: Path, fields: tuple[str, ...], rows: Iterable[dict[str, object]]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def report(ctas: list[dict[str, object]], launches: list[dict[str, object]]) -> str:
    lines = []
    if launches and launches[0].get("heads"):
        first = launches[0]
        lines.append(f"heads {first['heads']}, head dim {first['head_dim']}, KV {first['kv_dtype']}")
    lines.append("per tile m, over all CTAs: duration_us = overhead_us + us_per_ktoken * kv / 1000")
    lines.append(f"{'tile_m':>6} {'ctas':>7} {'overhead_us':>12} {'us/ktoken':>10}")
    for tile, (overhead, per_k, n) in fit_tile_costs(ctas).items():
        lines.append(f"{tile:>6} {n:>7} {overhead:>12.2f} {per_k:>10.2f}")
    lines.append("")
    lines.append(" ".join(f"{f:>10}" for f in LAUNCH_FIELDS) + f" {'merge_us':>10}")
    for r in launches:
        merge = float(r["launch_us"]) - float(r["forward_us"])
        lines.append(" ".join(f"{r[f]!s:>10}" for f in LAUNCH_FIELDS) + f" {merge:>10.1f}")
    return "\n".join(lines)


def measure(cases: list[str], split_tokens: list[int], reps: int, heads_qkv: tuple[int, int] = (32, 8),
            head_dim: int = 128, kv_dtype: str = "bf16") -> tuple[list[dict], list[dict]]:
    import torch  # noqa: PLC0415
    from bench_kernels import time_graph  # noqa: PLC0415
    from tile_sweep import bench_kv_scale, case_batch, stored_kv  # noqa: PLC0415

    from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: PLC0415
    from pat_sglang.forest import PrefixForest  # noqa: PLC0415
    from pat_sglang.kernels import FP8_KV_NAMES, KernelTune, kernels_for, launch_plan  # noqa: PLC0415
    from pat_sglang.planner import ITEM_REQ_BEGIN, ITEM_REQ_END, plan_forest  # noqa: PLC0415
    from pat_sglang.workloads import make_qkv  # noqa: PLC0415

    hq, hkv = heads_qkv
    heads = HeadConfig(hq, hkv, head_dim, torch.bfloat16, FP8_KV_NAMES.get(kv_dtype))
    kv_scale = bench_kv_scale(heads)
    config = {"heads": f"{hq}/{hkv}", "head_dim": head_dim, "kv_dtype": kv_dtype}
    device = DeviceSpec.from_torch(torch.device("cuda"))
    timing = KernelTune(timing=True)
    rng = np.random.default_rng(0)
    ctas: list[dict] = []
    launches: list[dict] = []
    for case in cases:
        indptr, indices, slots = case_batch(case, rng)
        q, k16, v16 = make_qkv(indptr.shape[0] - 1, hq, hkv, head_dim, slots, torch.bfloat16, "cuda", seed=1)
        k, v = stored_kv(k16, v16, heads)
        forest = PrefixForest.from_flat(indptr, indices)
        for split in [None, *split_tokens]:
            host = plan_forest(forest, heads, device, split_tokens=split)
            plan = host.to("cuda")
            out = torch.empty_like(q)
            launch_us = time_graph(lambda _, plan=plan, out=out, q=q, k=k, v=v: launch_plan(
                plan, q, k, v, 0.1, out=out, k_scale=kv_scale, v_scale=kv_scale), 1, reps)
            for _ in range(3):
                launch_plan(plan, q, k, v, 0.1, out=out, tune=timing, k_scale=kv_scale, v_scale=kv_scale)
            torch.cuda.synchronize()
            stamps = kernels_for(heads, q.device, timing).read_timing(host.num_items * heads.num_kv_heads)
            items = host.items.numpy()
            rows = (items[:, ITEM_REQ_END] - items[:, ITEM_REQ_BEGIN]) * heads.group
            label = "model" if split is None else str(split)
            recs = cta_records(case, label, items, rows, heads.num_kv_heads, stamps.astype(np.int64))
            ctas += recs
            chain = np.diff(host.merge_indptr.numpy())
            forward_us = max(int(r["end_ns"]) for r in recs) / 1e3
            launches.append({"case": case, "split": label, "items": host.num_items, "partials": host.num_partials,
                             "max_chain": int(chain.max()) if chain.size else 0, "forward_us": round(forward_us, 1),
                             "launch_us": round(launch_us, 1), **config})
            print(" ".join(f"{launches[-1][f]!s:>10}" for f in LAUNCH_FIELDS), flush=True)
    return ctas, launches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES))
    ap.add_argument("--split-tokens", type=int, nargs="*", default=[2048, 1024, 512])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("out/item_costs"))
    ap.add_argument("--report", type=Path, default=None, help="print the fit from a DIR this wrote (CPU)")
    from tile_sweep import parse_heads  # noqa: PLC0415  (the sweeps' one reader of HQ/HKV)

    ap.add_argument("--heads", type=parse_heads, default=(32, 8), help="q/kv heads (default 32/8)")
    ap.add_argument("--head-dim", type=int, choices=(64, 128, 256), default=128)
    ap.add_argument("--kv-dtype", choices=("bf16", "fp8_e4m3", "fp8_e5m2"), default="bf16")
    ap.add_argument("--costs", action="store_true",
                    help="also print the fit as a planner.MEASURED_ITEM_COSTS entry (slot bytes) for this config")
    args = ap.parse_args(argv)
    if args.report is not None:
        ctas = read_csv(args.report / "ctas.csv.gz")
        launches = read_csv(args.report / "launches.csv")
    else:
        ctas, launches = measure(args.cases, args.split_tokens, args.reps, args.heads, args.head_dim, args.kv_dtype)
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(args.out / "ctas.csv.gz", CTA_FIELDS, ctas)
        write_csv(args.out / "launches.csv", LAUNCH_FIELDS + CONFIG_FIELDS, launches)
    print(report(ctas, launches))
    if args.costs:
        print(f"MEASURED_ITEM_COSTS entry: {cost_entry(fit_tile_costs(ctas), launches)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
