"""Issue 9: which garbage collections land inside PAT's host steps in the gated Mooncake host replay at batch 256 x 1k,
by generation, and how long they take (fifty-sixth session, 2-CPU VM). A ``gc.callbacks`` entry stamps every
collection; PAT's steps are ``publish._publish`` and ``PATAttnBackend._prepare_step`` (the replay's timed region).

    .venv/bin/python docs/perf/host/2026-12-04-fiftysixth-gc-generations.py
"""

import collections
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import backend  # noqa: E402
from pat_sglang.sglang_patches import publish  # noqa: E402

INSIDE = [False]
EVENTS: list[tuple[bool, int, float, int]] = []  # (inside PAT's step, generation, us, objects collected)
STARTED = [0.0]


def stamp(phase: str, info: dict) -> None:
    if phase == "start":
        STARTED[0] = time.perf_counter()
    else:
        EVENTS.append((INSIDE[0], info["generation"], (time.perf_counter() - STARTED[0]) * 1e6, info["collected"]))


def inside(fn):
    def run(*args, **kwargs):
        INSIDE[0] = True
        try:
            return fn(*args, **kwargs)
        finally:
            INSIDE[0] = False

    return run


if __name__ == "__main__":
    gc.callbacks.append(stamp)
    backend.PATAttnBackend._prepare_step = inside(backend.PATAttnBackend._prepare_step)
    publish._publish = inside(publish._publish)
    hr.main("--batch 256 --context 1k --gate --no-plan-speed --no-progress".split())
    print(f"gc thresholds {gc.get_threshold()}; collections in the whole run (fill included): {len(EVENTS)}")
    counts = collections.Counter((i, g) for i, g, _, _ in EVENTS)
    for where in (True, False):
        for gen in (0, 1, 2):
            us = [u for i, g, u, _ in EVENTS if i == where and g == gen]
            if us:
                print(f"  {'inside PAT' if where else 'outside   '} generation {gen}: {counts[(where, gen)]:4d}, "
                      f"median {sorted(us)[len(us) // 2]:7.0f} us, max {max(us):7.0f} us")
