"""Draw plot.png from the committed tables (CPU): per case, PAT's time over FlashInfer's tensor-core decode (same run)
with the old tile table entries (bench-hd64-before.md / bench-hd256-before.md) and the new ones
(bench-hd64-hd256-after.md), at head dims 64 and 256."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def ratios(path: Path) -> dict[str, float]:
    """case -> PATgraph / FI decTC from a bench_kernels results.md table."""
    out = {}
    header: list[str] = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "case":
            header = cells
        elif header and len(cells) == len(header) and re.match(r"\w+/32q8kv/d\d+", cells[0]):
            row = dict(zip(header, cells, strict=True))
            out[row["case"]] = float(row["PATgraph"]) / float(row["FI decTC"])
    return out


before = {**ratios(HERE / "bench-hd64-before.md"), **ratios(HERE / "bench-hd256-before.md")}
after = ratios(HERE / "bench-hd64-hd256-after.md")
cases = [c for c in after if c in before]
fig, ax = plt.subplots(figsize=(12, 4.5))
xs = range(len(cases))
ax.bar([x - 0.2 for x in xs], [before[c] for c in cases], 0.4, label="old entries (64/4/3, 32/3/1)")
ax.bar([x + 0.2 for x in xs], [after[c] for c in cases], 0.4, label="new entries (16/4/6, 16/4/2; wgmma)")
ax.axhline(1.0, color="k", lw=0.8)
ax.set_xticks(list(xs), [c.replace("/32q8kv/", "\n") for c in cases])
ax.set_ylabel("PAT (graph replay) / FlashInfer TC decode (eager)")
ax.set_title("H200, 2026-11-30: head dims 64 and 256, PAT over FlashInfer (same run each)")
ax.legend()
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=110)
