"""Issue 9, fifty-third session: the compiled changed-batch read and tally move (``kernels/host_batch.c``
``pat_publish_read``, ``pat_tally_changes``) against their Python versions in ONE gated Mooncake host replay, each
decode step's mode drawn at random (the compiled pieces answer NotImplemented in "python" steps, so the Python path
runs), so the VM's drift between runs (5-50%) falls on both sides alike. Prints per (batch, context) point and mode the
medians over the timed steps whose batch changed (requests joined or left): the publishing part of the host time and
the whole step. Run from the repository root: ``.venv/bin/python docs/perf/host/2026-12-04-fiftythird-read-ab.py``."""

import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import host_core  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    mode = {"now": "compiled"}
    for name in ("publish_read", "tally_changes"):
        call = getattr(core, name)

        def gated(*args: object, _call: object = call) -> object:
            return NotImplemented if mode["now"] == "python" else _call(*args)  # type: ignore[operator]
        setattr(core, name, gated)
    specs = hr.load_mooncake(hr.DEFAULT_TRACE)
    rng = random.Random(0)
    print("batch    ctx mode      changed_steps  publish_p50_us  step_p50_us  publish_p90_us  step_p90_us")
    for batch, context in ((256, 1024), (256, 32768), (64, 32768)):
        got: dict[str, list[tuple[float, float]]] = {"compiled": [], "python": []}

        def on_step(sim: object, be: object, view: object, rec: hr.StepRecord | None,
                    _got: dict[str, list[tuple[float, float]]] = got) -> None:
            if rec is not None and rec.joined + rec.left > 0:
                _got[mode["now"]].append((rec.publish_us, rec.host_us))
            mode["now"] = rng.choice(("compiled", "python"))

        cfg = hr.PointConfig(batch=batch, context=context, gate=True, steps=4000)
        hr.run_point(cfg, specs, on_step)
        mode["now"] = "compiled"
        for m, rows in got.items():
            a = np.array(rows)
            p50, p90 = np.median(a, axis=0), np.percentile(a, 90, axis=0)
            print(f"{batch:>5} {context:>6} {m:<9} {len(rows):>13}  {p50[0]:>14.1f}  {p50[1]:>11.1f}  "
                  f"{p90[0]:>14.1f}  {p90[1]:>11.1f}")
    print(f"{hr.git_state()}")


if __name__ == "__main__":
    main()
