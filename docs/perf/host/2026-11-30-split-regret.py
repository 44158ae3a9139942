"""The cost model's split search on the steps where it ran, against cheaper choices (CPU analysis).

Runs ``bench/host_replay.py`` (the Mooncake trace through SGLang's RadixCache and the backend's host path) with
``pat_sglang.planner._split_length`` and ``_plan`` wrapped. At every split search made with last step's length on
offer (``plan_forest(previous=...)`` passed one, but the step's planned KV had drifted past ``SPLIT_KEEP_FRACTION``
or the length was no longer a candidate), each choice below is costed by ``_launch_costs`` with every candidate
simulated in full, as a ratio to the search's own choice minus 1 (its predicted regret; negative: cheaper):

* ``keep``: last step's length, no search;
* ``ladder+keep``: the search over the full ladder (``_split_candidates``) with the kept length added;
* ``local W``: a search over the no-split length and the kept length's neighbours on the coarse grid, W steps up and
  down, with its time over the full search's;

and ``keep`` again by why the step searched (its planned KV drifted, or the kept length left the ladder).

Usage: ``.venv/bin/python docs/perf/host/2026-11-30-split-regret.py BATCH [WIDTH ...]`` (context 4096, 600 steps).
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
BATCH = sys.argv[1] if len(sys.argv) > 1 else "64"
WIDTHS = [int(w) for w in sys.argv[2:]] or [2]
sys.argv = ["host_replay.py", "--batch", BATCH, "--context", "4096", "--steps", "600", "--no-plan-speed",
            "--no-progress"]
sys.path.insert(0, str(ROOT))
import pat_sglang.planner as P  # noqa: E402

current: dict[str, object] = {}
rows: list[dict[str, float]] = []
plan_pass = P._plan
split_length = P._split_length


def costs(lengths: list[int], candidates, pack_tokens, pack_blocks, pack_req, pack_req_count, num_requests,
          num_kv_heads, target, head_token_bytes, block_overheads) -> list[float]:
    """Each length's predicted launch time, simulated in full (``_launch_costs`` one candidate at a time)."""
    slots = max(1, target // num_kv_heads)
    splits = P._split_counts(pack_tokens[None, :], np.array(lengths, dtype=np.int64)[:, None])
    full = pack_blocks - 1
    last_size = pack_req_count - full * (block_overheads.shape[0] - 1)
    overheads = (block_overheads[-1], block_overheads[last_size])
    return [float(P._launch_costs(splits[i : i + 1], pack_tokens * head_token_bytes, full, overheads, pack_req,
                                  pack_req_count, num_requests, slots)[0][0]) for i in range(len(lengths))]


def local_candidates(ladder: list[int], keep: int, width: int) -> list[int]:
    """The no-split length (the ladder's first) and ``keep``'s ``width`` coarse-grid neighbours each way."""
    out, up, down = {ladder[0], keep}, keep, keep
    for _ in range(width):
        up, down = P._coarse_up(up), P._coarse(down - 1)
        out |= {up, down}
    return sorted((x for x in out if min(ladder) <= x <= ladder[0]), reverse=True)


def wrapped_plan(*args, **kwargs):
    current["keep"] = args[12] if len(args) > 12 else kwargs.get("keep")
    return plan_pass(*args, **kwargs)


def wrapped_split_length(*args):
    t0 = time.perf_counter()
    chosen = split_length(*args)
    full_s = time.perf_counter() - t0
    keep = current.get("keep")
    if keep is None:
        return chosen
    ladder, rest = args[0], args[1:]
    picks = {"keep": keep[0], "ladder+keep": split_length(sorted(set(ladder) | {keep[0]}, reverse=True), *rest)}
    row: dict[str, float] = {}
    for w in WIDTHS:
        t0 = time.perf_counter()
        picks[f"local {w}"] = split_length(local_candidates(ladder, keep[0], w), *rest)
        row[f"local {w} time"] = (time.perf_counter() - t0) / full_s
    names = list(picks)
    got = costs([chosen, *picks.values()], *args)
    row.update({name: got[i + 1] / got[0] - 1.0 for i, name in enumerate(names)})
    # why this step searched: its planned KV drifted past SPLIT_KEEP_FRACTION, or it did not and the kept length was
    # no longer a candidate (the ladder moved under it)
    planned = int(rest[0] @ rest[1])
    row["drifted"] = float(abs(planned - keep[1]) > P.SPLIT_KEEP_FRACTION * keep[1])
    rows.append(row)
    return chosen


P._plan = wrapped_plan
P._split_length = wrapped_split_length
try:
    runpy.run_path(str(ROOT / "bench" / "host_replay.py"), run_name="__main__")
except SystemExit:
    pass
print(f"batch {BATCH}: {len(rows)} searches with a kept length on offer; predicted regret against the search's choice")
for name in rows[0] if rows else []:
    if name == "drifted":
        continue
    x = np.array([r[name] for r in rows])
    print(f"  {name:>16}: p50 {np.percentile(x, 50):8.4f}  p90 {np.percentile(x, 90):8.4f}  max {x.max():8.4f}  "
          f"min {x.min():8.4f}")
for drifted in (1.0, 0.0):
    x = np.array([r["keep"] for r in rows if r["drifted"] == drifted])
    why = "planned KV drifted past SPLIT_KEEP_FRACTION" if drifted else "within it, kept length off the ladder"
    if x.size:
        print(f"  keep, {why}: {x.size} searches, p50 {np.percentile(x, 50):.4f}  max {x.max():.4f}  "
              f"min {x.min():.4f}")
