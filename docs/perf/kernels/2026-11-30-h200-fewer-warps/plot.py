"""Fewer warps per CTA against the tile table's 4-warp entry (the sweeps in this folder): time / table per case.
Run from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [(f"sweep-d{d}-warps.txt", f"head dim {d}") for d in (256, 128, 64)],
    ylabel="time / tile table's 4-warp entry",
    title="H200, 2026-11-30: CTAs of one and two warps (tile_sweep /wN), CUDA-graph replays, 32 q / 8 kv heads, bf16",
    figsize=(15, 4.5),
    fontsize=10,
    dpi=110,
)
