"""Which decode batches PAT serves, and which it hands to the delegate backend.

Role in pack-forward-merge: the gate in front of *forward*. Packing pays only when it saves enough KV bytes: on a
batch that shares little, PAT's forward reads as many bytes as the delegate's decode kernel, and on the H200 it reads
them more slowly (measured against fa3 in the same runs, ``docs/perf/dispatch/README.md``): such a batch is served
faster by the delegate, which the backend already holds for prefill. The rule reads the plan's own byte counts
(``PlanStats``): PAT serves a batch when the bytes it moves (KV read by its items plus the merge's partial rows) are at
most ``1 - min_saved_fraction`` of what per-request decode reads.

``min_saved_fraction`` follows from how much slower PAT's forward is than the delegate's decode on the same bytes
(``NO_SHARING_TIME_RATIOS``, by delegate and KV element size; ``HEAD_DIM_TIME_RATIOS`` and
``HEAD_DIM_FP8_TIME_RATIOS`` at head dims other than 128; ``SMALL_BATCH_TIME_RATIOS`` for batches of a few requests),
with a margin so that a batch near the break-even point goes to the delegate: ``1 - 1 / (ratio * margin)``, or 0 where
PAT is the faster of the two even without sharing. A ``DispatchGate`` holds the fraction of each batch size.
``PAT_SGLANG_MIN_SAVED_FRACTION`` overrides it with one fraction for every size (0 makes PAT serve every decode batch it
can plan, for benchmarks of PAT's own kernels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import HeadConfig
from .planner import PlanStats

MIN_SAVED_FRACTION_ENV = "PAT_SGLANG_MIN_SAVED_FRACTION"

# PAT's decode time over the delegate's on batches without sharing, attention alone, as (16-bit KV, FP8 KV):
# * fa3 (H200), 2026-12-02, the kernel benchmark's no-sharing batches at head dim 128 (long contexts and 64/8, 32/32
#   heads included), PAT and fa3 both as CUDA-graph replays (docs/perf/kernels/2026-12-02-h200-fa3-thirtyeighth/):
#   16-bit 0.93-1.00x, the larger taken, which the Mooncake serving point with PAT on every decode batch confirms
#   (decode step 0.974x fa3's at batch 64, docs/perf/ab/2026-12-02-h200-8b-fa3-thirtyeighth/; was 1.04 from the
#   2026-11-30 serving point, 1.035x at batch 25); FP8 0.63-0.82x (was 1.09 from the 2026-11-29 serving A/B with
#   32-token FP8 tiles);
# * flashinfer (H200): 16-bit 2026-11-30, the kernel benchmark's private rows at head dim 128 with the whole-sector
#   loader, eager PAT against eager FlashInfer: 0.95-1.01x (was 1.06 from 2026-11-28/29); FP8 2026-12-02, both as
#   CUDA-graph replays, against the tensor-core FP8 decode SGLang's flashinfer backend runs for FP8 pools at every
#   group size (``should_use_tensor_core``): private rows 0.61-0.66x at 32/8, 64/8 and 32/32 heads
#   (docs/perf/kernels/2026-12-02-h200-bench-thirtyseventh/fp8/; was 1.01 from the fp16-MMA FP8 build of 2026-12-01,
#   MHA); served with PAT on every FP8 Mooncake step on 2026-12-01: decode step 0.771x FlashInfer's;
# * triton (H100, 2026-11-24 kernel benchmark): SGLang's Triton decode takes 1.17-1.35x PAT's time on private rows, so
#   PAT serves every batch; its FP8 decode was not measured: the largest measured FP8 ratio stands in (fa3's).
# A delegate not listed (or one passed in without a name) takes the largest measured ratio of each KV format.
NO_SHARING_TIME_RATIOS: dict[str, tuple[float, float]] = {
    "fa3": (1.00, 0.82),
    "flashinfer": (1.01, 0.67),
    "triton": (0.86, 0.82),
}
FALLBACK_RATIOS = (
    max(r[0] for r in NO_SHARING_TIME_RATIOS.values()),
    max(r[1] for r in NO_SHARING_TIME_RATIOS.values()),
)
# The ratios above are head dim 128's. At other head dims, 16-bit KV, where measured (H200, the kernel benchmark's
# hd64 / hd256 sets: the largest PAT / peer time over the three no-sharing batches; d64 2026-11-30 with the swept tile
# entries, docs/perf/kernels/2026-11-30-h200-tiles-d64-d256/; d256 2026-11-30 with the whole-sector KV loader, all
# three peers in one run (fa3 and PAT as CUDA-graph replays, FlashInfer and triton eager against eager PAT),
# docs/perf/kernels/2026-11-30-h200-bench-twentythird/; fa3 2026-12-02, both as CUDA-graph replays, d64 0.80-0.97x and
# d256 0.93-1.00x, docs/perf/kernels/2026-12-02-h200-fa3-thirtyeighth/; FlashInfer at d256 2026-12-04 with long packs on
# 16-row items, both as CUDA-graph replays, three rounds: 0.984-1.001x, was 1.02,
# docs/perf/kernels/2026-12-04-h200-d256-long-packs/): a delegate measured there takes its own number; one not measured
# there, and FP8 pools, take the larger of their head-dim-128 ratio and the slowest measured one.
HEAD_DIM_TIME_RATIOS: dict[int, dict[str, float]] = {
    64: {"fa3": 0.97, "flashinfer": 0.95, "triton": 0.85},
    256: {"fa3": 1.00, "flashinfer": 1.00, "triton": 0.81},
}
# The same over FP8 pools, where measured (H200, the kernel benchmark's hd256 set with FP8 e4m3 pools, all as CUDA-graph
# replays, the largest of the no-sharing batches): FlashInfer's FP8 decode (tensor cores, as SGLang's flashinfer
# backend runs FP8 KV) 0.84-0.94x, 2026-12-01 with K and V read from the FP8 stage, 16-row items, four computing
# warps per CTA and long items gathering after their MMAs (docs/perf/kernels/2026-12-01-h200-fp8-late-loads/bench-fp8/;
# was 0.94-1.02x before the late gathers, 1.27-1.33x before the tile groups); fa3's FP8 decode 2026-12-02, the
# hd64 / hd256 sets with FP8 pools (docs/perf/kernels/2026-12-02-h200-fa3-thirtyeighth/): d256 0.88-1.12x (d8x32768
# the slowest; was 1.49x on d64x4096 with the fp16-MMA FP8 build of 2026-12-01), d64 0.64-0.73x. A delegate measured
# there takes its own number; one not measured there takes the largest of its head-dim-128 FP8 ratio and every ratio
# measured at that head dim, 16-bit and FP8.
HEAD_DIM_FP8_TIME_RATIOS: dict[int, dict[str, float]] = {
    64: {"fa3": 0.73},
    256: {"flashinfer": 0.94, "fa3": 1.12},
}
# Batches of a few requests, where measured (H200, 2026-12-02, the kernel benchmark's ``small`` set: d1x1024, d1x8192,
# d2x4096, d4x2048, d4x16384 at 32/8 heads and head dim 128, every side as CUDA-graph replays, the largest PAT / peer
# time at each size; docs/perf/kernels/2026-12-02-h200-small-thirtyninth/), as (16-bit KV, FP8 KV) by the most requests
# a batch has: one to four requests leave most SMs idle, so each kernel's fixed costs set its time, and PAT's (a forward
# and a merge launch, 4-64 items) are the larger: 16-bit 1.08-1.21x fa3's (1.00-1.31x FlashInfer's), FP8 up to 1.02x
# fa3's at one request. A batch of n requests takes the entry of the least size >= n; its ratio is never below the one
# ``no_sharing_time_ratio`` gives (the entries were measured at head dim 128 only). A delegate not listed takes the
# largest listed ratio of that size.
SMALL_BATCH_TIME_RATIOS: dict[int, dict[str, tuple[float, float]]] = {
    1: {"fa3": (1.21, 1.02), "flashinfer": (1.31, 0.88)},
    2: {"fa3": (1.10, 0.89), "flashinfer": (1.02, 0.76)},
    4: {"fa3": (1.08, 0.88), "flashinfer": (1.00, 0.74)},
}
# Batches that would gain less than this factor go to the delegate: the ratios above vary by shape, by a few percent.
DISPATCH_MARGIN = 1.05


@dataclass(frozen=True)
class DispatchGate:
    """The fractions of per-request KV bytes a plan must save for PAT to serve its batch: ``small[n - 1]`` for a batch
    of ``n`` real requests, ``n <= len(small)``; ``default`` for larger batches (0: PAT serves them all)."""

    default: float
    small: tuple[float, ...] = ()

    def for_batch(self, requests: int) -> float:
        return self.small[requests - 1] if 0 < requests <= len(self.small) else self.default

    @property
    def strictest(self) -> float:
        """The largest fraction of any batch size (0: PAT serves every batch it can plan)."""
        return max((self.default, *self.small))

    def describe(self) -> str:
        """The fractions as a log line's words, e.g.
        ``4.8% (1 request: 21.3%, 2 requests: 13.4%, 3-4 requests: 11.8%)``."""
        text = f"{100 * self.default:.1f}%"
        if not self.small or all(f == self.default for f in self.small):
            return text
        parts, first = [], 1
        for n in range(1, len(self.small) + 1):  # runs of sizes with one fraction
            if n == len(self.small) or self.small[n] != self.small[n - 1]:
                sizes = f"{first}" if first == n else f"{first}-{n}"
                parts.append(f"{sizes} request{'s' if n > 1 else ''}: {100 * self.small[n - 1]:.1f}%")
                first = n + 1
        return f"{text} ({', '.join(parts)})"


def fraction_of_ratio(ratio: float) -> float:
    """The fraction a plan must save when PAT's forward takes ``ratio`` times the delegate's time on the same bytes."""
    return max(0.0, 1.0 - 1.0 / (ratio * DISPATCH_MARGIN))


def default_gate(heads: HeadConfig, delegate: str | None = None) -> DispatchGate:
    """``default_min_saved_fraction`` for larger batches, and per size up to the largest of
    ``SMALL_BATCH_TIME_RATIOS`` the fraction of that size's ratio (never below the default)."""
    base_ratio = no_sharing_time_ratio(heads, delegate)
    small = []
    for n in range(1, max(SMALL_BATCH_TIME_RATIOS) + 1):
        measured = SMALL_BATCH_TIME_RATIOS[min(size for size in SMALL_BATCH_TIME_RATIOS if size >= n)]
        pair = measured.get(delegate or "") or tuple(max(r[i] for r in measured.values()) for i in range(2))
        small.append(fraction_of_ratio(max(base_ratio, pair[1] if heads.kv_fp8 else pair[0])))
    return DispatchGate(fraction_of_ratio(base_ratio), tuple(small))


