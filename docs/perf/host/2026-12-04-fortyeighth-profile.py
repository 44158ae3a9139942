"""Issue 9's changed steps at batch 256 on the host replay: the plan load's parts (``load``), or the Python function
calls per step under cProfile (``calls``). Run from the repository root with the project's venv."""

import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import backend, kernels  # noqa: E402

ARGS = ["--batch", "256", "--context", "1k", "--no-plan-speed", "--no-progress"]


def timed(owner: object, name: str, into: list[float], new_plan_only: bool = False) -> None:
    """Wrap ``owner.name`` so that each call's time (us) lands in ``into``."""
    original = getattr(owner, name)

    def wrapper(*args):  # noqa: ANN002, ANN202
        skip = new_plan_only and args[1] is args[0].plan  # a kept plan's load returns at once
        t0 = time.perf_counter()
        result = original(*args)
        if not skip:
            into.append((time.perf_counter() - t0) * 1e6)
        return result

    setattr(owner, name, wrapper)


def load_parts() -> None:
    parts: dict[str, list[float]] = {"load (new plan)": [], "_stage_plan": [], "_check": []}
    timed(kernels.StaticPlanBuffers, "load", parts["load (new plan)"], new_plan_only=True)
    timed(kernels, "_stage_plan", parts["_stage_plan"])
    timed(kernels.StaticPlanBuffers, "_check", parts["_check"])
    hr.main(ARGS)
    for name, us in parts.items():
        print(f"{name}: {len(us)} calls, p50 {np.percentile(us, 50):.1f} us, p90 {np.percentile(us, 90):.1f} us")


def calls() -> None:
    prof = cProfile.Profile()
    steps = [0]
    for owner, name in ((hr, "publish_decode_batch"), (backend.PATAttnBackend, "init_forward_metadata_out_graph")):
        original = getattr(owner, name)

        def wrapper(*args, _original=original):  # noqa: ANN002, ANN202
            prof.enable()
            try:
                return _original(*args)
            finally:
                prof.disable()

        setattr(owner, name, wrapper)
    real = hr.publish_decode_batch

    def counting(*args):  # noqa: ANN002, ANN202
        steps[0] += 1
        return real(*args)

    hr.publish_decode_batch = counting
    hr.main(ARGS)
    stats = pstats.Stats(prof)
    print(f"{stats.total_calls} function calls over {steps[0]} decode steps: {stats.total_calls / steps[0]:.0f} a step")


if __name__ == "__main__":
    {"load": load_parts, "calls": calls}[sys.argv[1]]()
