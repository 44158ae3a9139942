import sys, collections
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr
from pat_sglang import decode_step, forest_edit
from pat_sglang.forest_edit import survivors, max_edit_joiners
import numpy as np

reasons = collections.Counter()
orig_edit = forest_edit.RadixIndex.edit
def edit(self, entries, rows, seq_lens, row_base):
    out = orig_edit(self, entries, rows, seq_lens, row_base)
    if out is None:
        n = len(entries)
        found = survivors(entries, self.entries, np.asarray(rows[:n], dtype=np.int64), self.rows)
        if found is None:
            reasons["survivors None"] += 1
        else:
            old_of, joiners, leavers, ordered = found
            if not ordered: reasons["reordered"] += 1
            elif len(joiners) > max_edit_joiners(n): reasons[f"joiners>{max_edit_joiners(n)}"] += 1
            else:
                from pat_sglang import host_core
                real = host_core.glue_call
                host_core.glue_call = lambda name, *a, **k: NotImplemented if name == "edit_common" else real(name, *a, **k)
                last = {}
                def tracer(frame, event, arg):
                    if frame.f_code.co_filename.endswith("forest_edit.py"):
                        if event == "return" and arg is None:
                            last.setdefault("first", f"{frame.f_code.co_name}:{frame.f_lineno}")
                        return tracer
                    return None
                sys.settrace(tracer)
                try:
                    again = orig_edit(self, entries, rows, seq_lens, row_base)
                finally:
                    sys.settrace(None)
                    host_core.glue_call = real
                reasons[f"refused (joiners {len(joiners)}): python {'also refuses at ' + last.get('first','?') if again is None else 'EDITS'}"] += 1
    return out
forest_edit.RadixIndex.edit = edit
orig_forest = decode_step.DecodeStepPlanner.forest
def forest(self, batch, lengths=None):
    last = self._reuse
    before = self.counters.built - self.counters.edited
    f = orig_forest(self, batch, lengths)
    if self.counters.built - self.counters.edited > before:
        ls = lengths if lengths is not None else self._lengths(batch)
        pb = batch.published
        reasons[f"build: last={'none' if last is None else ('noindex' if last.index is None else 'index')} stale={ls.any_stale} absent={getattr(pb,'absent',None)}"] += 1
    return f
decode_step.DecodeStepPlanner.forest = forest
ctx = sys.argv[1]
hr.main(["--batch", "256", "--context", ctx, "--gate", "--no-progress", "--no-plan-speed"])
for k, v in reasons.most_common(): print(v, k)
