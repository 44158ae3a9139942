"""The L2-prefetch sweep's variants over the table's second timing (``again``), per case: ``plot.png``.

Reads ``d128.txt``, ``d256.txt`` and ``fp8-mha.txt`` beside this file (``bench/tile_sweep.py``'s tables)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
SETS = {"d128.txt": "bf16 d128 32/8", "d256.txt": "bf16 d256 32/8", "fp8-mha.txt": "FP8 d128 32/32"}


def rows(path: Path) -> list[tuple[str, float, float, float, float]]:
    """(case, table, L2::128B, L2::256B, again) per case line of a sweep table (case, floor, then the four times)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        try:
            table, l2_128, l2_256, again = (float(x) for x in parts[2:6])
            float(parts[1])  # the floor: header and item lines have none
        except (ValueError, IndexError):
            continue
        out.append((parts[0], table, l2_128, l2_256, again))
    return out


def main() -> None:
    labels, r128, r256 = [], [], []
    for name, title in SETS.items():
        for case, _table, l2_128, l2_256, again in rows(HERE / name):
            labels.append(f"{title}\n{case}")
            r128.append(l2_128 / again)
            r256.append(l2_256 / again)
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(14, 4.5))
    ax.bar([i - 0.2 for i in x], r128, 0.4, label=".L2::128B")
    ax.bar([i + 0.2 for i in x], r256, 0.4, label=".L2::256B")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("time / the table's build (again)")
    ax.set_ylim(0.9, 1.08)
    ax.set_title("L2 prefetch hints on the KV gathers, H200, 2026-12-02 (CUDA-graph replays, median of 30)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=120)


if __name__ == "__main__":
    main()
