"""Timeline of a few serving steps from a torch-profiler chrome trace: does the host plan while the GPU works?

Reads a trace written by ``torch.profiler`` (``.json`` or ``.json.gz``; SGLang's ``/start_profile`` writes
``<profile_id>-TP-<rank>.trace.json.gz``) and plots, on one time axis in ms:

* ``host: pat::plan_step``: the PAT backend's per-step host range (``pat_sglang.backend.PROFILE_RANGE``), labelled
  with the step index and the % of that range during which the GPU was busy;
* ``host: launches/syncs``: CUDA runtime/driver calls (graph and kernel launches grey, synchronizations black) and
  other ``record_function`` ranges (SGLang's ``copy_result_to_cpu``...) for context;
* one lane per GPU stream with all its kernels, memcpys and memsets; PAT's ``pat_pack_forward`` / ``pat_merge`` in
  red/orange, other attention kernels (FlashInfer, FlashAttention, Triton) in purple.

CUPTI GPU timestamps and CPU ranges share one clock in torch-profiler traces. Steps are the host ranges named
``--step-range`` (default ``pat::plan_step``); without any (another backend) the host's ``cudaGraphLaunch`` calls
mark the steps. A GPU event belongs to the step during which it was launched (its CUDA runtime/driver call, found by
``correlation``, starts at or after that step's range and before the next one; for kernels replayed in a CUDA graph
that call is the ``cudaGraphLaunch``); an event without a launch record belongs to the last step whose range ended
before the event started.

Table (printed, and written next to the PNG as ``.md``): per step, the host range [start, end], the fraction of it
covered by GPU activity (any stream: 100% = the GPU never waited on this host work), the step's GPU events and its
GPU gap: first GPU start of the step minus the last GPU end of the step before (0 when they touch or overlap), and its
attention kernels' time with their share of the step's GPU busy time (what a faster attention kernel can take off a
step: the rest is the model's other work).

Usage::

    python bench/timeline.py TRACE_OR_FOLDER OUT.png [--steps 6] [--first I] [--step-range NAME]

A folder means the newest trace in it (recursively). Without matplotlib only the table is written.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PLAN_RANGE = "pat::plan_step"
GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "memcpy", "memset"})
LAUNCH_CATS = frozenset({"cuda_runtime", "cuda_driver", "runtime", "driver"})
CONTEXT_CATS = frozenset({"user_annotation"})
PAT_KERNELS = ("pat_pack_forward", "pat_merge")
# Attention kernels of PAT and of SGLang's backends by name: FlashInfer's decode / prefill / merge, fa3's
# (FlashAttnFwdSm90 and its combine), SGLang's Triton decode (_fwd_kernel_stage1/2, _fwd_grouped_kernel_stage1). Not
# "flashinfer" alone: its norm, activation and sampling kernels run in every backend's step.
ATTENTION_RE = re.compile(
    r"BatchDecode|BatchPrefill|MergeState|FlashAttn|flash_fwd|_fwd_kernel|_fwd_grouped_kernel|decode_att|"
    r"pat_pack_forward|pat_merge|pat_wide_forward", re.IGNORECASE)
GRAPH_LAUNCH_RE = re.compile(r"^cu(da)?GraphLaunch")
SYNC_RE = re.compile(r"Synchronize")
TRACE_SUFFIXES = (".json", ".json.gz")


@dataclass(frozen=True)
class Span:
    """One complete ("ph": "X") trace event; times in us on the trace's clock."""

    name: str
    cat: str
    start: float
    end: float
    tid: object = None
    stream: object = None
    correlation: int | None = None

    @property
    def dur(self) -> float:
        return self.end - self.start


@dataclass
class Trace:
    steps: list[Span]  # host step ranges, by start
    gpu: list[Span]  # GPU activity, by start
    launches: list[Span]  # CUDA runtime/driver calls on the host, by start
    context: list[Span]  # other host record_function ranges, by start
    step_source: str  # the step marker used ("" if none)
    launch_ts: dict[int, float] = field(default_factory=dict)  # correlation id -> launch call start


@dataclass
class StepRow:
    step: int  # index among the trace's steps
    host_start: float
    host_end: float
    busy_frac: float  # fraction of the host range with GPU activity
    events: int
    pat_kernels: int
    attention_us: float = 0.0  # summed durations of the step's attention kernels (ATTENTION_RE)
    gpu_busy_us: float = 0.0  # the step's GPU events, overlaps counted once
    gpu_start: float = math.nan
    gpu_end: float = math.nan
    gap_before_us: float = math.nan  # GPU idle between the previous step's last and this step's first GPU event


