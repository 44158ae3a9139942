"""Draw plot.png from tile-v15.txt (CPU): per tree, v15's time over the kernel before (v14, built from its source in
the same call), over the every-tile-rescale build, and over the slack-8 build; and v15, v14 and fa3 over the floor."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3] / "bench"))
from tile_tables import read_table  # noqa: E402

# the run's header ran its long names together (before tile_tables.table_header): the columns as run
t = read_table(HERE / "tile-v15.txt", columns=["table", "16/4/4@v14.cu", "16/4/4/r-1", "16/4/4/r8", "fa3", "fi_tc"])
cases = list(t)
fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 4.8))
width = 0.27
for i, (label, col) in enumerate([("v15 / v14", "16/4/4@v14.cu"), ("v15 / v15 rescaling every tile", "16/4/4/r-1"),
                                  ("v15 / v15 with slack 8", "16/4/4/r8")]):
    ax.bar([x + (i - 1) * width for x in range(len(cases))], [t[c]["table"] / t[c][col] for c in cases], width,
           label=label)
ax.axhline(1.0, color="black", lw=0.8)
ax.set_ylim(0.75, 1.1)
ax.set_xticks(range(len(cases)), cases, rotation=30)
ax.set_ylabel("time ratio, CUDA-graph replays")
ax.set_title("v15 against the kernel before (H200, bf16, 32q/8kv, d128)")
ax.legend(fontsize=8)
for i, (label, col) in enumerate([("PAT v15", "table"), ("PAT v14", "16/4/4@v14.cu"), ("fa3", "fa3")]):
    bx.bar([x + (i - 1) * width for x in range(len(cases))], [t[c][col] / t[c]["floor"] for c in cases], width,
           label=label)
bx.axhline(1.0, color="black", lw=0.8)
bx.axhline(1.5, color="grey", lw=0.8, ls="--")
bx.set_yscale("log")
bx.set_xticks(range(len(cases)), cases, rotation=30)
bx.set_ylabel("time / unique-KV-bytes floor")
bx.set_title("over the floor (dashed: the 1.5x bar)")
bx.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=120)
