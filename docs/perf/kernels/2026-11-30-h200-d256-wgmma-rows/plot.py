"""This session's sweeps against the tile table's entry of the same call (the sweep files in this folder): each
variant's time over the table's, per case and head dim; the 'again' column (the table re-timed last) shows the noise.
Run from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [
        ("sweep-d256-m64.txt", "d256: 64-row wgmma items (m64)"),
        ("sweep-d256-sr.txt", "d256: slot ring (sr)"),
        ("sweep-d256-c2-ls.txt", "d256: two S chains (c2), upper-half loads (ls)"),
        ("sweep-d128-m64.txt", "d128: m64"),
        ("sweep-d128-sr.txt", "d128: sr"),
        ("sweep-d64-m64.txt", "d64: m64"),
    ],
    ylabel="time / the table's entry, same call",
    title="H200, 2026-11-30 (sixteenth session): tile_sweep variants, CUDA-graph replays, 32 q / 8 kv heads, bf16 "
    "(bars above 1.6 clipped)",
    grid=(2, 3),
    ylim=(0.8, 1.6),
    figsize=(17, 8),
)
