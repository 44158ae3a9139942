"""The loader with whole-sector cp.async instructions against the kernel source before it, same call (the sweep files
in this folder). The table column is the new source and ``@old_kernel.cu`` the one before, so each bar is the old
source's time over the new one's: above 1, the new loader is faster; 'again' (the new source re-timed last) shows the
noise."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.sweep_table import bar_ratios, read_sweep  # noqa: E402  (run from the repository root: PYTHONPATH=$PWD)

HERE = Path(__file__).resolve().parent
PANELS = [("sweep-d256.txt", "head dim 256 (4 chunks per thread)"), ("sweep-d128.txt", "head dim 128 (2 chunks)")]

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
for ax, (name, title) in zip(axes.flat, PANELS, strict=True):
    bar_ratios(ax, *read_sweep(HERE / name), fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0.9, 1.3)
    ax.legend(fontsize=7)
axes[0].set_ylabel("time / the new loader's, same call")
fig.suptitle("H200, 2026-11-30: KV gathers in whole 32-byte sectors, tile_sweep, CUDA-graph replays, 32 q / 8 kv, bf16")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=100)
