"""Issue 9: the sizes a changed step works on at 1k and 32k (fifty-seventh session, 2-CPU VM): per edited step of the
gated Mooncake host replay at batch 256, the forest's nodes and the radix nodes on the published batch's paths
(``PublishedBatch.node_refs``). Run from the repository root:

    .venv/bin/python docs/perf/host/2026-12-05-fiftyseventh-forest-sizes.py 1k
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

SIZES: list[tuple[int, int]] = []


def hook(sim, backend, view, rec) -> None:  # noqa: ANN001
    if rec is not None and rec.forest == "edited":
        refs = backend.chain_table.batch.node_refs()
        SIZES.append((backend.planner._reuse.forest.num_nodes, len(refs) if refs is not None else -1))


if __name__ == "__main__":
    run_point = hr.run_point
    hr.run_point = lambda cfg, specs, on_step=None: run_point(cfg, specs, hook)
    context = sys.argv[1]
    hr.main(["--batch", "256", "--context", context, "--gate", "--no-progress", "--no-plan-speed"])
    a = np.array(SIZES)
    print(f"batch 256, context {context}: {len(a)} edited steps; forest nodes p50 {np.median(a[:, 0]):.0f} "
          f"(max {a[:, 0].max()}), radix nodes on the batch's paths p50 {np.median(a[:, 1]):.0f} (max {a[:, 1].max()})")
