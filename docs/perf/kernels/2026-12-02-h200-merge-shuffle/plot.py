"""Bar plot of the three sweeps here (candidate, main, candidate again; graph-replay us): plot.png."""
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
labels, cand, main, again = [], [], [], []
for name in ("sweep-d128.txt", "sweep-d64.txt", "sweep-d256.txt"):
    dim = re.search(r"d(\d+)", name).group(1)
    for line in (HERE / name).read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and not parts[0].startswith(("case", "items")):
            try:
                values = [float(x) for x in parts[2:]]
            except ValueError:
                continue
            labels.append(f"{parts[0]}\nd{dim}")
            for column, v in zip((cand, main, again), values, strict=True):
                column.append(v)
fig, ax = plt.subplots(figsize=(12, 4))
x = range(len(labels))
width = 0.27
for i, (values, label) in enumerate(((cand, "shuffle merge"), (main, "main's merge"), (again, "shuffle merge again"))):
    ax.bar([j + (i - 1) * width for j in x], [v / m for v, m in zip(values, main, strict=True)], width, label=label)
ax.set_xticks(list(x))
ax.set_xticklabels(labels, fontsize=7)
ax.set_ylabel("time / main's (graph replays)")
ax.set_ylim(0.9, 1.15)
ax.axhline(1.0, color="k", lw=0.5)
ax.set_title("pat_merge with shuffled partial indices vs main's, H200, 2026-12-02 (first-timed cells carry an offset)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=110)
