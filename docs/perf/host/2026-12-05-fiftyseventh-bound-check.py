"""Issue 9: at full scale, every batch the dispatch gate's pre-forest bound declines (``planner.moved_bound``,
fifty-seventh session) is one whose plan the gate's own rule declines: the gated Mooncake host replay with each such
step also planned in full (forest from the published paths, ``plan_forest`` without limits: the fewest bytes any plan
of it moves) and checked with ``dispatch.pat_pays``; and the bound never above that plan's bytes. Run from the
repository root:

    .venv/bin/python docs/perf/host/2026-12-05-fiftyseventh-bound-check.py
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang.decode_step import DecodeStepPlanner  # noqa: E402
from pat_sglang.dispatch import pat_pays  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.planner import moved_bound, plan_forest  # noqa: E402

SEEN = {"fired": 0, "checked": 0, "pays": 0, "over": 0, "closest": 0.0}
_moves_over = DecodeStepPlanner._moves_over


def checked(self, batch, lengths, min_saved):  # noqa: ANN001, ANN202
    fired = _moves_over(self, batch, lengths, min_saved)
    if not fired:
        return False
    SEEN["fired"] += 1
    pb = batch.published
    req, key, length = pb.paths
    forest = PrefixForest.from_paths(req, key, length, batch.seq_lens, batch.rows * self.row_stride)
    plan = plan_forest(forest, self.heads, self.device_spec, slot_table=self.slot_table, row_stride=self.row_stride)
    moved = plan.stats.kv_bytes_planned + plan.stats.partial_bytes
    bound = moved_bound(*pb.bound_terms(self.bound_shape), pb.cached, batch.seq_lens, lengths.total,
                        self.bound_shape.token_bytes)
    SEEN["checked"] += 1
    SEEN["pays"] += pat_pays(plan.stats, min_saved)
    SEEN["over"] += bound > moved
    SEEN["closest"] = max(SEEN["closest"], bound / moved)
    return True


DecodeStepPlanner._moves_over = checked

if __name__ == "__main__":
    for batch, context in (("64", "1k"), ("64", "32k"), ("256", "1k"), ("256", "32k")):
        for k in SEEN:
            SEEN[k] = 0
        hr.main(["--batch", batch, "--context", context, "--gate", "--no-progress", "--no-plan-speed"])
        print(f"CHECK bs {batch} ctx {context}: {SEEN['fired']} steps declined by the bound, {SEEN['checked']} planned "
              f"in full: {SEEN['pays']} of those plans pay (must be 0), bound above the plan's bytes {SEEN['over']} "
              f"times (must be 0), largest bound / plan bytes {SEEN['closest']:.4f}")
