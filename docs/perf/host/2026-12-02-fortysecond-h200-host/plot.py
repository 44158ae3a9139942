"""``pat_sglang.plan`` at 256 x 4k on the H200 machine's CPU, both runs, against issue 9's 300 us: ``plot.png``.

Reads ``plan_speed.txt`` and ``plan_speed-fresh.txt`` beside this file (``bench/plan_speed.py``'s tables: the ``plan``
column is the one before the target)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
RUNS = {"plan_speed.txt": "run 1", "plan_speed-fresh.txt": "run 2 (fresh column)"}
CASES = ("private", "shared2048", "ragged2048", "levels")
TARGET_US = 300.0


def plan_us(path: Path) -> dict[str, float]:
    """The ``plan`` column per case of a plan_speed table."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in CASES and "<=" in parts:
            out[parts[0]] = float(parts[parts.index("<=") - 1])
    return out


def main() -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (name, label) in enumerate(RUNS.items()):
        us = plan_us(HERE / name)
        ax.bar([i + 0.4 * k - 0.2 for i in range(len(CASES))], [us[c] for c in CASES], 0.4, label=label)
    ax.axhline(TARGET_US, color="red", linestyle="--", label="target 300 us")
    ax.set_xticks(range(len(CASES)), CASES)
    ax.set_ylabel("pat_sglang.plan, median us")
    ax.set_title("plan() at 256 requests x 4k tokens, H200 host CPU, 2026-12-02")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=120)


if __name__ == "__main__":
    main()
