"""Results tables (CSV + markdown) and plots of the serving A/B (``ab_serving.py``) and of the serving sweep
(``serving_sweep.py``: ``SWEEP_COLUMNS``, ``with_ratios``, ``plot_sweep``)."""

from __future__ import annotations

import csv
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

#: environment variables a serving run records beside its command line: PAT's own settings (the dispatch gate's
#: fraction, the delegate, the stats interval, ...) and SGLang's, which change what the servers do but not the command
RECORDED_ENV_PREFIXES = ("PAT_SGLANG_", "SGLANG_")

#: columns of the table, in order: (key, markdown header, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("backend", "backend", "s"),
    ("workload", "workload", "s"),
    ("ok", "ok", ".0f"),
    ("requests", "sent", ".0f"),
    ("startup_s", "start s", ".0f"),
    ("wall_s", "wall s", ".1f"),
    ("out_tok_per_s", "out tok/s", ".0f"),
    ("ttft_mean_ms", "TTFT mean ms", ".1f"),
    ("ttft_p50_ms", "TTFT p50", ".1f"),
    ("ttft_p99_ms", "TTFT p99", ".1f"),
    ("tpot_mean_ms", "TPOT mean ms", ".2f"),
    ("tpot_p50_ms", "TPOT p50", ".2f"),
    ("tpot_p99_ms", "TPOT p99", ".2f"),
    ("step_ms_p50_full", "step ms @full bs", ".2f"),
    ("step_full_bs", "full bs", ".0f"),
    ("status", "status", "s"),
]


def command_line(argv: Sequence[str]) -> str:
    """A recorded call as a shell would take it back: quoted where needed (``--server-args "--kv-cache-dtype
    fp8_e4m3"`` stays one argument; joined with bare spaces it read as three, and argparse refused the copy)."""
    return shlex.join(str(a) for a in argv)


def recorded_env(environ: Mapping[str, str]) -> list[str]:
    """The ``KEY=VALUE`` settings of ``environ`` that a run's report records (``RECORDED_ENV_PREFIXES``), sorted."""
    return sorted(f"{k}={v}" for k, v in environ.items() if k.startswith(RECORDED_ENV_PREFIXES))


