"""The halves ring loop (columns 'table' and 'again': the diff applied) against the source without it
(``@scratch/before.cu``), same call per panel: each bar is a column's time over the first 'table' column's; the
comparison that counts is 'again' against 'before' (the first column carries the call's warm-up on some cases). Run
from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [
        ("sweep-d128.txt", "bf16, d128, 32/8"),
        ("sweep-d256.txt", "bf16, d256, 32/8"),
        ("sweep-h64.txt", "bf16, d128, 64/8"),
    ],
    ylabel="column / the first column, same call",
    title="H200, 2026-12-01: two 16-column halves in flight (64-row ring loop), tile_sweep, CUDA-graph replays",
    ylim=(0.8, 1.25),
    figsize=(15, 4.5),
)
