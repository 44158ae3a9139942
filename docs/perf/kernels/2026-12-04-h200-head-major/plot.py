"""The head-major sweep's ratios (head-major source / the table's build, first column) as a bar chart, from mha.txt and
gqa4.txt beside this file: .venv/bin/python docs/perf/kernels/2026-12-04-h200-head-major/plot.py"""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
rows = []
for name, heads in (("mha.txt", "32/32"), ("gqa4.txt", "32/8")):
    for line in (HERE / name).read_text().splitlines():
        m = re.match(r"\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line)
        if m:
            case, _, table, head_major, _ = m.groups()
            rows.append((f"{case}\n{heads}", float(head_major) / float(table)))
fig, ax = plt.subplots(figsize=(10, 4))
ax.bar([r[0] for r in rows], [r[1] for r in rows], color=["tab:red" if r[1] > 1 else "tab:green" for r in rows])
ax.axhline(1.0, color="black", linewidth=0.8)
ax.set_ylabel("head-major / table build (time)")
ax.set_title("Head-major CTA order on the H200, 2026-12-04 (tile_sweep.py, graph replays)")
ax.tick_params(axis="x", labelsize=7)
fig.tight_layout()
fig.savefig(HERE / "head_major.png", dpi=120)