@dataclass
class Summary:
    path: str
    step_source: str
    steps_in_trace: int
    rows: list[StepRow]
    t0: float  # us; 0 ms of the plot and table
    window: tuple[float, float]  # us; plotted interval
    gpu_idle_us: float = math.nan  # idle time inside [first, last] GPU event of the shown steps
    gpu_span_us: float = math.nan

    @property
    def gaps(self) -> list[float]:
        return [r.gap_before_us for r in self.rows if not math.isnan(r.gap_before_us)]

    @property
    def busy(self) -> list[float]:
        return [r.busy_frac for r in self.rows if not math.isnan(r.busy_frac)]

    @property
    def attention_shares(self) -> list[float]:
        """Per shown step with GPU work: its attention kernels' time over its GPU busy time."""
        return [r.attention_us / r.gpu_busy_us for r in self.rows if r.gpu_busy_us > 0]

    def as_dict(self) -> dict:
        gaps, busy = self.gaps, self.busy
        return {
            "trace": self.path, "step_source": self.step_source, "steps_in_trace": self.steps_in_trace,
            "steps_shown": len(self.rows),
            "gap_median_us": statistics.median(gaps) if gaps else math.nan,
            "gap_max_us": max(gaps) if gaps else math.nan,
            "busy_median_pct": 100 * statistics.median(busy) if busy else math.nan,
            "busy_min_pct": 100 * min(busy) if busy else math.nan,
            "gpu_idle_us": self.gpu_idle_us, "gpu_span_us": self.gpu_span_us,
            "attention_median_us": statistics.median(r.attention_us for r in self.rows) if self.rows else math.nan,
            "attention_median_pct": 100 * statistics.median(self.attention_shares) if self.attention_shares
            else math.nan,
        }


# ----------------------------------------------------------------------------------------------------------- reading
def find_trace(path: Path) -> Path:
    """``path`` itself, or the newest ``*.json``/``*.json.gz`` under the folder ``path`` (names with "trace" first)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no trace at {path}")
    files = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(TRACE_SUFFIXES)]
    preferred = [p for p in files if "trace" in p.name] or files
    if not preferred:
        raise FileNotFoundError(f"no .json / .json.gz trace under {path}")
    return max(preferred, key=lambda p: p.stat().st_mtime)


def load_events(path: Path) -> list[dict]:
    """The ``traceEvents`` of a chrome trace (a bare event list is accepted too)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    return [e for e in events if isinstance(e, dict)]


