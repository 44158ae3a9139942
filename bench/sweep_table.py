"""Read back the time table ``bench/tile_sweep.py`` prints (for plots of saved sweeps, CPU)."""

from __future__ import annotations

import re
from pathlib import Path


def read_sweep(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """The column names after 'floor' (the table's variant first) and, per case, their times (us), from a saved
    tile_sweep output."""
    lines = path.read_text().splitlines()
    names = next(ln for ln in lines if ln.strip().startswith("case")).split()[2:]  # after "case" and "floor"
    rows = {}
    for ln in lines:
        m = re.match(r"\s*(\w+)\s+([\d.]+)\s+((?:[\d.]+\s*)+)$", ln)
        if m and not ln.strip().startswith("items"):
            rows[m.group(1)] = [float(x) for x in m.group(3).split()]
    return names, rows


def bar_ratios(ax, names: list[str], rows: dict[str, list[float]], fontsize: int = 10) -> None:
    """Bars of each variant's time over the first column's (the table's), case by case, on the matplotlib axes
    ``ax``, with a line at 1."""
    cases = list(rows)
    width = 0.8 / (len(names) - 1)
    for i, name in enumerate(names[1:]):
        ratios = [rows[c][i + 1] / rows[c][0] for c in cases]
        ax.bar([x + i * width for x in range(len(cases))], ratios, width, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([x + width * (len(names) - 2) / 2 for x in range(len(cases))], cases, fontsize=fontsize)
