"""The two slot-load variants against main's kernel source, same call (the sweep files in this folder). In these
sweeps the table column is the variant and ``@old_kernel.cu`` is main's source, so each bar is main's time over the
variant's: below 1, the variant is slower; 'again' (the variant re-timed last) shows the noise. Run from the
repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [
        ("sweep-d256-late.txt", "d256: load after P V (late)"),
        ("sweep-d128-late.txt", "d128: late"),
        ("sweep-d256-while-s.txt", "d256: load while S runs (while-S)"),
        ("sweep-d128-while-s.txt", "d128: while-S"),
        ("sweep-d64-while-s.txt", "d64: while-S"),
    ],
    ylabel="main's source / the variant, same call",
    title="H200, 2026-11-30 (seventeenth session): the wgmma path's slot-index load moved, tile_sweep, CUDA-graph "
    "replays, 32 q / 8 kv heads, bf16",
    ylim=(0.8, 1.1),
    figsize=(22, 4.5),
)