def _as_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse(events: Iterable[dict], step_range: str = PLAN_RANGE) -> Trace:
    """Sort the complete events of a trace into host steps, GPU activity, launches and context ranges."""
    steps: list[Span] = []
    gpu: list[Span] = []
    launches: list[Span] = []
    context: list[Span] = []
    for e in events:
        if e.get("ph") != "X":
            continue
        try:
            start = float(e["ts"])
            end = start + float(e.get("dur", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        cat = str(e.get("cat", "")).lower()
        name = str(e.get("name", ""))
        args = e.get("args") or {}
        corr = _as_int(args.get("correlation")) if isinstance(args, dict) else None
        stream = args.get("stream", e.get("tid")) if isinstance(args, dict) else e.get("tid")
        if cat in GPU_CATS:
            gpu.append(Span(name, cat, start, end, e.get("tid"), stream, corr))
        elif cat in LAUNCH_CATS:
            launches.append(Span(name, cat, start, end, e.get("tid"), None, corr))
        elif cat.startswith("gpu_"):  # gpu_user_annotation: a record_function range mirrored on the GPU lane
            continue
        elif name == step_range:
            steps.append(Span(name, cat, start, end, e.get("tid")))
        elif cat in CONTEXT_CATS:
            context.append(Span(name, cat, start, end, e.get("tid")))
    source = step_range if steps else ""
    if not steps:
        steps = [s for s in launches if GRAPH_LAUNCH_RE.match(s.name)]
        source = "cudaGraphLaunch" if steps else ""
    for lst in (steps, gpu, launches, context):
        lst.sort(key=lambda s: (s.start, s.end))
    launch_ts = {s.correlation: s.start for s in launches if s.correlation is not None}
    return Trace(steps, gpu, launches, context, source, launch_ts)


def load(path: Path, step_range: str = PLAN_RANGE) -> Trace:
    return parse(load_events(path), step_range)


# ---------------------------------------------------------------------------------------------------------- analysis
def merge_intervals(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals as sorted disjoint intervals."""
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if e < s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def covered(merged: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of [lo, hi] covered by the disjoint sorted intervals ``merged``."""
    total = 0.0
    i = max(0, bisect.bisect_right(merged, (lo, math.inf)) - 1)
    for s, e in merged[i:]:
        if s >= hi:
            break
        total += max(0.0, min(e, hi) - max(s, lo))
    return total


def assign_steps(trace: Trace) -> list[int]:
    """Step index of each GPU event of ``trace.gpu`` (-1: before the first step)."""
    starts = [s.start for s in trace.steps]
    ends = [s.end for s in trace.steps]
    out = []
    for k in trace.gpu:
        launched = trace.launch_ts.get(k.correlation) if k.correlation is not None else None
        if launched is not None:
            out.append(bisect.bisect_right(starts, launched) - 1)
        else:
            out.append(bisect.bisect_right(ends, k.start) - 1)
    return out


def is_pat(name: str) -> bool:
    return any(k in name for k in PAT_KERNELS)


def is_attention(span: Span) -> bool:
    return span.cat == "kernel" and ATTENTION_RE.search(span.name) is not None


def analyze(trace: Trace, steps: int = 6, first: int | None = None, path: str = "") -> Summary:
    """Rows for ``steps`` consecutive steps starting at ``first`` (default: centred in the trace)."""
    n = len(trace.steps)
    merged = merge_intervals((k.start, k.end) for k in trace.gpu)
    if n == 0:
        lo = trace.gpu[0].start if trace.gpu else 0.0
        hi = max((k.end for k in trace.gpu), default=lo)
        return Summary(path, "", 0, [], lo, (lo, min(hi, lo + 50_000.0)))
    k_steps = max(1, min(steps, n))
    if first is None:
        first = (n - k_steps) // 2
    first = max(0, min(first, n - k_steps))
    owner = assign_steps(trace)
    by_step: dict[int, list[Span]] = {}
    for span, idx in zip(trace.gpu, owner, strict=True):
        by_step.setdefault(idx, []).append(span)
    rows: list[StepRow] = []
    for i in range(first, first + k_steps):
        st = trace.steps[i]
        if st.end > st.start:
            busy = covered(merged, st.start, st.end) / (st.end - st.start)
        else:
            busy = 1.0 if covered(merged, st.start - 1e-3, st.start + 1e-3) > 0 else 0.0
        mine = by_step.get(i, [])
        row = StepRow(i, st.start, st.end, busy, len(mine), sum(1 for k in mine if is_pat(k.name)))
        if mine:
            row.attention_us = sum(k.dur for k in mine if is_attention(k))
            row.gpu_busy_us = sum(hi - lo for lo, hi in merge_intervals((k.start, k.end) for k in mine))
            row.gpu_start = min(k.start for k in mine)
            row.gpu_end = max(k.end for k in mine)
            prev = by_step.get(i - 1, [])
            if prev:
                row.gap_before_us = max(0.0, row.gpu_start - max(k.end for k in prev))
        rows.append(row)
    t0 = rows[0].host_start
    hi = max(max(r.host_end for r in rows), max((r.gpu_end for r in rows if not math.isnan(r.gpu_end)), default=t0))
    summary = Summary(path, trace.step_source, n, rows, t0, (t0, hi))
    g_lo = min((r.gpu_start for r in rows if not math.isnan(r.gpu_start)), default=math.nan)
    g_hi = max((r.gpu_end for r in rows if not math.isnan(r.gpu_end)), default=math.nan)
    if not math.isnan(g_lo):
        summary.gpu_span_us = g_hi - g_lo
        summary.gpu_idle_us = summary.gpu_span_us - covered(merged, g_lo, g_hi)
    return summary


# ------------------------------------------------------------------------------------------------------------ output
def _f(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(summary: Summary) -> str:
    """Markdown: header lines, the per-step table, the gap/busy summary."""
    ms = 1e-3
    lines = [f"trace: `{summary.path}`" if summary.path else "trace: (in memory)"]
    if not summary.rows:
        lines.append("no step markers found (no host range named as asked, no cudaGraphLaunch calls)")
        return "\n".join(lines) + "\n"
    r0, r1 = summary.rows[0], summary.rows[-1]
    lines += [
        f"step marker: `{summary.step_source}` ({summary.steps_in_trace} in the trace); steps {r0.step}..{r1.step} "
        "shown; times in ms from the first shown marker's start",
        "",
        "| step | host start ms | host end ms | host us | GPU busy during host range % | GPU events | PAT kernels "
        "| GPU start ms | GPU end ms | GPU gap before us | attention us | attention % of GPU busy |",
        "|" + "|".join(" --- " for _ in range(12)) + "|",
    ]
    for r in summary.rows:
        lines.append(
            f"| {r.step} | {_f((r.host_start - summary.t0) * ms, '.3f')} | {_f((r.host_end - summary.t0) * ms, '.3f')} "
            f"| {_f(r.host_end - r.host_start, '.1f')} | {_f(100 * r.busy_frac, '.1f')} | {r.events} | {r.pat_kernels} "
            f"| {_f((r.gpu_start - summary.t0) * ms, '.3f')} | {_f((r.gpu_end - summary.t0) * ms, '.3f')} "
            f"| {_f(r.gap_before_us, '.1f')} | {_f(r.attention_us, '.1f')} "
            f"| {_f(100 * r.attention_us / r.gpu_busy_us if r.gpu_busy_us > 0 else math.nan, '.1f')} |")
    d = summary.as_dict()
    lines += [
        "",
        f"- GPU gap between consecutive steps' GPU events: median {_f(d['gap_median_us'], '.1f')} us, "
        f"max {_f(d['gap_max_us'], '.1f')} us ({len(summary.gaps)} gaps)",
        f"- GPU busy during the host range: median {_f(d['busy_median_pct'], '.1f')} %, "
        f"min {_f(d['busy_min_pct'], '.1f')} %",
        f"- GPU idle between the first and last GPU event of the shown steps: {_f(d['gpu_idle_us'], '.1f')} us of "
        f"{_f(d['gpu_span_us'], '.1f')} us",
        f"- attention kernels (PAT's and the backends' by name) per step: median {_f(d['attention_median_us'], '.1f')} "
        f"us, {_f(d['attention_median_pct'], '.1f')} % of the step's GPU busy time",
    ]
    return "\n".join(lines) + "\n"


def kernel_color(span: Span) -> str:
    if "pat_pack_forward" in span.name:
        return "#d62728"
    if "pat_merge" in span.name:
        return "#ff7f0e"
    if span.cat in ("gpu_memcpy", "gpu_memset", "memcpy", "memset"):
        return "#2ca02c"
    if is_attention(span):
        return "#9467bd"
    return "#bcbd22"


def plot(trace: Trace, summary: Summary, png: Path, title: str | None = None) -> bool:
    """Write the timeline PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    lo, hi = summary.window
    pad = max(1.0, 0.02 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    t0 = summary.t0
    min_w = (hi - lo) * 4e-4  # keep 1-us events visible

    def inside(spans: Iterable[Span]) -> list[Span]:
        return [s for s in spans if s.end >= lo and s.start <= hi]

    def bars(spans: Sequence[Span]) -> list[tuple[float, float]]:
        return [((max(s.start, lo) - t0) / 1e3, max(min(s.end, hi) - max(s.start, lo), min_w) / 1e3) for s in spans]

    step_tids = {s.tid for s in trace.steps}
    lanes: list[tuple[str, list[tuple[list[Span], str]]]] = []
    lanes.append((f"host: {summary.step_source or 'steps'}", [(inside(trace.steps), "#1f77b4")]))
    ctx = [s for s in inside(trace.launches) if not step_tids or s.tid in step_tids]
    ctx_ann = [s for s in inside(trace.context) if not step_tids or s.tid in step_tids]
    lanes.append(("host: launches/syncs", [
        (ctx_ann, "#c5b0d5"),
        ([s for s in ctx if not SYNC_RE.search(s.name)], "#7f7f7f"),
        ([s for s in ctx if SYNC_RE.search(s.name)], "#000000"),
    ]))
    gpu = inside(trace.gpu)
    streams = sorted({s.stream for s in gpu}, key=str)
    for stream in streams:
        mine = [s for s in gpu if s.stream == stream]
        groups: dict[str, list[Span]] = {}
        for s in mine:
            groups.setdefault(kernel_color(s), []).append(s)
        lanes.append((f"GPU stream {stream}", list((v, c) for c, v in groups.items())))

    fig_h = 1.6 + 0.75 * len(lanes)
    fig, ax = plt.subplots(figsize=(16, fig_h))
    for i, (_, groups) in enumerate(lanes):
        y = len(lanes) - 1 - i
        for spans, color in groups:
            if spans:
                ax.broken_barh(bars(spans), (y - 0.35, 0.7), facecolors=color, edgecolors="none")
    top = len(lanes) - 1
    for r in summary.rows:
        x = (r.host_start - t0) / 1e3
        ax.axvline(x, color="#1f77b4", lw=0.6, ls=":", alpha=0.7)
        ax.text(x, top + 0.42, f"{r.step}: {100 * r.busy_frac:.0f}% busy", fontsize=7, va="bottom")
        if not math.isnan(r.gpu_start) and streams:  # where this step's GPU work starts
            gx = (r.gpu_start - t0) / 1e3
            ax.vlines(gx, -0.45, len(streams) - 0.55, colors="#333333", lw=0.8)
            label = f"{r.step}" + ("" if math.isnan(r.gap_before_us) else f": gap {r.gap_before_us:.0f} us")
            ax.text(gx, -0.48, label, fontsize=6, va="top", color="#333333")
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([name for name, _ in reversed(lanes)], fontsize=8)
    ax.set_ylim(-0.8, len(lanes) - 0.1 + 0.5)
    ax.set_xlim((lo - t0) / 1e3, (hi - t0) / 1e3)
    ax.set_xlabel("time (ms) from the first shown step marker")
    d = summary.as_dict()
    name = Path(summary.path).name or "trace"
    if title is None and summary.rows:
        title = (f"{name}: steps {summary.rows[0].step}..{summary.rows[-1].step} of {summary.steps_in_trace}; "
                 f"GPU busy during {summary.step_source} median {_f(d['busy_median_pct'], '.0f')}%; "
                 f"GPU gap between steps median {_f(d['gap_median_us'], '.0f')} us, "
                 f"max {_f(d['gap_max_us'], '.0f')} us")
    ax.set_title(title or f"{name}: no step markers", fontsize=9)
    legend = [Patch(color="#1f77b4", label=summary.step_source or "step"),
              Patch(color="#7f7f7f", label="CUDA launch call"), Patch(color="#000000", label="CUDA sync call"),
              Patch(color="#c5b0d5", label="other record_function"), Patch(color="#d62728", label="pat_pack_forward"),
              Patch(color="#ff7f0e", label="pat_merge"), Patch(color="#9467bd", label="other attention kernel"),
              Patch(color="#2ca02c", label="memcpy/memset"), Patch(color="#bcbd22", label="other kernel")]
    ax.legend(handles=legend, fontsize=7, ncol=9, loc="upper center", bbox_to_anchor=(0.5, -0.22 - 0.6 / fig_h),
              frameon=False)
    ax.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


def render(trace_path: Path, png: Path, steps: int = 6, first: int | None = None,
           step_range: str = PLAN_RANGE, table: Path | None = None) -> tuple[Summary, str, bool]:
    """Find + read the trace, analyze, write ``table`` (default: the PNG with ``.md``) and the PNG.
    Returns (summary, table text, whether the PNG was written)."""
    path = find_trace(trace_path)
    trace = load(path, step_range)
    summary = analyze(trace, steps, first, str(path))
    text = format_table(summary)
    table = table or png.with_suffix(".md")
    table.parent.mkdir(parents=True, exist_ok=True)
    plotted = plot(trace, summary, png)
    if not plotted:
        text += "- matplotlib is not installed: no PNG written, only this table\n"
    table.write_text(text)
    return summary, text, plotted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path, help="trace .json/.json.gz, or a folder (newest trace in it)")
    ap.add_argument("png", type=Path, help="output PNG (the table goes next to it as .md)")
    ap.add_argument("--steps", type=int, default=6, help="consecutive steps to show")
    ap.add_argument("--first", type=int, default=None, help="index of the first step shown (default: centred)")
    ap.add_argument("--step-range", default=PLAN_RANGE, help="host range that marks a step")
    ap.add_argument("--table", type=Path, default=None, help="table path (default: PNG path with .md)")
    args = ap.parse_args(argv)
    try:
        summary, text, plotted = render(args.trace, args.png, args.steps, args.first, args.step_range, args.table)
    except (OSError, ValueError) as err:
        print(f"timeline: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"timeline: wrote {args.png if plotted else '(no PNG: matplotlib missing)'} and "
          f"{args.table or args.png.with_suffix('.md')}")
    return 0 if summary.rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
