"""Issue 9: the plans' sizes on the host replay at one context (forest nodes, items, partial slots, entries, split
length per planned step; median and p90). Run from the repository root with the project's venv:
``python docs/perf/host/2026-12-04-fortyninth-plan-sizes.py 1k`` (or ``32k``)."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import decode_step  # noqa: E402

sizes = []
plan_forest = decode_step.plan_forest


def recording(forest, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    plan = plan_forest(forest, *args, **kwargs)
    sizes.append((forest.tok.shape[0], plan.num_items, plan.num_partials, int(plan.item_req.shape[0]),
                  plan.split_tokens))
    return plan


decode_step.plan_forest = recording
hr.main(["--batch", "256", "--context", sys.argv[1], "--gate", "--no-plan-speed", "--no-progress"])
table = np.array(sizes)
for name, q in (("p50", 50), ("p90", 90)):
    nodes, items, partials, entries, split = np.percentile(table, q, axis=0)
    print(f"{sys.argv[1]} {name}: nodes {nodes:.0f}, items {items:.0f}, partials {partials:.0f}, "
          f"entries {entries:.0f}, split length {split:.0f} tokens ({len(sizes)} plans)")
