"""Regret of the split pick (its time / the fastest candidate's) per head config, main (36f97a7) against this change,
on the three measured sets of trees (regrets.csv, made by bench/split_regret.py --evaluate with each planner)."""

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
rows = list(csv.DictReader(open(HERE / "regrets.csv")))
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
for ax, kv in zip(axes, ("bf16", "fp8"), strict=True):
    configs = sorted({"/".join(r["tree"].split("/")[:3]) for r in rows if r["set"].endswith(kv)})
    for i, cfg in enumerate(configs):
        for j, (col, color) in enumerate((("main_regret", "tab:red"), ("new_regret", "tab:blue"))):
            for k, s in enumerate(("regret-", "regret2-", "heldout-")):
                v = [float(r[col]) for r in rows if r["set"] == s + kv and r["tree"].startswith(cfg + "/")]
                gm = math.exp(sum(math.log(x) for x in v) / len(v))
                x = i + (j - 0.5) * 0.4 + (k - 1) * 0.1
                ax.plot([x, x], [min(v), max(v)], color=color, alpha=0.3)
                ax.plot(x, gm, "o" if k < 2 else "s", color=color,
                        label=f"{'main' if j == 0 else 'new'}" if i == 0 and k == 0 else None)
    ax.set_xticks(range(len(configs)), configs)
    ax.set_title(f"KV {kv}: geomean (dots: fitted sets, squares: held-out) and range")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.legend()
axes[0].set_ylabel("pick time / fastest candidate")
fig.tight_layout()
fig.savefig(HERE / "plot.png", dpi=110)
