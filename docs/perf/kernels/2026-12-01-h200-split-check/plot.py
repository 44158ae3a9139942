"""The planner's split choice (table column) against fixed split lengths (sN), same call (``sweep-splits.txt``):
each bar is a fixed length's time over the planner's choice; above 1, the choice is faster. Run from the repository
root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [("sweep-splits.txt", "bf16, d128")],
    ylabel="fixed split length / the planner's choice",
    title="H200, 2026-12-01: split model against fixed split lengths, tile_sweep, CUDA-graph replays, 32 q / 8 kv",
    ylim=(0.8, 1.9),
    figsize=(12, 4.5),
)
