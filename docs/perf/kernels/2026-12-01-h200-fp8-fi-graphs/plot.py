"""FP8 PAT (the table's build) beside PAT on the bf16 pools the FP8 ones were made from and FlashInfer's FP8 decode,
both as CUDA-graph replays, same call per panel: each bar is a column's time over PAT FP8's (above 1: PAT FP8 is
faster). Run from the repository root: ``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [
        ("fp8-e4m3.txt", "e4m3, 32/8 heads"),
        ("fp8-e5m2.txt", "e5m2, 32/8 heads"),
        ("fp8-e4m3-h64.txt", "e4m3, 64/8 heads"),
    ],
    ylabel="column / PAT FP8, same call",
    title="H200, 2026-12-01: FP8 KV, PAT against FlashInfer's FP8 decode as CUDA-graph replays (tile_sweep)",
    figsize=(15, 4.5),
)
