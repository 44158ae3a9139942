"""The two slot-load variants against main's kernel source, same call (the sweep files in this folder). In these
sweeps the table column is the variant and ``@old_kernel.cu`` is main's source, so each bar is main's time over the
variant's: below 1, the variant is slower; 'again' (the variant re-timed last) shows the noise."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.sweep_table import bar_ratios, read_sweep  # noqa: E402  (run from the repository root: PYTHONPATH=$PWD)

HERE = Path(__file__).resolve().parent
PANELS = [  # (sweep file, title)
    ("sweep-d256-late.txt", "d256: load after P V (late)"),
    ("sweep-d128-late.txt", "d128: late"),
    ("sweep-d256-while-s.txt", "d256: load while S runs (while-S)"),
    ("sweep-d128-while-s.txt", "d128: while-S"),
    ("sweep-d64-while-s.txt", "d64: while-S"),
]

fig, axes = plt.subplots(1, 5, figsize=(22, 4.5), sharey=True)
for ax, (name, title) in zip(axes.flat, PANELS, strict=True):
    bar_ratios(ax, *read_sweep(HERE / name), fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0.8, 1.1)
    ax.legend(fontsize=7)
axes[0].set_ylabel("main's source / the variant, same call")
fig.suptitle("H200, 2026-11-30 (seventeenth session): the wgmma path's slot-index load moved, tile_sweep, CUDA-graph "
             "replays, 32 q / 8 kv heads, bf16")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=100)
