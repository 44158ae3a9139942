"""plot.png from alt.txt: ``plan()`` beside its two parts (``from_flat`` + ``plan_forest`` on that fresh forest),
timed in one loop, and ``plan()`` alone in a loop (run from the repository root:
``python3 docs/perf/host/2026-12-02-fortythird-h200-host/plot.py``)."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGET_US = 300  # issue 9's plan() target at 256 x 4k


def main() -> None:
    text = (HERE / "alt.txt").read_text()
    loops = re.findall(r"(\w+) (gc on|gc off): plan\(\) (\d+) \| from_flat (\d+) \+ plan_forest (\d+)", text)
    alone = dict(re.findall(r"(\w+): plan\(\) alone in a loop (\d+)", text))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = []
    for i, (case, gc, plan, flat, fresh) in enumerate(loops):
        ax.bar(i - 0.2, int(plan), 0.4, color="C0", label="plan()" if i == 0 else None)
        ax.bar(i + 0.2, int(flat), 0.4, color="C1", label="from_flat" if i == 0 else None)
        ax.bar(i + 0.2, int(fresh), 0.4, bottom=int(flat), color="C2",
               label="+ plan_forest (fresh)" if i == 0 else None)
        labels.append(f"{case}\n{gc}")
    for case, us in alone.items():
        i = len(labels)
        ax.bar(i - 0.2, int(us), 0.4, color="C3", label="plan() alone" if i == len(loops) else None)
        labels.append(f"{case}\nalone")
    ax.axhline(TARGET_US, color="red", linestyle="--", label=f"target {TARGET_US} us")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("median us, 256 requests x 4k tokens")
    ax.set_title("plan() and its parts in one loop, H200 host CPU, 2026-12-02")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=110)


if __name__ == "__main__":
    main()
