"""What keeping last step's split length would cost on the steps where PAT's cost model searched (CPU analysis).

Runs ``bench/host_replay.py`` (the Mooncake trace through SGLang's RadixCache and the backend's host path) with
``pat_sglang.planner._split_length`` and ``_plan`` wrapped: at every split search made with a kept length on offer
(``plan_forest(previous=...)`` passed one, but the step's planned KV had drifted past ``SPLIT_KEEP_FRACTION`` or the
length was no longer a candidate), both the chosen and the kept length are costed by ``_launch_costs`` with every
candidate simulated in full, and the ratio (kept / chosen - 1) is the predicted regret of not searching. A negative
ratio means the kept length, outside the step's candidates, was predicted cheaper than every candidate.

Usage: ``.venv/bin/python docs/perf/host/2026-11-30-split-regret.py 64`` (the batch; context 4096, 600 steps).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
batch = sys.argv[1] if len(sys.argv) > 1 else "64"
sys.argv = ["host_replay.py", "--batch", batch, "--context", "4096", "--steps", "600", "--no-plan-speed",
            "--no-progress"]
sys.path.insert(0, str(ROOT))
import pat_sglang.planner as P  # noqa: E402

current: dict[str, object] = {}
records: list[tuple[int, int, float]] = []
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


def wrapped_plan(*args, **kwargs):
    current["keep"] = args[12] if len(args) > 12 else kwargs.get("keep")
    return plan_pass(*args, **kwargs)


def wrapped_split_length(*args):
    chosen = split_length(*args)
    keep = current.get("keep")
    if keep is not None:
        best, kept = costs([chosen, keep[0]], *args)
        records.append((chosen, keep[0], kept / best - 1.0))
    return chosen


P._plan = wrapped_plan
P._split_length = wrapped_split_length
try:
    runpy.run_path(str(ROOT / "bench" / "host_replay.py"), run_name="__main__")
except SystemExit:
    pass
regret = np.array([r[2] for r in records])
print(f"batch {batch}: {len(records)} searches with a kept length on offer; predicted regret of keeping it "
      f"(kept / chosen - 1): p50 {np.percentile(regret, 50):.4f}, p90 {np.percentile(regret, 90):.4f}, "
      f"max {regret.max():.4f}, min {regret.min():.4f}")
print("first 10 (chosen, kept, regret):", [(c, k, round(r, 4)) for c, k, r in records[:10]])
