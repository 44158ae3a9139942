"""8-warp CTAs (w8) and the 4-warp mma.sync build against the table's build (4 warps, wgmma), same call
(``sweep-w8.txt``): each bar is a column's time over the table's; above 1, slower. Run from the repository root:
``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [("sweep-w8.txt", "bf16, d128")],
    ylabel="column / the table's build, same call",
    title="H200, 2026-12-01: 8-warp CTAs with 128-row items, tile_sweep, CUDA-graph replays, 32 q / 8 kv heads",
    ylim=(0.8, 1.8),
    figsize=(12, 4.5),
)
