"""The plot of this folder's launches (forward span and the rest of the launch, per case and split, against the
unique-bytes floor). Run from the repository root: python3 docs/perf/kernels/2026-12-05-h200-item-costs-fiftyeighth/plot.py"""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
FLOOR_US = {"a32": 12.1, "e": 18.2}  # bench/bench_kernels.py's unique-bytes floors (README.md)

rows = []
for folder in ("ic32", "ic64"):
    with (HERE / folder / "launches.csv").open() as f:
        rows += list(csv.DictReader(f))
labels = [f"{r['case']} {r['heads']}\n{r['split']}" for r in rows]
forward = [float(r["forward_us"]) for r in rows]
rest = [float(r["launch_us"]) - float(r["forward_us"]) for r in rows]
fig, ax = plt.subplots(figsize=(11, 4))
x = range(len(rows))
ax.bar(x, forward, label="forward span")
ax.bar(x, rest, bottom=forward, label="merge and its start (launch - forward)")
for i, r in enumerate(rows):
    ax.plot([i - 0.4, i + 0.4], [FLOOR_US[r["case"]]] * 2, color="k", lw=1.5, label="unique-bytes floor" if i == 0 else None)
ax.set_xticks(list(x), labels, fontsize=7)
ax.set_ylabel("us (one CUDA-graph replay)")
ax.set_title("H200, 2026-12-05: a shared tree's launch, forward against merge (bench/item_costs.py)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "launches.png", dpi=110)
