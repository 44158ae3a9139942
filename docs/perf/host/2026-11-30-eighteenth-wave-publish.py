"""Publishing a wave of joiners, timed per ``publish_decode_batch`` call with the collector off (eighteenth session).

The gsp workload at batch 256 with ``--no-stagger``: the whole batch is replaced at once (256 joiners), as a closed loop
of equal output lengths does. Prints every call over 1 ms and the p50 of all. Run from the repository root:

    .venv/bin/python docs/perf/host/2026-11-30-eighteenth-wave-publish.py
"""

from __future__ import annotations

import gc
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, ROOT + "/bench", ROOT + "/tests"]

import host_replay as hr  # noqa: E402
import torch  # noqa: E402

from pat_sglang.sglang_patches import apply_patches  # noqa: E402
from pat_sglang.sglang_patches import publish as pub  # noqa: E402


def main() -> None:
    apply_patches()
    torch.set_num_threads(1)
    specs = hr.gsp_specs(None)
    cfg = hr.PointConfig(batch=256, context=specs[0].input_len, steps=400, progress=False, gate=False,
                         stagger_fill=False, time_scale=1.0)
    original = pub._publish
    calls: list[tuple[float, int]] = []

    def timed(batch: object, table: object) -> None:
        enabled = gc.isenabled()
        gc.disable()
        start = time.perf_counter()
        original(batch, table)
        calls.append((time.perf_counter() - start, len(batch.reqs)))
        if enabled:
            gc.enable()

    pub._publish = timed
    hr.run_point(cfg, specs)
    for i, (seconds, n) in enumerate(calls):
        if seconds > 1e-3:
            print(f"call {i} of {len(calls)}: batch {n}, {seconds * 1e3:.2f} ms")
    ordered = sorted(s for s, _ in calls)
    print(f"p50 {ordered[len(ordered) // 2] * 1e6:.1f} us")


if __name__ == "__main__":
    main()