def default_min_saved_fraction(heads: HeadConfig, delegate: str | None = None) -> float:
    """The fraction of per-request KV bytes a plan must save for PAT to serve its batch, for this KV format and the
    delegate backend named ``delegate`` (0: PAT serves every batch), for batches larger than ``SMALL_BATCH_TIME_RATIOS``
    covers."""
    return fraction_of_ratio(no_sharing_time_ratio(heads, delegate))


def no_sharing_time_ratio(heads: HeadConfig, delegate: str | None = None) -> float:
    """PAT's decode time over the delegate's on a batch without sharing, for this head dim and KV format (see
    ``NO_SHARING_TIME_RATIOS``, ``HEAD_DIM_TIME_RATIOS`` and ``HEAD_DIM_FP8_TIME_RATIOS``)."""
    ratio_16bit, ratio_fp8 = NO_SHARING_TIME_RATIOS.get(delegate or "", FALLBACK_RATIOS)
    ratio = ratio_fp8 if heads.kv_fp8 else ratio_16bit
    at_head_dim = HEAD_DIM_TIME_RATIOS.get(heads.head_dim, {})
    fp8_at_head_dim = HEAD_DIM_FP8_TIME_RATIOS.get(heads.head_dim, {}) if heads.kv_fp8 else {}
    own = (fp8_at_head_dim if heads.kv_fp8 else at_head_dim).get(delegate or "")
    if own is not None:
        return own
    return max([ratio, *at_head_dim.values(), *fp8_at_head_dim.values()])


