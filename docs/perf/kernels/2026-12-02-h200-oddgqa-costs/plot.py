"""Regret of the split pick (its time / the fastest candidate's) at GQA 5, 7, 12 and 16, with and without each
configuration's measured MEASURED_ITEM_COSTS entry, on the two sets of trees timed on the H200 (this folder's and
../2026-12-02-h200-widegqa-costs/'s regret*.json), scored on the CPU by bench/split_regret.py's ``regrets``. Writes
plot.png into both folders.

    .venv/bin/python docs/perf/kernels/2026-12-02-h200-oddgqa-costs/plot.py
"""

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import json  # noqa: E402

from scripts import BENCH, load_script  # noqa: E402

from pat_sglang import planner  # noqa: E402

sr = load_script(BENCH / "split_regret.py")
# the entries measured this session (adopted or not: item-costs/ and the READMEs), keyed as the planner keys them
MEASURED = {
    ("16bit", 128, 7): {16: (36142, 444), 32: (108940, 427), 64: (96109, 277)},
    ("16bit", 128, 5): {16: (22080, 469), 32: (77238, 471), 64: (68685, 311)},
    ("fp8", 128, 7): {16: (45701, 277), 32: (136960, 348), 64: (138747, 248)},
    ("fp8", 128, 5): {16: (32935, 290), 32: (118685, 357), 64: (145956, 277)},
    ("16bit", 128, 12): {16: (43164, 446), 32: (162433, 358), 64: (100409, 288)},
    ("16bit", 128, 16): {16: (53541, 447), 32: (136476, 399), 64: (99414, 292)},
    ("fp8", 128, 12): {16: (58853, 286), 32: (174576, 275), 64: (135572, 305)},
    ("fp8", 128, 16): {16: (65366, 294), 32: (155252, 333), 64: (143583, 317)},
}
FOLDERS = {"oddgqa": HERE, "widegqa": HERE.parent / "2026-12-02-h200-widegqa-costs"}
HEADS = {"oddgqa": ("28/4/128", "40/8/128"), "widegqa": ("48/4/128", "64/4/128")}


def regrets(path: Path, key: tuple, with_entry: bool, heads: str) -> list[float]:
    saved = json.loads(path.read_text())
    table = {k: v for k, v in planner.MEASURED_ITEM_COSTS.items() if k != key}
    if with_entry:
        table[key] = MEASURED[key]
    old = dict(planner.MEASURED_ITEM_COSTS)
    planner.MEASURED_ITEM_COSTS.clear()
    planner.MEASURED_ITEM_COSTS.update(table)
    try:
        scored = sr.regrets(saved["records"], saved["sm_count"], saved["kv_dtype"])
    finally:
        planner.MEASURED_ITEM_COSTS.clear()
        planner.MEASURED_ITEM_COSTS.update(old)
    return [now for k, (now, _, _, _) in scored.items() if k.startswith(heads + "/")]


for name, folder in FOLDERS.items():
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kv in zip(axes, ("bf16", "fp8"), strict=True):
        elem = "16bit" if kv == "bf16" else "fp8"
        for i, heads in enumerate(HEADS[name]):
            hq, hkv, hd = (int(x) for x in heads.split("/"))
            key = (elem, hd, hq // hkv)
            adopted = key in planner.MEASURED_ITEM_COSTS
            for s, prefix in enumerate(("regret-", "regret2-")):
                path = folder / f"{prefix}{name}-{kv}.json"
                for j, (with_entry, color) in enumerate(((False, "tab:red"), (True, "tab:blue"))):
                    v = regrets(path, key, with_entry, heads)
                    gm = math.exp(sum(math.log(x) for x in v) / len(v))
                    x = i + (j - 0.5) * 0.4 + (s - 0.5) * 0.15
                    ax.plot([x, x], [min(v), max(v)], color=color, alpha=0.3)
                    ax.plot(x, gm, "o" if s == 0 else "s", color=color,
                            label=("without the entry" if j == 0 else "with it") if i == 0 and s == 0 else None)
            ax.text(i, 0.99, "adopted" if adopted else "left out", ha="center", va="top", fontsize=8)
        ax.set_xticks(range(len(HEADS[name])), [f"{h} (GQA {int(h.split('/')[0]) // int(h.split('/')[1])})"
                                               for h in HEADS[name]])
        ax.set_title(f"KV {kv}: geomean (dot: first set, square: second) and range")
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("pick time / fastest candidate")
    fig.tight_layout()
    fig.savefig(folder / "plot.png", dpi=110)
    print("wrote", folder / "plot.png")
