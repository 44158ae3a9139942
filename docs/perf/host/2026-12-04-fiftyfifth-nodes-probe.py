import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import numpy as np
import host_replay as hr
from pat_sglang import decode_step
orig = decode_step.DecodeStepPlanner.plan
seen = []
def plan(self, batch, *a, **k):
    pb = batch.published
    if pb is not None and batch.n_real:
        try:
            req, key, length = pb.paths
            seen.append((len(key) / batch.n_real))
        except Exception:
            pass
    return orig(self, batch, *a, **k)
decode_step.DecodeStepPlanner.plan = plan
hr.main(sys.argv[1:])
print("radix nodes per published path: mean", np.mean(seen), "p50", np.median(seen), "steps", len(seen))