def configured_gate(heads: HeadConfig, delegate: str | None = None) -> DispatchGate:
    """``PAT_SGLANG_MIN_SAVED_FRACTION`` if set (a number in [0, 1), for every batch size), else the default gate for
    ``heads`` and ``delegate``."""
    raw = os.environ.get(MIN_SAVED_FRACTION_ENV)
    if raw is None or raw.strip() == "":
        return default_gate(heads, delegate)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{MIN_SAVED_FRACTION_ENV}={raw!r} is not a number") from None
    return DispatchGate(checked_fraction(value, f"{MIN_SAVED_FRACTION_ENV}={raw!r}"))


def checked_fraction(value: float, what: str) -> float:
    """``value`` if it is a fraction PAT can gate on ([0, 1): 1 would decline every batch); ``ValueError`` naming
    ``what`` otherwise."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what}: the fraction must be in [0, 1), got {value}")
    return value


def pat_pays(stats: PlanStats | None, min_saved: float) -> bool:
    """Whether a plan with these ``stats`` saves at least ``min_saved`` of per-request decode's KV bytes (merge traffic
    counted against it). A plan without stats, or ``min_saved`` 0, is always served by PAT."""
    if stats is None or min_saved <= 0.0:
        return True
    moved = stats.kv_bytes_planned + stats.partial_bytes
    return moved <= (1.0 - min_saved) * stats.kv_bytes_per_request
