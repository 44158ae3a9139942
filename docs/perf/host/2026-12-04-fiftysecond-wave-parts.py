"""Issue 9, fifty-second session: the publisher's parts per joining request in the host replay's waves (steps where 20
or more requests joined), by wrapping the chain table's functions with timers. Arguments as bench/host_replay.py's;
run from the repository root with the project's venv (``ROOT``: another checkout to time instead of this one):

    .venv/bin/python docs/perf/host/2026-12-04-fiftysecond-wave-parts.py --batch 256 --context 1k --gate \
        --no-plan-speed --no-progress --no-stagger
"""
import gc
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(os.environ.get("ROOT", Path(__file__).resolve().parents[3]))
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr
from pat_sglang.sglang_patches import chain_table as ct, publish as pub
cur = {}
parts = defaultdict(float)
waves = []
def wrap(owner, name, label=None):
    f = getattr(owner, name)
    label = label or name
    def w(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        cur[label] = cur.get(label, 0.0) + time.perf_counter() - t
        return r
    setattr(owner, name, w)
for o, n in ((ct.ChainTable, "_read_rows"), (ct.ChainTable, "_read_wave"), (ct, "wave_signatures"), (ct, "make_entries"), (ct, "new_entries"),
             (ct.ChainTable, "_set_entries"), (ct.ChainTable, "_tally_of"), (ct.ChainTable, "_pick"), (ct, "_requests_at"),
             (ct, "_rows_to_read"), (ct.ChainTable, "retire"), (ct, "_rows_snapshot"), (ct._RowPaths, "set_many"), (ct.ChainTable, "_mark_unread"),
             (ct._Tally, "rebuild"), (ct._RowPaths, "paths"), (ct.ChainTable, "_row_room")):
    wrap(o, n)
orig = pub._publish
def wrapped(batch, table):
    cur.clear()
    prev = getattr(table.batch, "rids", None)
    g0 = gc.get_count()
    t = time.perf_counter()
    r = orig(batch, table)
    dt = time.perf_counter() - t
    new = len({q.rid for q in batch.reqs} - set(prev)) if prev is not None else -1
    if new >= 20:
        waves.append((dt, new, dict(cur)))
    return r
pub._publish = wrapped
sys.argv = ["x"] + sys.argv[1:]
hr.main()
print("waves", len(waves))
tot = defaultdict(float); J = 0; T = 0.0
for dt, new, c in waves:
    J += new; T += dt
    for k, v in c.items(): tot[k] += v
    print(f"  {new:4d} joiners {dt*1e6:8.1f} us  " + " ".join(f"{k}={v*1e6:.0f}" for k, v in sorted(c.items(), key=lambda x: -x[1])[:6]))
print(f"total {T*1e6/J:.2f} us per joiner")
for k, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"  {k:16s} {v*1e6/J:6.2f} us per joiner")
