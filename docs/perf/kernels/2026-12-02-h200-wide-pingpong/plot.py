"""plot.png from probe.txt: the consumer's cycles per 64-token block by phase (stacked), main's wide launch against
the ping-pong, per case (run from the repository root:
``python3 docs/perf/kernels/2026-12-02-h200-wide-pingpong/plot.py``)."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
PHASES = ("full wait", "S", "softmax", "PV wait+pins")


def read_probe() -> list[tuple[str, float, dict[str, int]]]:
    """(case, us per block, consumer cycles per phase) in file order: main's source first, then the ping-pong's."""
    rows, case, block_us = [], None, None
    for line in (HERE / "probe.txt").read_text().splitlines():
        if m := re.match(r"(\w+): table", line):
            case = m.group(1)
        elif m := re.search(r"per 64-token block ([\d.]+) us", line):
            block_us = float(m.group(1))
        elif "cycles per block (thread 128)" in line:
            cycles = {name: int(v) for name, v in re.findall(r"(full wait|S|softmax|PV wait\+pins) (\d+)", line)}
            rows.append((case, block_us, cycles))
    return rows


def main() -> None:
    rows = read_probe()
    half = len(rows) // 2
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = []
    for i, (case, block_us, cycles) in enumerate(rows):
        bottom = 0
        for k, phase in enumerate(PHASES):
            ax.bar(i, cycles[phase], 0.7, bottom=bottom, color=f"C{k}", label=phase if i == 0 else None)
            bottom += cycles[phase]
        ax.text(i, bottom + 20, f"{block_us:.3f} us", ha="center", fontsize=8)
        labels.append(f"{case}\n{'main' if i < half else 'ping-pong'}")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("consumer cycles per 64-token block (first consumer thread)")
    ax.set_title("Wide launch, consumer ping-pong: H200, 2026-12-02 (label: time per block)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=110)


if __name__ == "__main__":
    main()
