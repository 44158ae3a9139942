"""Bars of the probe's per-launch time by mode, one group per shape (v2-slots-staged.txt) -> plot.png."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
shapes: list[tuple[str, dict[str, float]]] = []
for line in (HERE / "v2-slots-staged.txt").read_text().splitlines():
    if line.startswith("== "):
        shapes.append((line[3:].strip() or "defaults", {}))
    elif m := re.match(r"(gather|bulk|multicast x\d)\s+([\d.]+) us", line):
        shapes[-1][1][m.group(1)] = float(m.group(2))
modes = list(shapes[0][1])
fig, ax = plt.subplots(figsize=(10, 4.5))
width = 0.8 / len(modes)
for i, mode in enumerate(modes):
    ax.bar([s + i * width for s in range(len(shapes))], [t[mode] / t["gather"] for _, t in shapes], width, label=mode)
ax.axhline(1.0, color="k", lw=0.8)
ax.set_xticks([s + 0.4 - width / 2 for s in range(len(shapes))], [name for name, _ in shapes], fontsize=7, rotation=12)
ax.set_ylabel("launch time / gather's")
ax.set_title("multicast_probe on H200, 2026-12-02: every mode slower than each CTA gathering its tiles")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=120)
