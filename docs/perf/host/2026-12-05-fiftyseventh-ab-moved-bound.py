"""Issue 9: the gated host replay with the dispatch gate's pre-forest bound (``planner.moved_bound``, fifty-seventh
session) on and off, in alternating runs of the same command (2-CPU VM). Run from the repository root:

    for r in 1 2; do for side in off on; do
        .venv/bin/python docs/perf/host/2026-12-05-fiftyseventh-ab-moved-bound.py $side; done; done

``off``: ``DecodeStepPlanner._moves_over`` answers False, so the gate declines before the forest on the unique-tokens
bound only (the behaviour before this session) and every other batch it declines after planning it.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang.decode_step import DecodeStepPlanner  # noqa: E402

if __name__ == "__main__":
    side = sys.argv[1]
    if side == "off":
        DecodeStepPlanner._moves_over = lambda self, batch, lengths, min_saved: False
    elif side != "on":
        raise SystemExit("usage: ... on|off")
    print(f"# side: moved_bound {side}")
    hr.main(["--batch", "64", "256", "--context", "1k", "32k", "--gate", "--phases", "--no-progress",
             "--no-plan-speed"])
