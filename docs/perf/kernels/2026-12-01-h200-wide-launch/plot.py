"""The wide launch against the table's kernel (H200, 2026-12-01): its time over the table's, same call, per fixed split
length (``probe-splits-lag.txt``, the first build; ``probe-stages.txt``, 4 and 2 stages), and its per-block phase
ablations (``ablate.txt``). Run from the repository root: ``python3 <this file>`` (writes ``wide.png`` beside it)."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
_CASE = re.compile(r"^(\w+): table ([\d.]+) us")
_RUN = re.compile(r"^\s+ws(\d+) split (\d+): ([\d.]+) us \(([\d.]+)x table\).*per 64-token block ([\d.]+) us")


def runs(name: str) -> list[tuple[str, int, int, float, float]]:
    """(case, stages, split tokens, time / table, us per 64-token block) of each run in a probe output."""
    out, case = [], ""
    for line in (HERE / name).read_text().splitlines():
        if m := _CASE.match(line):
            case = m.group(1)
        elif m := _RUN.match(line):
            out.append((case, int(m.group(1)), int(m.group(2)), float(m.group(4)), float(m.group(5))))
    return out


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for (src, stages), style in zip([("probe-splits-lag.txt", 4), ("probe-stages.txt", 4), ("probe-stages.txt", 2)],
                                    ["o-", "s--", "^:"], strict=True):
        for case in ("ap128", "bp", "a128", "ap256"):
            pts = sorted((s, r) for c, st, s, r, _ in runs(src) if c == case and st == stages)
            if pts:
                axes[0].plot(*zip(*pts, strict=True), style, label=f"{case}, {stages} stages ({src.split('.')[0]})")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("split length (tokens)")
    axes[0].set_ylabel("wide launch / table kernel, same call")
    axes[0].legend(fontsize=7)
    sections, label = [], "whole loop"  # ablate.txt: per source, its first (ap128) run's time per block
    for line in (HERE / "ablate.txt").read_text().splitlines():
        if line.startswith("== source"):
            source = line.split()[-1]
            label = "whole loop" if source == "kernels/pat_decode.cu" else source.split("_")[-1].removesuffix(".cu")
        elif (m := _RUN.match(line)) and not any(lab == label for lab, _ in sections):
            sections.append((label, float(m.group(5))))
    axes[1].bar([lab for lab, _ in sections], [us for _, us in sections])
    axes[1].set_ylabel("us per 64-token block per CTA (ap128, split 1024)")
    axes[1].set_title("ablations: no load / no compute / no softmax")
    fig.suptitle("H200, 2026-12-01: pat_wide_forward (producer + two consumer warpgroups) against the table's kernel")
    fig.tight_layout()
    fig.savefig(HERE / "wide.png", dpi=110)


if __name__ == "__main__":
    main()
