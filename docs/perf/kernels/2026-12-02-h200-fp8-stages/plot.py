"""plot.png from this folder's FP8 d128 sweeps: each variant's time over the 2-stage table build's; plot-other.png from
the FP8 d64 sweep and the 16-bit d128 fixed splits (the FP8 d256 and 16-bit d128 stage sweeps hold a column that could
not build, n/a on every case, and are not drawn). Run from the repository root:
``python3 docs/perf/kernels/2026-12-02-h200-fp8-stages/plot.py``."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3] / "bench"))

from sweep_table import plot_sweeps  # noqa: E402

plot_sweeps(
    HERE,
    [("sweep-32x32-a.txt", "32/32 (MHA), call 1"), ("sweep-32x32-b.txt", "32/32 (MHA), call 2"),
     ("sweep-32x8.txt", "32/8"), ("sweep-64x8.txt", "64/8")],
    "time / table (32/2/4/wg/n32)",
    "FP8 e4m3 KV, d128, H200 2026-12-02: stage sweeps (the table's build first; 'again' = it, run last)",
    grid=(2, 2),
    ylim=(0.6, 2.2),
    figsize=(14, 9),
)
plot_sweeps(
    HERE,
    [("fp8-d64-32x8.txt", "FP8 d64, 32/8 (table 32/4/6)"), ("splits-bf16-d128.txt", "16-bit d128, fixed splits")],
    "time / table",
    "H200 2026-12-02: FP8 d64 stage sweep and 16-bit d128 split lengths (the table's build first; 'again' = it, last)",
    ylim=(0.8, 1.9),
    figsize=(14, 4.5),
    out_name="plot-other.png",
)
