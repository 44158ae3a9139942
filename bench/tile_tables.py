"""The table ``tile_sweep.py`` prints, read back: one reader for the CPU tools and the committed plots that use saved
runs (``split_model_check.py``, ``docs/perf/kernels/*/plot.py``).

Format: a ``device: ...`` line, a header ``case floor <column>...``, then per case one row of microseconds (``n/a``
where a column could not run), each followed by an ``items/partials:`` line."""

from __future__ import annotations

from pathlib import Path


def table_header(columns: list[str]) -> str:
    """The header line ``tile_sweep.py`` prints: one space before each name, so a name longer than its 10-character
    cell (an ``@FILE`` variant) stays one field."""
    return f"{'case':>11} {'floor':>8} " + "".join(f" {c:>9}" for c in columns)


def read_table(path: Path, columns: list[str] | None = None) -> dict[str, dict[str, float]]:
    """case -> {column: us} (``floor`` included, ``n/a`` cells left out), cases in run order.

    ``columns``: the names after ``case floor``, for a header whose names ran together (runs before ``table_header``
    put a space before each name: a name of 10 characters or more touched the one before it)."""
    lines = Path(path).read_text().splitlines()
    header = next(line for line in lines if line.split()[:2] == ["case", "floor"]).split()
    if columns is not None:
        header = ["case", "floor", *columns]
    rows: dict[str, dict[str, float]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == len(header) and parts[0] not in ("case", "items/partials:") and not line.startswith("device"):
            rows[parts[0]] = {h: float(p) for h, p in zip(header[1:], parts[1:], strict=True) if p != "n/a"}
    return rows
