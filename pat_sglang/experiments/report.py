"""CSV and plots of a radix-cache replay.

Role in pack-forward-merge: reporting only. Rows stream to the CSV as the replay records them (memory stays
bounded); the few columns the plots need are kept as numpy-able lists.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import IO

import numpy as np

from .replay import STEP_COLUMNS, ReplaySummary, StepRecord

BYTES_PER_GB = 1e9
PLOT_SMOOTH_POINTS = 200  # the bytes plot shows a rolling mean over len / this many recorded steps
PLOT_COLUMNS = (
    "time_ms",
    "batch_size",
    "bytes_per_request",
    "bytes_pat",
    "bytes_unique",
    "dedup_ratio",
    "shared_read_ratio",
)


class StepSink:
    """Writes each ``StepRecord`` to a CSV (floats rounded to 6 digits) and keeps the plot columns."""

    def __init__(self, csv_path: Path | None) -> None:
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter | None = None
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(csv_path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=STEP_COLUMNS)
            self._writer.writeheader()
        self.cols: dict[str, list[float]] = {k: [] for k in PLOT_COLUMNS}

    def __call__(self, rec: StepRecord) -> None:
        if self._writer is not None:
            row = dataclasses.asdict(rec)
            self._writer.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        for k, v in self.cols.items():
            v.append(getattr(rec, k))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def plot(cols: dict[str, list[float]], summary: ReplaySummary, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>_bytes.png`` (bytes per step over time, batch size) and ``<stem>_sharing.png`` (histogram
    and CDF of the sharing ratios)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    c = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    t_s = c["time_ms"] / 1e3
    paths = []

    fig, (ax, ax_b) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    # Rolling mean over ~1/200 of the run: tens of thousands of raw points are an unreadable band, and PAT
    # sits within a few percent of the floor, so it is drawn last, dashed.
    window = max(1, t_s.shape[0] // PLOT_SMOOTH_POINTS)
    for name, label, color, style in (
        ("bytes_per_request", "per-request decode", "tab:red", "-"),
        ("bytes_unique", "unique KV (floor)", "tab:green", "-"),
        ("bytes_pat", "PAT plan (KV + partials)", "tab:blue", "--"),
    ):
        ax.plot(t_s, _rolling(c[name], window) / BYTES_PER_GB, lw=1.0, ls=style, color=color, label=label)
    ax.set_ylabel("KV bytes per decode step, all layers (GB)")
    ax.set_title(
        f"{summary.workload}: PAT saves {summary.pat_saving:.1%} of decode KV bytes "
        f"(bound {summary.unique_saving:.1%}); every {summary.record_every} step(s), mean of {window} points"
    )
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    ax_b.plot(t_s, _rolling(c["batch_size"], window), lw=0.8, color="black")
    ax_b.set_ylabel("batch")
    ax_b.set_xlabel("simulated time (s)")
    ax_b.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / f"{stem}_bytes.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0.0, 1.0, 51)
    for name, label in (("dedup_ratio", "1 - unique/request tokens"), ("shared_read_ratio", "shared reads/request")):
        ax_h.hist(c[name], bins=bins, alpha=0.6, label=label)
        xs = np.sort(c[name])
        ax_c.plot(xs, np.arange(1, xs.shape[0] + 1) / max(1, xs.shape[0]), label=label)
    ax_h.set_xlabel("intra-batch sharing ratio")
    ax_h.set_ylabel("recorded decode steps")
    ax_h.legend()
    ax_c.set_xlabel("intra-batch sharing ratio")
    ax_c.set_ylabel("CDF over recorded steps")
    ax_c.set_xlim(0, 1)
    ax_c.grid(alpha=0.3)
    ax_c.legend()
    fig.suptitle(f"{summary.workload}: sharing inside decode batches")
    fig.tight_layout()
    p = out_dir / f"{stem}_sharing.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def _rolling(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start), same length as ``x``."""
    if window <= 1:
        return x
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.shape[0] + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)
