"""Issue 9: how many changed steps the dispatch gate planned in full and then declined, without the pre-forest bound
(``planner.moved_bound`` switched off: the gate before the fifty-seventh session), and by how much their plans missed
(2-CPU VM; counts, not timings). Run from the repository root:

    .venv/bin/python docs/perf/host/2026-12-05-fiftyseventh-declined-after-planning.py 256 1k
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang.decode_step import DecodeStepPlanner  # noqa: E402

PLANNED: list[tuple[bool, float]] = []  # per planned changed step: declined after planning, moved / the gate's limit


def hook(sim, backend, view, rec) -> None:  # noqa: ANN001
    if rec is None or rec.forest not in ("edited", "built"):
        return
    stats = backend.planner._last_plan.stats
    limit = (1.0 - backend.gate.for_batch(len(backend.chain_table.batch.rows))) * stats.kv_bytes_per_request
    PLANNED.append((rec.declined, (stats.kv_bytes_planned + stats.partial_bytes) / limit))


if __name__ == "__main__":
    DecodeStepPlanner._moves_over = lambda self, batch, lengths, min_saved: False
    run_point = hr.run_point
    hr.run_point = lambda cfg, specs, on_step=None: run_point(cfg, specs, hook)
    hr.main(["--batch", sys.argv[1], "--context", sys.argv[2], "--gate", "--no-progress", "--no-plan-speed"])
    declined = np.array([d for d, _ in PLANNED])
    ratio = np.array([r for _, r in PLANNED])
    print(f"batch {sys.argv[1]}, context {sys.argv[2]}, bound off: {len(PLANNED)} changed steps planned in full, "
          f"{int(declined.sum())} of them declined after planning; their plans' bytes over the gate's limit: median "
          f"{np.median(ratio[declined]) if declined.any() else float('nan'):.4f}")
