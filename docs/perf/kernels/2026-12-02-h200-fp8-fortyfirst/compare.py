"""Each FP8 case's PAT graph time and PAT / FlashInfer-best here beside the thirty-seventh session's run (same kernel
source; this run has the split model's FP8 64/8 chain price and token cost): ``python3 compare.py > compare.txt``.
Another pair of runs: ``python3 compare.py NOW/results.md BEFORE/results.md``."""

import sys
from pathlib import Path

HERE = Path(__file__).parent
BEFORE = HERE.parent / "2026-12-02-h200-bench-thirtyseventh" / "fp8" / "results.md"


def rows(path: Path) -> dict[str, tuple[float, float]]:
    """case -> (PATgraph us, FIbest(g) us) from a results.md table."""
    lines = [line.split("|")[1:-1] for line in path.read_text().splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0]]
    pat, fi = head.index("PATgraph"), head.index("FIbest(g)")
    return {c[0].strip(): (float(c[pat]), float(c[fi])) for c in lines[2:] if c[pat].strip() not in ("-", "")}


now_md, before_md = (Path(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (HERE / "results.md", BEFORE)
now, before = rows(now_md), rows(before_md)
print(f"{'case':<36} {'PAT us before':>13} {'now':>7} {'now/before':>10} {'PAT/FI before':>13} {'now':>6}")
for case, (pat, fi) in now.items():
    if case in before:
        p0, f0 = before[case]
        print(f"{case:<36} {p0:13.1f} {pat:7.1f} {pat / p0:10.3f} {p0 / f0:13.3f} {pat / fi:6.3f}")
