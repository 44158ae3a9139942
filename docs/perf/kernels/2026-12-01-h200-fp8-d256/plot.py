"""FP8 at head dim 256 (the sweep files in this folder): each bar is a column's time over the table column's, same
call; below 1, faster than the table. ``sweep-variants.txt``: the old table entry (16/4/2) as the table column;
``sweep-table.txt``: the new entry (32/3/2/wg/n32) as the table column; ``sweep-d128-check.txt``: the same ideas at
d128. Run from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [
        ("sweep-variants.txt", "d256: variants / old entry 16/4/2"),
        ("sweep-table.txt", "d256: / new entry 32/3/2/wg/n32"),
        ("sweep-d128-check.txt", "d128: / table 32/2/4/wg/n32"),
    ],
    ylabel="column / table column, same call",
    title="H200, 2026-12-01: FP8 e4m3 tile entries, tile_sweep, CUDA-graph replays, 32 q / 8 kv heads",
    ylim=(0.4, 1.8),
    figsize=(22, 4.5),
)
