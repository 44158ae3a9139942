"""The per-CTA stamps of `ncu_probe.py --timing --dump` read as CTAs in flight over time: the kernel's span, the
CTA-time over the busy concurrency (the span of a perfect packing), and when the concurrency fell below 90/50/25/10%
of it; then the last CTAs to finish. Usage: python3 tail.py phases-c.npz [...]"""

import sys

import numpy as np


def analyse(path: str) -> None:
    d = np.load(path)
    s = d["stamps"].astype(np.float64)
    s = s - s[:, 0].min()
    s = s * (1e-3 if s.max() > 1e4 else 1.0)  # ns -> us
    start, end, tm, kv = s[:, 0], s[:, 3], d["tile_m"], d["kv"]
    span = end.max()
    grid = np.arange(0.0, span, 1.0)
    inflight = np.array([((start <= t) & (end > t)).sum() for t in grid])
    busy = np.median(inflight[(grid > 20) & (grid < span * 0.6)])
    work = (end - start).sum()
    print(f"{path}: span {span:.1f} us, {len(start)} CTAs, {busy:.0f} in flight while busy, CTA-time / that "
          f"{work / busy:.1f} us, last CTA start {start.max():.1f} us")
    for q in (0.9, 0.5, 0.25, 0.1):
        print(f"    in flight >= {q:.0%} of busy until {grid[np.where(inflight >= q * busy)[0].max()]:.1f} us")
    for i in np.argsort(end)[::-1][:4]:
        print(f"    last: tile_m {tm[i]} kv {kv[i]} start {start[i]:.1f} run {end[i] - start[i]:.1f} end {end[i]:.1f}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        analyse(p)
