"""PAT's time per small batch at fixed split lengths against the planner's pick, from small-splits.txt (the
tile_sweep.py table in this folder). Writes plot.png.

    .venv/bin/python docs/perf/kernels/2026-12-02-h200-small-splits/plot.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
lines = (HERE / "small-splits.txt").read_text().splitlines()
header = next(line.split() for line in lines if line.split()[:2] == ["case", "floor"])
splits = [int(c[1:]) for c in header if c.startswith("s")]
fig, ax = plt.subplots(figsize=(7, 4.2))
for line in lines:
    cols = line.split()
    if cols and cols[0].startswith("d") and "x" in cols[0] and len(cols) == len(header):
        table = float(cols[header.index("table")])
        times = [float(cols[header.index(f"s{s}")]) / table for s in splits]
        ax.plot(splits, times, "o-", label=cols[0])
ax.axhline(1.0, color="gray", lw=0.5)
ax.set_xlabel("fixed KV split length (tokens)")
ax.set_ylabel("time / the planner's pick")
ax.set_title("H200, 32/8 heads, d128, bf16: small private batches")
ax.legend()
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=110)
