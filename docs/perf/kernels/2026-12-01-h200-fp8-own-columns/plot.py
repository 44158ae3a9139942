"""FP8 candidate 0 against the source without it, same call (the sweep files in this folder). The table column is
the candidate and ``@before.cu`` the source without it, so each bar is that time over the candidate's: below 1, the
candidate is slower; 'again' (the candidate re-timed last) shows the noise, 'bf16' the table's build on bf16 pools.
Run from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [("sweep-d128.txt", "FP8 e4m3, d128"), ("sweep-d256.txt", "FP8 e4m3, d256")],
    ylabel="other column / the candidate, same call",
    title="H200, 2026-12-01: FP8 candidate 0 (computing warps convert their own columns), tile_sweep, CUDA-graph "
    "replays, 32 q / 8 kv heads",
    ylim=(0.4, 1.4),
    figsize=(14, 4.5),
)
