"""PAT against fa3 in this session's two kernel-benchmark runs (both as CUDA-graph replays): per head dim and KV
format, the range of PAT / fa3 over the no-sharing batches (the dispatch gate's ratios) and over the trees."""

import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    for run in ("bench-bf16", "bench-fp8"):
        rows = json.loads((HERE / run / "results.json").read_text())["rows"]
        groups: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        for r in rows:
            if r["fa3"] is None or r["pat_graph"] is None:
                continue
            head_dim = r["case"].split("/")[2]
            kind = "no sharing" if r["case"].startswith("d") and "x" in r["case"].split("/")[0] else "trees"
            groups[(head_dim, kind)].append((r["pat_graph"] / r["fa3"], r["case"]))
        print(f"== {run}: PAT graph / fa3 graph")
        for (head_dim, kind), ratios in sorted(groups.items()):
            lo, hi = min(ratios), max(ratios)
            print(f"{head_dim:>5} {kind:<11} {len(ratios):>2} cases  {lo[0]:.3f} ({lo[1]}) .. {hi[0]:.3f} ({hi[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
