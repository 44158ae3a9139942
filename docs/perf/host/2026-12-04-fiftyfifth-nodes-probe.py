"""Issue 9, fifty-fifth session: how many radix nodes a published path has per request, at the replay's contexts.
Wraps ``DecodeStepPlanner.plan`` to count the published paths' nodes per real request of each planned step of the
gated Mooncake host replay and prints their mean and median. Run from the repository root with the project's venv:

    .venv/bin/python docs/perf/host/2026-12-04-fiftyfifth-nodes-probe.py --batch 256 --context 1k --gate \
        --no-plan-speed --no-progress
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import decode_step  # noqa: E402

PLAN = decode_step.DecodeStepPlanner.plan
NODES_PER_REQUEST: list[float] = []


def counted_plan(self, batch, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    pb = batch.published
    if pb is not None and pb.entries is not None and batch.n_real:
        _, key, _ = pb.paths
        NODES_PER_REQUEST.append(len(key) / batch.n_real)
    return PLAN(self, batch, *args, **kwargs)


if __name__ == "__main__":
    decode_step.DecodeStepPlanner.plan = counted_plan
    hr.main(sys.argv[1:])
    print(f"radix nodes per published path: mean {np.mean(NODES_PER_REQUEST):.2f}, median "
          f"{np.median(NODES_PER_REQUEST):.2f}, over {len(NODES_PER_REQUEST)} steps")
