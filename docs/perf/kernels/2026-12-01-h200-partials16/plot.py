"""16-bit partial rows against fp32 ones (H200, 2026-12-01): per case, this change's time over main's in each of the
two alternating rounds of ``sweep-ab.txt`` (tile_sweep, CUDA-graph replays). Run from the repository root:
``python3 <this file>`` (writes ``partials16.png`` beside it)."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
_ROW = re.compile(r"^\s*(\w+)\s+[\d.]+\s+([\d.]+)\s*$")  # case, floor, table


def rounds() -> dict[tuple[int, str], dict[str, float]]:
    """(round, 'base' | 'this') -> per case, its time (us)."""
    out: dict[tuple[int, str], dict[str, float]] = {}
    key = None
    for line in (HERE / "sweep-ab.txt").read_text().splitlines():
        if line.startswith("=== round"):
            key = (int(line.split()[2].rstrip(":")), line.split()[3])
            out[key] = {}
        elif key is not None and (m := _ROW.match(line)):
            out[key][m.group(1)] = float(m.group(2))
    return out


def main() -> None:
    r = rounds()
    cases = list(r[(1, "base")])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.38
    for i, n in enumerate((1, 2)):
        ratios = [r[(n, "this")][c] / r[(n, "base")][c] for c in cases]
        ax.bar([x + (i - 0.5) * width for x in range(len(cases))], ratios, width, label=f"round {n}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylim(0.9, 1.25)
    ax.set_ylabel("16-bit partials / fp32 partials, same call")
    ax.set_title("H200, 2026-12-01: partial rows in the q dtype (tile_sweep, 32/8 heads, d128; a64 round 2: outlier)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "partials16.png", dpi=110)


if __name__ == "__main__":
    main()
