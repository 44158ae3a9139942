"""The instructions where a kernel's warps stall most, from Nsight Compute's per-instruction source page
(``ncu -i REPORT --page source --print-source sass --csv > FILE``): each line the share of all stall samples, the
SASS, and its three largest stall reasons. Used to read where pat_pack_forward's loop waits
(docs/perf/kernels/NOTES.md)."""

from __future__ import annotations

import argparse
import csv


def top_stalls(path: str, n: int) -> list[str]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    start = next(i for i, r in enumerate(rows) if "Source" in r)  # after the kernel-name line
    header, data = rows[start], rows[start + 1:]
    samples = header.index("Warp Stall Sampling (All Samples)")
    source = header.index("Source")
    reasons = [i for i, c in enumerate(header) if c.startswith("stall_") and "Not Issued" not in c]
    counted = [(int(r[samples]), r) for r in data if r[samples].isdigit()]
    total = sum(c for c, _ in counted) or 1
    lines = [f"{path}: {total} samples over {len(counted)} instructions"]
    for count, r in sorted(counted, key=lambda x: -x[0])[:n]:
        why = sorted(((int(r[i]), header[i][6:]) for i in reasons if r[i].isdigit() and int(r[i])), reverse=True)[:3]
        lines.append(f"{100 * count / total:5.1f}% {r[0][-5:]} {r[source].strip()[:56]:56s} "
                     + " ".join(f"{name} {c}" for c, name in why))
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("-n", type=int, default=12)
    args = ap.parse_args(argv)
    for path in args.csv:
        print("\n".join(top_stalls(path, args.n)))


if __name__ == "__main__":
    main()
