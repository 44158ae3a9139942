"""Where a first token waits on SGLang's scheduler thread: the loop traces of ``PAT_BENCH_LOOP_TRACE``, per server.

The serving sweep's servers write ``loop-<pid>.tsv`` files when started with ``PAT_BENCH_LOOP_TRACE=<folder>`` in their
environment (``ab/dummy_weights/pat_bench_loop_trace.py`` says what is recorded). This splits each request's
server-side time to its first token into the parts of SGLang's overlap loop (``Scheduler.event_loop_overlap``, 0.5.17):

* ``wait``: from the ``process_input_requests`` call that received it to the ``run_batch`` of its prefill (the loop
  finishing the iteration it was in, then building the prefill batch);
* ``launch``: that ``run_batch`` (the prefill's host side);
* ``between``: from there to the ``process_batch_result`` of the prefill: the loop's next iteration, which launches
  the next batch before it processes this one (``next_run``: that next ``run_batch`` alone, usually the decode batch
  the request has just joined);
* ``result``: the ``process_batch_result`` of the prefill (it waits for the prefill's GPU work, then hands out the
  first token);
* ``total``: receipt to first token on the scheduler thread.

A chunked prompt counts from its last chunk's prefill. Also per server: the host time of every decode ``run_batch``
(p50 / p99), which holds the attention backend's per-step metadata work.

Where the sweep's logs hold a point's client times (``bench-<point>.times.tsv``, written by
``ab/bench_serving_main.py``), a last table puts the scheduler thread's part beside the rest of bench_serving's TTFT:
``to_scheduler`` (the request's send to its receipt by the scheduler: HTTP, tokenization, the hop, the wait for the
loop's next ``recv_requests``) and ``from_scheduler`` (the hand-out to the client's first chunk: detokenizer, HTTP),
request by request (``outside_parts`` says how client and scheduler requests are matched). Both processes' clocks are
the machine's: the tables need the sweep's own machine.

Usage::

    python bench/loop_trace.py FOLDER [FOLDER ...] [--results RESULTS.jsonl [--logs LOGS]] [--out TABLE.md]

``--results``: a sweep's ``results.jsonl``; each of its points (backend, workload, load) is then summarised over the
requests received within the point's run (``started`` .. ``started + wall_s``, the machine's local time, so run this
where the sweep ran), from the trace of the server whose backend matches. Without it: one row per trace, over all of
its requests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import bench_serving, sweep  # noqa: E402
from ab.client import percentile  # noqa: E402
from ab.server import BackendLabel  # noqa: E402

HEADER = "# loop-trace"
PARTS = ("wait", "launch", "between", "next_run", "result", "total")
PERCENTILES = (10, 50, 90)


@dataclass
class Record:
    event: str
    start: float  # perf_counter seconds
    end: float
    mode: str
    size: int
    rids: tuple[str, ...]
    cpu: float = float("nan")  # the scheduler thread's CPU seconds in the call
    gc: float = float("nan")  # seconds the process spent collecting garbage in the call


@dataclass
class Trace:
    path: Path
    backend: str
    wall_minus_perf: float
    records: list[Record] = field(default_factory=list)


def read_trace(path: Path) -> Trace:
    """One ``loop-<pid>.tsv`` (several headers: the last one's clock offset is kept; a torn last line is skipped)."""
    trace: Trace | None = None
    with open(path) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if cols[0] == HEADER:
                meta = dict(c.split("=", 1) for c in cols[1:] if "=" in c)
                backend, offset = meta.get("backend", "?"), float(meta.get("wall_minus_perf", "0"))
                if trace is None:
                    trace = Trace(path, backend, offset)
                else:
                    trace.backend, trace.wall_minus_perf = backend, offset
                continue
            if trace is None or len(cols) not in (6, 8):
                continue
            rids = () if cols[5] == "-" else tuple(cols[5].split(","))
            extra = (float(cols[6]), float(cols[7])) if len(cols) == 8 else ()
            trace.records.append(Record(cols[0], float(cols[1]), float(cols[2]), cols[3], int(cols[4]), rids, *extra))
    if trace is None:
        raise ValueError(f"{path}: no '{HEADER}' header")
    return trace


@dataclass(frozen=True)
class FirstToken:
    """One request's first token on the scheduler thread: when it was received and handed out (wall-clock seconds)
    and its parts (ms, ``PARTS``)."""

    received: float
    handed_out: float  # the end of its prefill's ``process_batch_result``, which sends the first token on
    parts: dict[str, float]


def first_tokens(trace: Trace, window: tuple[float, float] | None = None) -> list[FirstToken]:
    """The requests received within ``window`` (wall-clock seconds; None: all), in the order they were received."""
    recv: dict[str, float] = {}
    runs = [r for r in trace.records if r.event == "run"]
    procs = [r for r in trace.records if r.event == "proc"]
    for r in trace.records:
        if r.event == "recv":
            for rid in r.rids:
                recv.setdefault(rid, r.start)
    last_prefill: dict[str, int] = {}  # rid -> index into runs of its last prefill chunk
    for i, r in enumerate(runs):
        if r.rids:
            for rid in r.rids:
                last_prefill[rid] = i
    out = []
    for rid, i in last_prefill.items():
        arrived = recv.get(rid)
        if arrived is None or i >= len(procs):
            continue  # received before the trace began, or its result not processed when the trace ended
        if window is not None and not window[0] <= arrived + trace.wall_minus_perf <= window[1]:
            continue
        run, proc = runs[i], procs[i]
        following = runs[i + 1] if i + 1 < len(runs) and runs[i + 1].start < proc.start else None
        ms = 1e3
        parts = {
            "wait": (run.start - arrived) * ms,
            "launch": (run.end - run.start) * ms,
            "between": (proc.start - run.end) * ms,
            "next_run": (following.end - following.start) * ms if following is not None else 0.0,
            "result": (proc.end - proc.start) * ms,
            "total": (proc.end - arrived) * ms,
        }
        out.append(FirstToken(arrived + trace.wall_minus_perf, proc.end + trace.wall_minus_perf, parts))
    return sorted(out, key=lambda t: t.received)


def first_token_parts(trace: Trace, window: tuple[float, float] | None = None) -> dict[str, list[float]]:
    """Per request received within ``window`` (wall-clock seconds; None: all), its parts in ms (``PARTS``)."""
    tokens = first_tokens(trace, window)
    return {p: [t.parts[p] for t in tokens] for p in PARTS}


# A client request is taken to be the scheduler's next one received at most this long after it was sent (Poisson
# arrivals at ~17 req/s are ~60 ms apart; tokenization and the hop to the scheduler take a few ms).
MATCH_WITHIN_S = 0.25
OUTSIDE = ("client_ttft", "to_scheduler", "total", "from_scheduler")


def outside_parts(
    tokens: list[FirstToken], client: list[bench_serving.ClientRequest]
) -> tuple[dict[str, list[float]], int]:
    """The first token's time outside the scheduler thread, per client request matched to the scheduler's (ms):
    ``to_scheduler`` (sent -> received by the scheduler: HTTP, tokenization, the hop, the wait for the loop's next
    ``recv_requests``), ``total`` (on the scheduler thread, ``PARTS``), ``from_scheduler`` (handed out -> the client's
    first chunk: detokenizer, HTTP), ``client_ttft`` (their sum, bench_serving's TTFT). Requests are matched in order:
    each successful client request (by send time) to the first unmatched scheduler request received after it, within
    ``MATCH_WITHIN_S`` (requests the harness sent, or sent outside the window, stay unmatched). Also returns the client
    requests matched with a first chunk before the scheduler handed the token out (0 unless the match is wrong)."""
    parts: dict[str, list[float]] = {p: [] for p in OUTSIDE}
    inverted = 0
    j = 0
    for req in client:
        if not req.ok or req.first != req.first:  # failed, or no first chunk (nan)
            continue
        while j < len(tokens) and tokens[j].received < req.sent:
            j += 1  # received before this request was sent: not one of the client's
        if j == len(tokens):
            break
        token = tokens[j]
        if token.received - req.sent > MATCH_WITHIN_S:
            continue
        j += 1
        if req.first < token.handed_out:
            inverted += 1
            continue
        ms = 1e3
        parts["client_ttft"].append((req.first - req.sent) * ms)
        parts["to_scheduler"].append((token.received - req.sent) * ms)
        parts["total"].append(token.parts["total"])
        parts["from_scheduler"].append((req.first - token.handed_out) * ms)
    return parts, inverted


def decode_run_ms(trace: Trace, window: tuple[float, float] | None = None) -> list[float]:
    """Host time (ms) of every decode ``run_batch`` that started within ``window``."""
    out = []
    for r in trace.records:
        if r.event == "run" and r.mode.startswith("DECODE"):
            if window is None or window[0] <= r.start + trace.wall_minus_perf <= window[1]:
                out.append((r.end - r.start) * 1e3)
    return out


def event_rows(label: str, trace: Trace, window: tuple[float, float] | None) -> list[str]:
    """Per event and forward mode: calls, wall ms p50 / mean, the thread's CPU ms mean, off-CPU ms mean (wall - CPU:
    waiting, or descheduled), garbage collection ms mean."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in trace.records:
        if window is None or window[0] <= r.start + trace.wall_minus_perf <= window[1]:
            groups.setdefault((r.event, r.mode), []).append(r)
    out = []
    for (event, mode), recs in sorted(groups.items()):
        if len(recs) < 20:
            continue
        wall = [(r.end - r.start) * 1e3 for r in recs]
        cpu = [r.cpu * 1e3 for r in recs]
        gcs = [r.gc * 1e3 for r in recs]
        off = [w - c for w, c in zip(wall, cpu, strict=True)]
        out.append(f"| {label} | {event} {mode} | {len(recs)} | {percentile(wall, 50):.3f} / "
                   f"{statistics.fmean(wall):.3f} | {statistics.fmean(cpu):.3f} | {statistics.fmean(off):.3f} "
                   f"| {statistics.fmean(gcs):.4f} |")
    return out


def decode_after_rows(label: str, trace: Trace, window: tuple[float, float] | None) -> str:
    """A decode ``run_batch``'s host time by what ran before it: a prefill (the batch has just taken the prefill's
    requests in, and under the overlap loop that prefill's first token waits for this run), a decode batch of the same
    size (usually unchanged), or of another size (requests left): ms p50 / p90 (n)."""
    runs = [r for r in trace.records if r.event == "run"
            and (window is None or window[0] <= r.start + trace.wall_minus_perf <= window[1])]
    kinds: dict[str, list[float]] = {"after a prefill": [], "same size": [], "size changed": []}
    for before, run in zip(runs, runs[1:], strict=False):
        if not run.mode.startswith("DECODE"):
            continue
        if before.mode == "EXTEND":
            kind = "after a prefill"
        elif before.mode.startswith("DECODE"):
            kind = "same size" if before.size == run.size else "size changed"
        else:
            continue
        kinds[kind].append((run.end - run.start) * 1e3)
    cells = [f"{percentile(v, 50):.2f} / {percentile(v, 90):.2f} ({len(v)})" if v else "-" for v in kinds.values()]
    return f"| {label} | " + " | ".join(cells) + " |"


DECODE_AFTER_HEADER = ["| point | decode run_batch ms p50 / p90 (n): after a prefill | after a decode, same size | "
                       "after a decode, size changed |", "| --- | --- | --- | --- |"]

EVENT_HEADER = ["| point | event | calls | wall ms p50 / mean | CPU ms mean | off-CPU ms mean | GC ms mean |",
                "| --- | --- | --- | --- | --- | --- | --- |"]


def row(label: str, trace: Trace, window: tuple[float, float] | None) -> str:
    parts = first_token_parts(trace, window)
    decode = decode_run_ms(trace, window)
    cells = [label, str(len(parts["total"]))]
    for p in PARTS:
        vals = parts[p]
        cells.append(" / ".join(f"{percentile(vals, q):.2f}" for q in PERCENTILES) if vals else "-")
    mean = statistics.fmean(parts["total"]) if parts["total"] else float("nan")
    cells.append(f"{mean:.2f}")
    cells.append(f"{percentile(decode, 50):.3f} / {percentile(decode, 99):.3f} ({len(decode)})")
    return "| " + " | ".join(cells) + " |"


def table_header() -> list[str]:
    cols = ["point", "requests", *(f"{p} ms p10/p50/p90" for p in PARTS), "total mean ms",
            "decode run_batch ms p50 / p99 (n)"]
    return ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]


def point_windows(results: Path) -> list[tuple[str, str, tuple[float, float], dict]]:
    """(backend, "workload load", (start, end) wall seconds, the row) of each point row of a sweep's
    ``results.jsonl``; a point measured in several rounds (``serving_sweep.py --rounds``) is named with its round
    ("gsp r17 round 2"; the first round's row, which has no round, "round 1")."""
    rows = [p for p in sweep.read_jsonl(results)
            if p.get("kind") == "point" and "started" in p and "wall_s" in p]
    repeated = {sweep.point_key(p) for p in rows if "round" in p}
    out = []
    for point in rows:
        name = f"{point['workload']} {point['load']}"
        if sweep.point_key(point) in repeated:
            name += f" round {point.get('round', 1)}"
        start = dt.datetime.fromisoformat(point["started"]).timestamp()
        out.append((point["backend"], name, (start, start + float(point["wall_s"])), point))
    return out


OUTSIDE_HEADER = ["| point | matched / client requests | " + " | ".join(
    f"{p} ms p10/p50/p90" for p in OUTSIDE) + " |", "|" + " --- |" * (2 + len(OUTSIDE))]


def outside_row(label: str, trace: Trace, window: tuple[float, float] | None, times: Path) -> str:
    """One point's first token outside the scheduler thread (``outside_parts``), from its client-times file."""
    client = bench_serving.read_client_times(times)
    parts, inverted = outside_parts(first_tokens(trace, window), client)
    sent = sum(1 for r in client if r.ok)
    cells = [label, f"{len(parts['total'])} / {sent}" + (f" ({inverted} inverted)" if inverted else "")]
    for p in OUTSIDE:
        vals = parts[p]
        cells.append(" / ".join(f"{percentile(vals, q):.2f}" for q in PERCENTILES) if vals else "-")
    return "| " + " | ".join(cells) + " |"


def client_times_of(logs: Path, point: dict) -> Path | None:
    """The client-times file of a sweep's point row under ``logs`` (None where the point has none: measured before
    bench_serving_main wrote them)."""
    import serving_sweep  # the sweep's own file naming

    path = bench_serving.client_times_file(serving_sweep.bench_result(logs, point))
    return path if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="+", help="folders holding loop-*.tsv (or the files)")
    ap.add_argument("--results", type=Path, default=None, help="a sweep's results.jsonl: one row per point")
    ap.add_argument("--logs", type=Path, default=None,
                    help="the sweep's logs folder, for each point's client times (default: logs/ beside --results)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    files = sorted(p for folder in args.folders
                   for p in ([folder] if folder.is_file() else folder.glob("loop-*.tsv")))
    traces = [read_trace(p) for p in files]
    traces = [t for t in traces if t.records]
    if not traces:
        print("no loop traces with records", file=sys.stderr)
        return 1
    selected: list[tuple[str, Trace, tuple[float, float] | None]] = []
    outside: list[str] = []
    if args.results is None:
        selected = [(f"{t.backend} ({t.path.name})", t, None) for t in traces]
    else:
        logs = args.logs if args.logs is not None else args.results.parent / "logs"
        for label, point, window, point_row in point_windows(args.results):
            # the trace of this label's server: its backend, with records inside the point's window
            backend = BackendLabel.parse(label).attention_backend
            mine = [(f"{label} {point}", t, window) for t in traces if t.backend == backend
                    and any(window[0] <= r.start + t.wall_minus_perf <= window[1] for r in t.records)]
            selected += mine
            times = client_times_of(logs, point_row)
            if times is not None:
                outside += [outside_row(*m, times) for m in mine]
    lines = table_header() + [row(*s) for s in selected] + [""] + DECODE_AFTER_HEADER
    lines += [decode_after_rows(*s) for s in selected] + [""] + EVENT_HEADER
    for s in selected:
        lines += event_rows(*s)
    if outside:
        lines += ["", *OUTSIDE_HEADER, *outside]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
