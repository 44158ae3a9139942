"""The planner's split-length choice checked against measured launches (CPU).

``bench/tile_sweep.py --split-tokens N ...`` and ``bench/item_costs.py`` time each tree at fixed KV split lengths on
the GPU. This rebuilds every tree of such a run on the CPU (same cases, same order, same seed, so the same random
trees, with the heads and KV dtype a sweep's ``device:`` line names), plans it with the planner as it is now
(``plan_forest``: the cost model picks the length), and reports per
tree which measured column that plan is, its time against the fastest measured one, and the trees where the pick was
not among the measured plans (time them in the next GPU run). A model change is judged here before it costs device
time; the GPU run that follows confirms it.

    python3 bench/split_model_check.py --sweep docs/perf/kernels/<run>/tile-splits.txt ...
                                       [--launches docs/perf/kernels/<run>/item_costs/launches.csv ...]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from item_costs import config_heads  # noqa: E402
from tile_sweep import case_batch  # noqa: E402
from tile_tables import read_table  # noqa: E402

from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.kernels import FP8_KV_NAMES  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402

H200 = DeviceSpec(sm_count=132, arch="sm90")  # the device the runs were timed on (the planner's view of it)
HEADS = HeadConfig(32, 8, 128, torch.bfloat16)  # tile_sweep's and item_costs' default heads


def sweep_heads(path: Path) -> HeadConfig:
    """The heads a ``tile_sweep.py`` output was timed with, from its ``device:`` line (``KV fp8_e4m3; heads 64/8, head
    dim 128``; runs before those fields: the defaults)."""
    line = next((ln for ln in path.read_text().splitlines() if ln.startswith("device:")), "")
    found = re.search(r"KV (\S+); heads (\d+)/(\d+), head dim (\d+)", line)
    if found is None:
        return HEADS
    kv, hq, hkv, hd = found.group(1), int(found.group(2)), int(found.group(3)), int(found.group(4))
    return HeadConfig(hq, hkv, hd, torch.bfloat16, FP8_KV_NAMES.get(kv))


def sweep_times(path: Path) -> dict[str, dict[int | None, float]]:
    """``tile_sweep.py`` output: case -> {split length (None: the planner's own column 'table'): us}, in run order."""
    return {case: {None if col == "table" else int(col[1:]): us for col, us in cols.items()
                   if col == "table" or col[0] == "s" and col[1:].isdigit()}
            for case, cols in read_table(path).items()}


def launch_times(path: Path) -> dict[str, dict[int | None, float]]:
    """``item_costs.py``'s ``launches.csv``: case -> {split length (None: 'model'): whole launch us}, in run order."""
    out: dict[str, dict[int | None, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            split = None if row["split"] == "model" else int(row["split"])
            out.setdefault(row["case"], {})[split] = float(row["launch_us"])
    return out


def launch_heads(path: Path) -> HeadConfig:
    """The heads an ``item_costs.py`` ``launches.csv`` was measured with (``item_costs.config_heads`` of its first
    row; files written before the config columns: the defaults)."""
    with path.open() as f:
        row = next(csv.DictReader(f), None)
    heads = None if row is None else config_heads(row)
    return HEADS if heads is None else heads


def check(name: str, runs: dict[str, dict[int | None, float]], heads: HeadConfig = HEADS) -> list[float]:
    """Print one line per case; returns each case's time of the planner's pick over the fastest measured (NaN if the
    pick was not measured)."""
    rng = np.random.default_rng(0)  # tile_sweep / item_costs draw every case from one generator, in run order
    ratios = []
    for case, times in runs.items():
        indptr, indices, _ = case_batch(case, rng)
        forest = PrefixForest.from_flat(indptr, indices)
        pick = plan_forest(forest, heads, H200)
        fixed = {n: plan_forest(forest, heads, H200, split_tokens=n) for n in times if n is not None}
        same = [n for n, p in fixed.items() if torch.equal(p.items, pick.items)]
        best = min(times.values())
        best_col = min(times, key=times.__getitem__)
        if same:
            us = times[same[0]]
            ratios.append(us / best)
            what = f"= s{same[0]}: {us:7.1f} us, {us / best:5.3f}x the fastest"
        else:
            ratios.append(float("nan"))
            what = "not among the measured plans"
        label = "planner's own" if best_col is None else f"s{best_col}"
        print(f"{name} {case:>11}: pick {pick.split_tokens:>5} ({pick.num_items} items) {what}; fastest {label} "
              f"{best:.1f} us")
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", type=Path, nargs="*", default=[], help="tile_sweep.py outputs with --split-tokens")
    ap.add_argument("--launches", type=Path, nargs="*", default=[], help="item_costs.py launches.csv files")
    args = ap.parse_args(argv)
    ratios: list[float] = []
    for path in args.sweep:
        ratios += check(f"{path.parent.name}/{path.name}", sweep_times(path), sweep_heads(path))
    for path in args.launches:
        ratios += check(f"{path.parent.parent.name}/launches", launch_times(path), launch_heads(path))
    known = [r for r in ratios if r == r]
    if known:
        print(f"picks measured: {len(known)} of {len(ratios)}; time over the fastest measured: mean "
              f"{np.mean(known):.3f}x, worst {max(known):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
