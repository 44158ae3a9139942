"""This session's sweeps against the tile table's entry of the same call (the sweep files in this folder): each
variant's time over the table's, per case and head dim; the 'again' column (the table re-timed last) shows the noise."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.sweep_table import bar_ratios, read_sweep  # noqa: E402  (run from the repository root: PYTHONPATH=$PWD)

HERE = Path(__file__).resolve().parent
PANELS = [  # (sweep file, title)
    ("sweep-d256-m64.txt", "d256: 64-row wgmma items (m64)"),
    ("sweep-d256-sr.txt", "d256: slot ring (sr)"),
    ("sweep-d256-c2-ls.txt", "d256: two S chains (c2), upper-half loads (ls)"),
    ("sweep-d128-m64.txt", "d128: m64"),
    ("sweep-d128-sr.txt", "d128: sr"),
    ("sweep-d64-m64.txt", "d64: m64"),
]


fig, axes = plt.subplots(2, 3, figsize=(17, 8), sharey=True)
for ax, (name, title) in zip(axes.flat, PANELS, strict=True):
    bar_ratios(ax, *read_sweep(HERE / name), fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0.8, 1.6)
    ax.legend(fontsize=7)
for ax in axes[:, 0]:
    ax.set_ylabel("time / the table's entry, same call")
fig.suptitle("H200, 2026-11-30 (sixteenth session): tile_sweep variants, CUDA-graph replays, 32 q / 8 kv heads, bf16 "
             "(bars above 1.6 clipped)")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=100)
