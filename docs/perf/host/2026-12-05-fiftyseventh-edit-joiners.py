"""Issue 9: what a forest edit costs by its number of joiners, against a build from the paths (fifty-seventh session,
2-CPU VM). The gated Mooncake host replay with the edit's joiner limit lifted (``EDIT_JOINERS_PER_REQUEST`` = the
first argument; 1: every edit the structure allows), each changed step's forest time (``StepPhases.forest_s``) by how
it came about and how many joiners the edit had (``forest_edit.survivors``). Run from the repository root:

    .venv/bin/python docs/perf/host/2026-12-05-fiftyseventh-edit-joiners.py 1.0 256 1k
"""

import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import forest_edit  # noqa: E402

LAST: dict[str, int | None] = {}
ROWS: list[tuple[str, int | None, float]] = []
_survivors = forest_edit.survivors


def counted(*args):  # noqa: ANN002, ANN202
    found = _survivors(*args)
    LAST["joiners"] = None if found is None else len(found[1])
    return found


def hook(sim, backend, view, rec) -> None:  # noqa: ANN001
    if rec is not None and rec.forest in ("edited", "built"):
        ROWS.append((rec.forest, LAST.get("joiners"), rec.forest_us))
    LAST.clear()


if __name__ == "__main__":
    forest_edit.EDIT_JOINERS_PER_REQUEST = float(sys.argv[1])
    forest_edit.survivors = counted
    run_point = hr.run_point
    hr.run_point = lambda cfg, specs, on_step=None: run_point(cfg, specs, hook)
    hr.main(["--batch", sys.argv[2], "--context", sys.argv[3], "--gate", "--no-progress", "--no-plan-speed"])
    print(f"# EDIT_JOINERS_PER_REQUEST {sys.argv[1]}, batch {sys.argv[2]}, context {sys.argv[3]}")
    groups = collections.defaultdict(list)
    for forest, joiners, us in ROWS:
        span = ("?" if joiners is None else "0-2" if joiners <= 2 else "3-8" if joiners <= 8 else "9-16"
                if joiners <= 16 else "17-32" if joiners <= 32 else "33-64" if joiners <= 64 else ">64")
        groups[(forest, span)].append(us)
    print("forest  joiners  steps  forest_us p50    max")
    for (forest, span), us in sorted(groups.items()):
        print(f"{forest:7s} {span:>7s} {len(us):6d} {np.median(us):14.1f} {max(us):6.1f}")
    print("each step of more than 16 joiners (forest, joiners, forest us):")
    for forest, joiners, us in ROWS:
        if joiners is not None and joiners > 16:
            print(f"  {forest} {joiners} {us:.1f}")
