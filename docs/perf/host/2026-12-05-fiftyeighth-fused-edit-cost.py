import sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import numpy as np
import host_replay as hr
from pat_sglang import forest_edit, host_core, decode_step
glue = host_core.loaded_glue()
real_common = glue.edit_common
last = {}
def counted(*a):
    got = real_common(*a)
    last["py"] = got is NotImplemented
    return got
glue.edit_common = counted
real_edit = forest_edit.RadixIndex.edit
times = {"python": [], "compiled": []}
def edit(self, *a):
    last["py"] = False
    t = time.perf_counter(); out = real_edit(self, *a); dt = (time.perf_counter() - t) * 1e6
    if out is not None:
        times["python" if last["py"] else "compiled"].append(dt)
    return out
forest_edit.RadixIndex.edit = edit
real_build = decode_step.DecodeStepPlanner._build
bt = []
def build(self, *a, **k):
    t = time.perf_counter(); out = real_build(self, *a, **k); bt.append((time.perf_counter() - t) * 1e6); return out
decode_step.DecodeStepPlanner._build = build
hr.main(["--batch", "256", "--context", sys.argv[1], "--gate", "--no-progress", "--no-plan-speed"])
for k, v in times.items():
    if v: print(k, len(v), "edit us p50 %.1f max %.1f" % (np.median(v), max(v)))
print("builds", len(bt), "us p50 %.1f max %.1f" % (np.median(bt), max(bt)))
