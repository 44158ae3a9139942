"""The FP8 64/8 split model's merge-chain price and 64-row token cost on a grid, each scored by bench/split_regret.py
against the three sets of timed candidates in ../2026-12-02-h200-split-regret/ (CPU; run from the repository root:
``python3 docs/perf/kernels/2026-12-02-fp8-64x8-chain/grid.py``). Prints per setting the 64/8 trees' mean regret on
regret-fp8, regret2-fp8 and heldout-fp8, and tree b's pick (its regret). The planner's constants are set per line and
put back at the end: the first line (chain 1536, token cost 303) is the planner before this folder's change."""

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import split_regret as sr  # noqa: E402

from pat_sglang import planner  # noqa: E402

SETS = ("regret-fp8.json", "regret2-fp8.json", "heldout-fp8.json")
KEY = ("fp8", 128, 8)
FITTED = {16: (40427, 298), 32: (86016, 443), 64: (159173, 303)}  # item_costs.py's fit (thirty-sixth session)


def score(chain: int, token64: int) -> tuple[list[float], tuple]:
    planner.MEASURED_ITEM_COSTS[KEY] = {**FITTED, 64: (FITTED[64][0], token64)}
    planner.MEASURED_CHAIN_COSTS[KEY] = chain
    planner._block_costs.cache_clear()
    means, b = [], None
    for name in SETS:
        saved = json.loads((ROOT / "docs/perf/kernels/2026-12-02-h200-split-regret" / name).read_text())
        records = {k: v for k, v in saved["records"].items() if k.startswith("64/8/128/")}
        scored = sr.regrets(records, saved["sm_count"], saved["kv_dtype"])
        v = np.array([x[0] for x in scored.values() if math.isfinite(x[0])])
        means.append(math.exp(np.log(v).mean()))
        b = scored.get("64/8/128/case:0:b", b)
    return means, b


def main() -> None:
    kept = (dict(planner.MEASURED_ITEM_COSTS[KEY]), planner.MEASURED_CHAIN_COSTS.get(KEY))
    print(f"{'chain B':>8} {'token64':>7}  {'regret':>7} {'regret2':>7} {'heldout':>7}  b's pick (regret)")
    try:
        for chain, token in [(c, round(303 * t)) for c in (1536, 4096, 6144, 8192, 12288, 16384)
                             for t in (1.0, 1.05, 1.1, 1.15, 1.2)]:
            means, b = score(chain, token)
            print(f"{chain:>8} {token:>7}  " + " ".join(f"{m:7.4f}" for m in means) + f"  {b[2]} ({b[0]:.3f})")
    finally:
        planner.MEASURED_ITEM_COSTS[KEY], chain = kept
        if chain is None:
            planner.MEASURED_CHAIN_COSTS.pop(KEY, None)
        else:
            planner.MEASURED_CHAIN_COSTS[KEY] = chain
        planner._block_costs.cache_clear()


if __name__ == "__main__":
    main()
