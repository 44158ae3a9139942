"""Draw plot.png from the committed tables (CPU): per tree, PAT's time over FlashInfer's (tensor-core decode, same
run) with the v13 cost model (split-model run, 2026-11-29 eighth session), with v14 (this run), and the fastest
fixed split length of this run; and the fused merge against the two-launch build."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
SPLIT_MODEL = HERE.parent / "2026-11-29-h200-split-model"
sys.path.insert(0, str(HERE.parents[3] / "bench"))
from tile_tables import read_table  # noqa: E402

v13 = read_table(SPLIT_MODEL / "tile-model.txt")
v14 = read_table(HERE / "tile-v14.txt")
fused = read_table(HERE / "tile-fused-merge.txt")
cases = list(v14)
fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 2]})
series = {
    "cost model v13 (8ad0f0f)": [v13[c]["table"] / v13[c]["fi_tc"] if c in v13 else float("nan") for c in cases],
    "cost model v14 (3bc6743)": [v14[c]["table"] / v14[c]["fi_tc"] for c in cases],
    "fastest fixed split (this run)": [
        min(v for k, v in v14[c].items() if k == "table" or k.startswith("s")) / v14[c]["fi_tc"] for c in cases
    ],
}
width = 0.27
for i, (label, values) in enumerate(series.items()):
    ax.bar([x + (i - 1) * width for x in range(len(cases))], values, width, label=label)
ax.axhline(1.0, color="black", lw=0.8)
ax.set_xticks(range(len(cases)), cases, rotation=30)
ax.set_ylabel("PAT / FlashInfer, graph replays")
ax.set_title("split length per tree (H200, bf16, 32q/8kv, d128)")
ax.legend(fontsize=8)
fcases = list(fused)
bx.bar(range(len(fcases)), [fused[c]["table"] / fused[c]["merge2"] for c in fcases], 0.6, color="tab:red")
bx.axhline(1.0, color="black", lw=0.8)
bx.set_xticks(range(len(fcases)), fcases, rotation=30)
bx.set_ylabel("fused merge / merge as its own launch")
bx.set_title("branch fused-merge (37ed1ec): slower on every shared tree")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=120)
