"""Fewer warps per CTA against the tile table's 4-warp entry (the sweeps in this folder): time / table per case."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.sweep_table import bar_ratios, read_sweep  # noqa: E402  (run from the repository root: PYTHONPATH=$PWD)

HERE = Path(__file__).resolve().parent


fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
for ax, d in zip(axes, (256, 128, 64), strict=True):
    bar_ratios(ax, *read_sweep(HERE / f"sweep-d{d}-warps.txt"))
    ax.set_title(f"head dim {d}")
    ax.legend(fontsize=8)
axes[0].set_ylabel("time / tile table's 4-warp entry")
fig.suptitle("H200, 2026-11-30: CTAs of one and two warps (tile_sweep /wN), CUDA-graph replays, "
             "32 q / 8 kv heads, bf16")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=110)
