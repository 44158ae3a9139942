"""Which decode batches PAT serves, and which it hands to the delegate backend.

Role in pack-forward-merge: the gate in front of *forward*. Packing pays only when it saves enough KV bytes: on a
batch that shares little, PAT's forward reads as many bytes as the delegate's decode kernel, and on the H200 it reads
them more slowly (measured against fa3 in the same runs, ``docs/perf/dispatch/README.md``): such a batch is served
faster by the delegate, which the backend already holds for prefill. The rule reads the plan's own byte counts
(``PlanStats``): PAT serves a batch when the bytes it moves (KV read by its items plus the merge's partial rows) are at
most ``1 - min_saved_fraction`` of what per-request decode reads.

``min_saved_fraction`` follows from how much slower PAT's forward is than the delegate's decode on the same bytes
(``NO_SHARING_TIME_RATIO``, by KV element size), with a margin so that a batch near the break-even point goes to the
delegate: ``1 - 1 / (ratio * margin)``. ``PAT_SGLANG_MIN_SAVED_FRACTION`` overrides it (0 makes PAT serve every decode
batch it can plan, for benchmarks of PAT's own kernels).
"""

from __future__ import annotations

import os

from .config import HeadConfig
from .planner import PlanStats

MIN_SAVED_FRACTION_ENV = "PAT_SGLANG_MIN_SAVED_FRACTION"

# PAT's decode time over fa3's on batches without sharing, attention alone (H200, 2026-11-29): bf16/fp16 pools from the
# kernel benchmark (1.08x on the Mooncake head, 1.12x on 64 x 4096 tokens) and the serving A/B (decode step 1.07x, of
# which attention is about 60%: 1.12x); FP8 pools from the FP8 serving A/B (decode step 1.32x: about 1.5x on attention).
NO_SHARING_TIME_RATIO_16BIT = 1.12
NO_SHARING_TIME_RATIO_FP8 = 1.55
# Batches that would gain less than this factor go to the delegate: the ratios above vary by shape, by a few percent.
DISPATCH_MARGIN = 1.05


def default_min_saved_fraction(heads: HeadConfig) -> float:
    """The fraction of per-request KV bytes a plan must save for PAT to serve its batch, for this KV format."""
    ratio = NO_SHARING_TIME_RATIO_FP8 if heads.kv_fp8 else NO_SHARING_TIME_RATIO_16BIT
    return 1.0 - 1.0 / (ratio * DISPATCH_MARGIN)


def configured_min_saved_fraction(heads: HeadConfig) -> float:
    """``PAT_SGLANG_MIN_SAVED_FRACTION`` if set (a number in [0, 1)), else the default for ``heads``."""
    raw = os.environ.get(MIN_SAVED_FRACTION_ENV)
    if raw is None or raw.strip() == "":
        return default_min_saved_fraction(heads)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{MIN_SAVED_FRACTION_ENV}={raw!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{MIN_SAVED_FRACTION_ENV}={raw!r}: the fraction must be in [0, 1)")
    return value


def pat_pays(stats: PlanStats | None, min_saved: float) -> bool:
    """Whether a plan with these ``stats`` saves at least ``min_saved`` of per-request decode's KV bytes (merge traffic
    counted against it). A plan without stats, or ``min_saved`` 0, is always served by PAT."""
    if stats is None or min_saved <= 0.0:
        return True
    moved = stats.kv_bytes_planned + stats.partial_bytes
    return moved <= (1.0 - min_saved) * stats.kv_bytes_per_request
