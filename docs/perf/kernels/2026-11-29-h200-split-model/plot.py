"""Draw plot.png from the committed tables (CPU): PAT / FlashInfer per case for the old split rule, the old rule with
the larger tile first, the cost model, and the best fixed split length of the sweep."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3] / "bench"))
from tile_tables import read_table  # noqa: E402


def main() -> None:
    old, order, model = (read_table(HERE / name) for name in ("tile-splits.txt", "tile-splits-order.txt",
                                                                "tile-model.txt"))
    cases = list(model)
    series = {
        "old rule (fill), smaller tile first": [old[c]["table"] / old[c]["fi_tc"] for c in cases],
        "old rule, larger tile first": [order[c]["table"] / order[c]["fi_tc"] for c in cases],
        "best fixed split (sweep)": [
            min(v for k, v in order[c].items() if k == "table" or k.startswith("s")) / order[c]["fi_tc"] for c in cases
        ],
        "cost model (8ad0f0f)": [model[c]["table"] / model[c]["fi_tc"] for c in cases],
    }
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.2
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + (i - 1.5) * width for x in range(len(cases))], values, width, label=label)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("PAT / FlashInfer (tensor-core decode), graph replays")
    ax.set_title("H200, bf16, 32 q / 8 kv heads, d128: the split choice per tree (2026-11-29)")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=120)


if __name__ == "__main__":
    main()
