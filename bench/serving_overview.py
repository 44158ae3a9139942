"""One table of every backend at every serving point, gathered from several sweep folders.

``serving_sweep.py`` writes one folder per device session (``docs/perf/serving/<date>-<tag>/results.jsonl``); no
one call fits every backend, workload and load. This reads the folders given, in order, keeps for each
(workload, load, backend) the last measured point (later folders win), and writes a markdown table with the folder
each row came from (a point served with SGLang's prefill graphs on, ``serving_sweep.py --prefill-graphs``, is kept
apart, its load tagged ``+pg``). Ratios are against ``--reference`` at the same point: a ratio whose reference row
came from a different folder (another call, maybe other code) is marked ``*``, since run-to-run variation between
calls is of the same order as the differences measured (see the folders' READMEs). So each row also counts every
measured run of its point over the folders (rounds of one call, and earlier calls) and gives the range of their TTFT
and TPOT p50: a difference smaller than that range is not told from server-to-server variation. ``--plot`` draws the
rows (TPOT and output throughput against load, per workload; ``report.plot_sweep``).

    python bench/serving_overview.py docs/perf/serving/2026-11-29-h200-peers docs/perf/serving/2026-11-29-h200-v15 \
        --reference fa3 --out docs/perf/serving/OVERVIEW.md --plot docs/perf/serving/OVERVIEW.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import report, sweep  # noqa: E402

# The harness starts servers with SGLang's prefill graphs off unless ``serving_sweep.py --prefill-graphs``: a point
# served with them on is another point (its TTFT differs by the prefill's eager launch), its load tagged here.
PREFILL_GRAPHS_OFF = "--disable-prefill-cuda-graph"
PREFILL_GRAPHS_TAG = "+pg"
BACKEND_ORDER = ("fa3", "pat@fa3", "flashinfer", "pat@flashinfer", "triton")
WORKLOAD_ORDER = ("gsp", "gsp-deep", "mooncake", "rollout", "random")

# The sweep report's own columns (``report.SWEEP_COLUMNS``: one definition of each header and format), a subset; the
# ratios are text here (a ``*`` marks a reference from another folder), and the folder is added.
_SWEEP = {key: (key, head, spec) for key, head, spec in report.SWEEP_COLUMNS}
COLUMNS: list[tuple[str, str, str]] = [
    *(_SWEEP[k] for k in ("workload", "load", "backend", "output_throughput")),
    ("tok_vs_ref", _SWEEP["output_throughput_vs_ref"][1], "s"),
    *(_SWEEP[k] for k in ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms")),
    ("tpot_vs_ref", _SWEEP["median_tpot_ms_vs_ref"][1], "s"),
    *(_SWEEP[k] for k in ("median_itl_ms", "p99_itl_ms", "step_ms_p50_full")),
    ("runs", "runs", "d"),
    ("ttft_range", "TTFT p50 over runs", "s"),
    ("tpot_range", "TPOT p50 over runs", "s"),
    ("folder", "folder", "s"),
]


def _range(values: list[float]) -> str:
    """``lo-hi`` of the measured values (one value alone; '-' for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.1f}" if len(values) == 1 or lo == hi else f"{lo:.1f}-{hi:.1f}"


def gather(folders: list[Path]) -> dict[tuple[str, str, str], dict]:
    """(workload, load, backend) -> the last measured point over ``folders`` (in order), with its ``folder``, the
    number of measured runs of that point over all the folders (``runs``) and their TTFT / TPOT p50 ranges."""
    points: dict[tuple[str, str, str], dict] = {}
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for folder in folders:
        path = folder / "results.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not a serving sweep folder")
        server_cmd: dict[str, str] = {}  # backend -> the launch command of its latest server row (its points follow)
        for row in sweep.read_jsonl(path):
            if row.get("kind") == "server" and "cmd" in row:
                server_cmd[str(row.get("backend"))] = str(row["cmd"])
            if row.get("kind") != "point" or row.get("status") not in sweep.MEASURED:
                continue
            load = str(row.get("load"))
            if PREFILL_GRAPHS_OFF not in server_cmd.get(str(row.get("backend")), PREFILL_GRAPHS_OFF):
                load += PREFILL_GRAPHS_TAG  # another point than one served with prefill graphs off
            key = (str(row.get("workload")), load, str(row.get("backend")))
            points[key] = {**row, "load": load, "folder": folder.name}
            runs.setdefault(key, []).append(row)
    for key, row in points.items():
        row["runs"] = len(runs[key])
        row["ttft_range"] = _range([r.get("median_ttft_ms") for r in runs[key]])
        row["tpot_range"] = _range([r.get("median_tpot_ms") for r in runs[key]])
    return points


def _ratio(row: dict, ref: dict | None, key: str) -> str:
    if ref is None or not ref.get(key) or row.get(key) is None:
        return "-"
    mark = "" if ref["folder"] == row["folder"] else "*"
    return f"{float(row[key]) / float(ref[key]):.3f}{mark}"


def overview_rows(points: dict[tuple[str, str, str], dict], reference: str) -> list[dict]:
    """Rows in workload, load, backend order, with ratios against ``reference`` at the same point."""
    def order(key: tuple[str, str, str]) -> tuple:
        workload, load, backend = key
        w = WORKLOAD_ORDER.index(workload) if workload in WORKLOAD_ORDER else len(WORKLOAD_ORDER)
        b = BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER)
        return (w, workload, _load_order(load), b, backend)

    rows = []
    for key in sorted(points, key=order):
        row = dict(points[key])
        ref = points.get((key[0], key[1], reference))
        row["tok_vs_ref"] = _ratio(row, ref, "output_throughput")
        row["tpot_vs_ref"] = _ratio(row, ref, "median_tpot_ms")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="+", help="sweep folders, oldest first (later ones win)")
    ap.add_argument("--reference", default="fa3")
    ap.add_argument("--out", type=Path, default=None, help="markdown file (default: print)")
    ap.add_argument("--plot", type=Path, default=None, help="also draw the rows into this PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    rows = overview_rows(gather(args.folders), args.reference)
    text = report.markdown_table(rows, COLUMNS)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
    if args.plot is not None and not report.plot_sweep(rows, args.plot, _load_order):
        print(f"serving_overview: no plot written to {args.plot} (matplotlib missing, or no row has numbers)")
    return 0


def _load_order(load: str) -> tuple:
    """Loads in the sweep's order, a prefill-graphs point right after the same load without them."""
    plain = load.removesuffix(PREFILL_GRAPHS_TAG)
    return (sweep.load_order(plain), load != plain)


if __name__ == "__main__":
    raise SystemExit(main())
