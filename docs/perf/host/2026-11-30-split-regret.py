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

With ``passes`` instead of widths: every full planning pass (searched or not), the predicted launch time of the length
the planner used against the best of the step's ladder, that length and last step's; and how many passes searched.
Run it at HEAD and with ``2026-11-30-split-policy-c.diff`` applied (policy C: last step's length joins a search's
candidates, and is kept while the planned KV stays within ``SPLIT_KEEP_FRACTION`` if it lies within the ladder's
range rather than on it) to compare the two policies on the same batches.

Usage: ``.venv/bin/python docs/perf/host/2026-11-30-split-regret.py BATCH [WIDTH ... | passes] [--context C]``
(context 4096 by default, 600 steps).
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
ARGS = sys.argv[1:]
CONTEXT = ARGS[ARGS.index("--context") + 1] if "--context" in ARGS else "4096"
ARGS = [a for i, a in enumerate(ARGS) if a != "--context" and (i == 0 or ARGS[i - 1] != "--context")]
BATCH = ARGS[0] if ARGS else "64"
PASSES = "passes" in ARGS[1:]
WIDTHS = [int(w) for w in ARGS[1:] if w != "passes"] or [2]
sys.argv = ["host_replay.py", "--batch", BATCH, "--context", CONTEXT, "--steps", "600", "--no-plan-speed",
            "--no-progress"]
sys.path.insert(0, str(ROOT))
import pat_sglang.planner as P  # noqa: E402

current: dict[str, object] = {}
rows: list[dict[str, float]] = []
passes: list[tuple[float, bool]] = []
plan_pass = P._plan
split_length = P._split_length


def costs(lengths: list[int], candidates, pack_tokens, pack_blocks, pack_req, pack_req_count, num_requests,
          num_kv_heads, target, head_token_bytes, block_overheads) -> list[float]:
    """Each length's predicted launch time, simulated in full (``_launch_costs`` one candidate at a time); the other
    arguments are ``_split_length``'s."""
    slots = max(1, target // num_kv_heads)
    splits = P._split_counts(pack_tokens[None, :], np.array(lengths, dtype=np.int64)[:, None])
    full = pack_blocks - 1
    last_size = pack_req_count - full * (block_overheads.shape[0] - 1)
    overheads = (block_overheads[-1], block_overheads[last_size])
    return [float(P._launch_costs(splits[i : i + 1], pack_tokens * head_token_bytes, full, overheads, pack_req,
                                  pack_req_count, num_requests, slots)[0][0]) for i in range(len(lengths))]


def search_args(plan) -> tuple:
    """``_split_length``'s arguments after its candidates for the pass that made ``plan``, from its re-make record."""
    rg = plan.regrow
    heads, device, tiles = rg.args[0], rg.args[1], rg.args[2]
    group, num_kv_heads, tok_bytes, _ = P._head_numbers(heads)
    reqs_per_block = max(1, tiles.max_m // group)
    return (rg.pack_tokens, rg.pack_blocks, rg.pack_args[5], np.diff(rg.pack_args[4]), plan.num_requests,
            num_kv_heads, P.target_ctas(device, tiles, heads), tok_bytes // num_kv_heads,
            P._block_overheads(tiles.tile_ms, group, reqs_per_block))


def local_candidates(ladder: list[int], keep: int, width: int) -> list[int]:
    """The no-split length (the ladder's first) and ``keep``'s ``width`` coarse-grid neighbours each way."""
    out, up, down = {ladder[0], keep}, keep, keep
    for _ in range(width):
        up, down = P._coarse_up(up), P._coarse(down - 1)
        out |= {up, down}
    return sorted((x for x in out if min(ladder) <= x <= ladder[0]), reverse=True)


def wrapped_plan(*args, **kwargs):
    keep = current["keep"] = args[12] if len(args) > 12 else kwargs.get("keep")
    plan = plan_pass(*args, **kwargs)
    given = args[11] if len(args) > 11 else kwargs.get("split_tokens")
    if PASSES and plan is not None and given is None and plan.regrow is not None and plan.regrow.args:
        rest = search_args(plan)
        rg = plan.regrow
        ladder = P._split_candidates(int(rg.pack_tokens.max()), int(rg.pack_tokens @ rg.pack_blocks), rest[5],
                                     rest[6], rg.args[3])
        lengths = sorted({*ladder, plan.split_tokens, *([keep[0]] if keep else [])}, reverse=True)
        got = np.array(costs(lengths, None, *rest))
        passes.append((got[lengths.index(plan.split_tokens)] / got.min() - 1.0, plan.split_searched))
    return plan


def wrapped_split_length(*args):
    t0 = time.perf_counter()
    chosen = split_length(*args)
    full_s = time.perf_counter() - t0
    keep = current.get("keep")
    if keep is None or PASSES:
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
if PASSES:
    regret = np.array([p[0] for p in passes])
    print(f"batch {BATCH} context {CONTEXT}: {len(passes)} planning passes, {sum(p[1] for p in passes)} searched; "
          f"regret of the used length against the best of ladder, used and kept: mean {regret.mean():.4f}, "
          f"p50 {np.percentile(regret, 50):.4f}, p90 {np.percentile(regret, 90):.4f}, max {regret.max():.4f}")
    sys.exit(0)
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
