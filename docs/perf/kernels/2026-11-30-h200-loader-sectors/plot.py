"""The loader with whole-sector cp.async instructions against the kernel source before it, same call (the sweep files
in this folder). The table column is the new source and ``@old_kernel.cu`` the one before, so each bar is the old
source's time over the new one's: above 1, the new loader is faster; 'again' (the new source re-timed last) shows the
noise. Run from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [("sweep-d256.txt", "head dim 256 (4 chunks per thread)"), ("sweep-d128.txt", "head dim 128 (2 chunks)")],
    ylabel="time / the new loader's, same call",
    title="H200, 2026-11-30: KV gathers in whole 32-byte sectors, tile_sweep, CUDA-graph replays, 32 q / 8 kv, bf16",
    ylim=(0.9, 1.3),
    figsize=(12, 4.5),
)
