"""Issue 9, fifty-fourth session: how the gated host replay's publishings read their batches (``ChainTable``'s route
counts, ``routes_clause``, as the stats line now prints them) and the slowest step of each point with its route; with
the table reserved for the pool when the backend binds it (15e8a3d) no changed batch should fall back to the Python
read. Run from the repository root with ``bench/host_replay.py``'s arguments:
``.venv/bin/python docs/perf/host/2026-12-04-fiftyfourth-replay-routes.py --batch 64 256 --context 1k 32k --gate``."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

made = []
make_backend = hr.make_backend


def recording(sim, cfg):  # noqa: ANN001, ANN201
    be = make_backend(sim, cfg)
    made.append((cfg, be))
    return be


hr.make_backend = recording
sys.argv = ["host_replay.py", *sys.argv[1:], "--no-plan-speed", "--no-progress"]
try:
    hr.main()
except SystemExit:
    pass
for cfg, be in made:
    print(f"bs {cfg.batch} ctx {cfg.context}: {be.chain_table.routes_clause()}; the slowest step: {be.stats.slowest}")
