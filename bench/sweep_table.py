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