def fmt(value: object, spec: str) -> str:
    """One table cell: ``-`` for missing/NaN, else ``format(value, spec)``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if spec == "s":
        return str(value)
    try:
        return format(float(value), spec)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def write_csv(rows: Sequence[Mapping[str, object]], path: Path,
              columns: Sequence[tuple[str, str, str]] = COLUMNS) -> None:
    """All keys of all rows (table columns first), one line per row."""
    keys = [k for k, _, _ in columns]
    for row in rows:
        keys += [k for k in row if k not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A GitHub markdown table of ``rows``."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join(" --- " for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(row.get(k), spec) for k, _, spec in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def write_markdown(
    rows: Sequence[Mapping[str, object]], path: Path, title: str, preamble: Sequence[str] = (),
    correctness: Sequence[Mapping[str, object]] = (), columns: Sequence[tuple[str, str, str]] = COLUMNS,
    extra: Sequence[str] = (),
) -> str:
    """Write the report (title, notes, results table, greedy agreement table, then the ``extra`` lines); returns the
    text."""
    parts = [f"# {title}", ""]
    parts += list(preamble) + [""] if preamble else []
    parts += [markdown_table(rows, columns), ""]
    if correctness:
        cols = [("backend", "backend", "s"), ("reference", "vs", "s"), ("token_agree_pct", "tokens equal %", ".1f"),
                ("seq_agree_pct", "sequences equal %", ".1f"), ("mean_common_prefix", "mean common prefix", ".1f"),
                ("max_logprob_diff", "max abs logprob diff", ".3g"),
                ("mean_logprob_diff", "mean abs logprob diff", ".3g"),
                ("new_tokens", "new tokens", ".0f"), ("sequences", "sequences", ".0f")]
        parts += ["## Greedy agreement (shared-prefix batch)", "",
                  "Log-probabilities: of the same greedy tokens, over each pair's common leading run.", "",
                  markdown_table(correctness, cols), ""]
    parts += list(extra)
    text = "\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot, or None when matplotlib is missing
    """matplotlib's pyplot on the file-only Agg backend, or None if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot(rows: Sequence[Mapping[str, object]], path: Path) -> bool:
    """Bar charts (TPOT mean, TTFT p50, output tok/s) per workload and backend; False if matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    workloads = list(dict.fromkeys(str(r["workload"]) for r in rows))
    backends = list(dict.fromkeys(str(r["backend"]) for r in rows))
    metrics = [("tpot_mean_ms", "TPOT mean (ms)"), ("ttft_p50_ms", "TTFT p50 (ms)"), ("out_tok_per_s", "output tok/s")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / max(1, len(backends))
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        for j, backend in enumerate(backends):
            vals = []
            for w in workloads:
                match = [r for r in rows if r["backend"] == backend and r["workload"] == w]
                v = match[0].get(key) if match else None
                vals.append(float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else 0.0)
            xs = [i + (j - (len(backends) - 1) / 2) * width for i in range(len(workloads))]
            ax.bar(xs, vals, width=width, label=backend)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads)
        ax.set_title(label)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


#: the columns that name a sweep point, first in each of the sweep's tables
POINT_COLUMNS: list[tuple[str, str, str]] = [
    ("workload", "workload", "s"),
    ("load", "load", "s"),
    ("backend", "backend", "s"),
]

#: columns of the sweep table (bench_serving's metric names; "vs ref" = this backend / the reference, same point)
SWEEP_COLUMNS: list[tuple[str, str, str]] = [
    *POINT_COLUMNS,
    ("target_rate", "target req/s", ".2f"),
    ("request_throughput", "req/s", ".2f"),
    ("completed", "done", ".0f"),
    ("output_throughput", "out tok/s", ".0f"),
    ("output_throughput_vs_ref", "tok/s vs ref", ".3f"),
    ("median_ttft_ms", "TTFT p50 ms", ".1f"),
    ("p99_ttft_ms", "TTFT p99", ".1f"),
    ("median_tpot_ms", "TPOT p50 ms", ".2f"),
    ("p99_tpot_ms", "TPOT p99", ".2f"),
    ("median_tpot_ms_vs_ref", "TPOT p50 vs ref", ".3f"),
    ("median_itl_ms", "ITL p50 ms", ".2f"),
    ("p99_itl_ms", "ITL p99", ".2f"),
    ("step_ms_p50_full", "step ms @full bs", ".2f"),
    ("step_full_bs", "full bs", ".0f"),
    ("duration", "s", ".0f"),
    ("status", "status", "s"),
]


#: columns of the sweep's PAT table: the backend's own per-step host planning over each point (client.pat_step_stats)
PAT_COLUMNS: list[tuple[str, str, str]] = [
    *POINT_COLUMNS,
    ("pat_steps", "decode steps", ".0f"),
    ("pat_plan_ms_mean", "host planning ms mean", ".3f"),
    ("pat_plan_ms_max", "max ms (this point)", ".2f"),
    ("pat_host_ms_max", "publishing + planning max ms (this point)", ".2f"),
    ("pat_plan_ms_max_since_start", "max ms (since start)", ".2f"),
    ("pat_plan_ms_max_no_gc_since_start", "max ms w/o GC (since start)", ".2f"),
    ("pat_plan_cpu_ms_max_since_start", "max CPU ms of a step (since start)", ".2f"),
    ("pat_publish_ms_mean", "publishing ms mean", ".3f"),
    ("pat_host_ms_max_since_start", "publishing + planning max ms (since start)", ".2f"),
    ("pat_host_ms_max_no_gc_since_start", "publishing + planning max ms w/o GC (since start)", ".2f"),
    ("pat_host_ms_p50_since_start", "publishing + planning p50 ms (since start)", ".3f"),
    ("pat_host_ms_p99_since_start", "publishing + planning p99 ms (since start)", ".3f"),
    ("pat_gc_steps", "steps with GC", ".0f"),
    ("pat_declined_pct", "on the delegate %", ".1f"),
    ("pat_slowest_step", "the slowest step (since start)", "s"),
]


#: columns of the sweep's TTFT table: a closed loop's first wave against the rest (bench_serving.ttft_split)
TTFT_SPLIT_COLUMNS: list[tuple[str, str, str]] = [
    *POINT_COLUMNS,
    ("median_ttft_ms", "TTFT p50 ms (all)", ".1f"),
    ("ttft_first_p50_ms", "first wave p50", ".1f"),
    ("ttft_rest_p50_ms", "the rest p50", ".1f"),
    ("ttft_rest_p99_ms", "the rest p99", ".1f"),
    ("ttft_second_p50_ms", "second wave p50", ".1f"),
    ("ttft_later_p50_ms", "after two waves p50", ".1f"),
    ("ttft_later_p99_ms", "after two waves p99", ".1f"),
]


#: columns of the sweep's TTFT-parts table: a closed loop's scheduler queue and slot gap from SGLang's per-request
#: ReqTimeStats lines (client.closed_loop_ttft_parts), beside bench_serving's TTFT of the same requests
TTFT_PARTS_COLUMNS: list[tuple[str, str, str]] = [
    *POINT_COLUMNS,
    ("sched_queue_first_p50_ms", "queue ms first wave p50", ".2f"),
    ("sched_queue_first_p99_ms", "first wave p99", ".2f"),
    ("sched_queue_rest_p50_ms", "queue ms the rest p50", ".2f"),
    ("sched_queue_rest_p99_ms", "the rest p99", ".2f"),
    ("slot_gap_p50_ms", "slot gap ms p50", ".1f"),
    ("slot_gap_p90_ms", "slot gap p90", ".1f"),
    ("ttft_rest_p50_ms", "TTFT the rest p50 (bench_serving)", ".1f"),
]


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def with_ratios(rows: Sequence[Mapping[str, object]], reference: str,
                keys: Sequence[str] = ("output_throughput", "median_tpot_ms")) -> list[dict[str, object]]:
    """Copies of ``rows`` with ``<key>_vs_ref`` = value / the reference backend's value at the same (workload, load,
    workload_id, server_id); NaN where the reference has no such row."""
    ref = {(r.get("workload"), r.get("load"), r.get("workload_id"), r.get("server_id")): r
           for r in rows if r.get("backend") == reference}
    out = []
    for row in rows:
        new = dict(row)
        base = ref.get((row.get("workload"), row.get("load"), row.get("workload_id"), row.get("server_id")))
        for key in keys:
            num, den = _num(row.get(key)), _num(base.get(key)) if base else math.nan
            new[f"{key}_vs_ref"] = num / den if den and not math.isnan(den) else math.nan
        out.append(new)
    return out


def plot_sweep(rows: Sequence[Mapping[str, object]], path: Path, load_order) -> bool:
    """One row of panels per workload: TPOT p50 (solid) and p99 (dashed) against the request throughput reached
    (ms vs req/s, points labelled by load), and output tokens/s per load. False if matplotlib is missing or no row
    has numbers."""
    rows = [r for r in rows if not math.isnan(_num(r.get("request_throughput")))]
    if not rows:
        return False
    plt = _pyplot()
    if plt is None:
        return False
    workloads = list(dict.fromkeys(str(r["workload"]) for r in rows))
    backends = list(dict.fromkeys(str(r["backend"]) for r in rows))
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.6 * len(workloads)), squeeze=False)
    for i, workload in enumerate(workloads):
        mine = [r for r in rows if r["workload"] == workload]
        loads = sorted(dict.fromkeys(str(r["load"]) for r in mine), key=load_order)
        ax_tpot, ax_tput = axes[i]
        for j, backend in enumerate(backends):
            pts = sorted((r for r in mine if r["backend"] == backend), key=lambda r: load_order(str(r["load"])))
            if not pts:
                continue
            color = f"C{j}"
            # closed loops (c...) and open loops (x..., r...) are two curves, each in order of the rate reached
            for marker, series in (("o", [r for r in pts if str(r["load"]).startswith("c")]),
                                   ("^", [r for r in pts if not str(r["load"]).startswith("c")])):
                if not series:
                    continue
                series.sort(key=lambda r: _num(r.get("request_throughput")))
                xs = [_num(r.get("request_throughput")) for r in series]
                first = marker == "o" or not any(str(r["load"]).startswith("c") for r in pts)
                ax_tpot.plot(xs, [_num(r.get("median_tpot_ms")) for r in series], f"{marker}-", color=color,
                             label=f"{backend} p50" if first else None)
                ax_tpot.plot(xs, [_num(r.get("p99_tpot_ms")) for r in series], f"{marker}--", color=color, alpha=0.5,
                             label=f"{backend} p99" if first else None)
                for x, r in zip(xs, series, strict=True):
                    ax_tpot.annotate(str(r["load"]), (x, _num(r.get("median_tpot_ms"))), fontsize=7,
                                     textcoords="offset points", xytext=(3, 3))
            by_load = {str(r["load"]): _num(r.get("output_throughput")) for r in pts}
            ax_tput.plot(range(len(loads)), [by_load.get(lo, math.nan) for lo in loads], "o-", color=color,
                         label=backend)
        ax_tpot.set_title(f"{workload}: TPOT vs load (o closed loop, ^ open loop)")
        ax_tpot.set_xlabel("requests/s reached")
        ax_tpot.set_ylabel("TPOT (ms)")
        ax_tpot.legend(fontsize=7)
        ax_tput.set_title(f"{workload}: output throughput vs load")
        ax_tput.set_xticks(range(len(loads)))
        ax_tput.set_xticklabels(loads)
        ax_tput.set_xlabel("load (c = concurrency, x = fraction of reference capacity, r = req/s)")
        ax_tput.set_ylabel("output tok/s")
        ax_tput.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
