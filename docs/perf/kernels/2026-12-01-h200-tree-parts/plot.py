"""a128 and b (32/8 and 64/8 heads) beside their shared and private parts as batches of their own, and the floors
(``parts-32.txt``, ``parts-64.txt``, the table build's column). Run from the repository root:
``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.sweep_table import read_floors, read_sweep  # noqa: E402

HERE = Path(__file__).resolve().parent


fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
panels = [("parts-32.txt", "32 q / 8 kv heads"), ("parts-64.txt", "64 q / 8 kv heads")]
for ax, (name, title) in zip(axes, panels, strict=True):
    _, rows = read_sweep(HERE / name)
    floor = read_floors(HERE / name)
    trees = [("a128", "ap128", "as128"), ("b", "bp", "bs")]
    labels = ["whole tree", "shared part alone", "private part alone", "floor (whole tree)"]
    for i, (whole, shared, private) in enumerate(trees):
        values = [rows[whole][0], rows[shared][0], rows[private][0], floor[whole]]
        for j, v in enumerate(values):
            ax.bar(i + j * 0.2, v, 0.2, color=f"C{j}", label=labels[j] if i == 0 else None)
    ax.set_xticks([0.3, 1.3], [t[0] for t in trees])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
axes[0].set_ylabel("us (CUDA-graph replay, table build)")
fig.suptitle("H200, 2026-12-01: trees and their parts (bench/tile_sweep.py PART_CASES)")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=100)
