"""Results table (CSV + markdown) and plot of the serving A/B."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def write_csv(rows: Sequence[Mapping[str, object]], path: Path) -> None:
    """All keys of all rows (table columns first), one line per row."""
    keys = [k for k, _, _ in COLUMNS]
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
    correctness: Sequence[Mapping[str, object]] = (),
) -> str:
    """Write the report (title, notes, results table, greedy agreement table); returns the text."""
    parts = [f"# {title}", ""]
    parts += list(preamble) + [""] if preamble else []
    parts += [markdown_table(rows), ""]
    if correctness:
        cols = [("backend", "backend", "s"), ("reference", "vs", "s"), ("token_agree_pct", "tokens equal %", ".1f"),
                ("seq_agree_pct", "sequences equal %", ".1f"), ("mean_common_prefix", "mean common prefix", ".1f"),
                ("new_tokens", "new tokens", ".0f"), ("sequences", "sequences", ".0f")]
        parts += ["## Greedy agreement (shared-prefix batch)", "", markdown_table(correctness, cols), ""]
    text = "\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def plot(rows: Sequence[Mapping[str, object]], path: Path) -> bool:
    """Bar charts (TPOT mean, TTFT p50, output tok/s) per workload and backend; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
