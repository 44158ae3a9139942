"""Read back the time table ``bench/tile_sweep.py`` prints (for plots of saved sweeps, CPU)."""

from __future__ import annotations

import re
from pathlib import Path

_ROW = re.compile(r"\s*(\w+)\s+([\d.]+)\s+((?:[\d.]+\s*)+)$")  # case, floor, the columns' times


def _time_rows(path: Path) -> list[re.Match]:
    """The time rows of a saved tile_sweep output (the 'items/partials' lines skipped)."""
    lines = path.read_text().splitlines()
    return [m for ln in lines if not ln.strip().startswith("items") and (m := _ROW.match(ln))]


def read_sweep(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """The column names after 'floor' (the table's variant first) and, per case, their times (us), from a saved
    tile_sweep output."""
    lines = path.read_text().splitlines()
    names = next(ln for ln in lines if ln.strip().startswith("case")).split()[2:]  # after "case" and "floor"
    return names, {m.group(1): [float(x) for x in m.group(3).split()] for m in _time_rows(path)}


def read_floors(path: Path) -> dict[str, float]:
    """Per case, its floor (us: its distinct KV at the copy bandwidth) from a saved tile_sweep output."""
    return {m.group(1): float(m.group(2)) for m in _time_rows(path)}


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


def plot_sweeps(
    folder: Path,
    panels: list[tuple[str, str]],
    ylabel: str,
    title: str,
    grid: tuple[int, int] | None = None,
    ylim: tuple[float, float] | None = None,
    figsize: tuple[float, float] | None = None,
    fontsize: int = 8,
    dpi: int = 100,
    out_name: str = "plot.png",
) -> Path:
    """``folder``/``out_name``: one ``bar_ratios`` panel per (sweep file in ``folder``, panel title) of ``panels``, on a
    ``grid`` of (rows, columns) (default: one row), sharing the y axis (``ylim``, label ``ylabel`` on the first
    column), under the figure title ``title``. The path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = grid or (1, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=figsize or (5 * cols + 2, 4.5 * rows), sharey=True, squeeze=False)
    for ax, (name, panel_title) in zip(axes.flat, panels, strict=True):
        bar_ratios(ax, *read_sweep(folder / name), fontsize=fontsize)
        ax.set_title(panel_title, fontsize=10)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    out = folder / out_name
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
