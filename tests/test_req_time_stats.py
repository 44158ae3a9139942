"""CPU tests of the closed-loop TTFT parts read from SGLang's per-request "ReqTimeStats" log lines
(``client.req_time_stats``, ``client.closed_loop_ttft_parts``) and of their table in the serving report
(``serving_sweep.write_report``): lines in SGLang 0.5.17's format, health checks and malformed lines left out, a
synthetic closed loop whose queue times and slot gaps are worked out by hand below, and folders without such lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import BENCH, on_path

on_path(BENCH)

from ab import client, sweep  # noqa: E402

# Lines copied from server-fa3.log in docs/perf/serving/2026-11-30-h200-fifteenth/logs.tgz (the first and the third are
# requests, the second the server's health check).
REAL = (
    "[2026-11-30 03:46:59] ReqTimeStats(rid=1d49fce29b0045bf99d9a4067fea1bf7, input_len=6, cached_input_len=0, "
    "output_len=8, attempts=0, type=unified): queue_duration=0.75ms, forward_duration=151.03ms, "
    "entry_time=1796010419.463\n"
    "[2026-11-30 03:46:59] ReqTimeStats(rid=HEALTH_CHECK_bbb2b16d925e4a88ba46e62e4295ca94, input_len=1, "
    "cached_input_len=0, output_len=1, attempts=0, type=unified): queue_duration=0.25ms, forward_duration=32.05ms, "
    "entry_time=1796010419.645\n"
    "[2026-11-30 03:47:00] Decode batch, #running-req: 1, #token: 9, token usage: 0.01, cuda graph: True, "
    "gen throughput (token/s): 100.0, #queue-req: 0\n"
    "[2026-11-30 03:47:00] ReqTimeStats(rid=1ffc9a2f9eb74db6bcd6b15a39d4e1dd, input_len=1025, cached_input_len=0, "
    "output_len=1, attempts=0, type=unified): queue_duration=0.20ms, forward_duration=44.18ms, "
    "entry_time=1796010420.650\n"
)
MALFORMED = (
    # cut short (another process's write in the middle of it)
    "[2026-11-30 03:47:01] ReqTimeStats(rid=3617bf96cd06464595d723aa56843855, input_len=1088, cached_input_len=0, "
    "output_len=16, attempts=0, type=unified): queue_duration=0.23ms, forward_dur\n"
    # a duration without its unit, and one that is not a number
    "[2026-11-30 03:47:01] ReqTimeStats(rid=8c51ee891256466fa49e95d4384d8458, input_len=1088, cached_input_len=0, "
    "output_len=16, attempts=0, type=unified): queue_duration=3.40, forward_duration=544.52ms, entry_time=1.0\n"
    "[2026-11-30 03:47:01] ReqTimeStats(rid=ab1463397ce846aa8187a7b602c0544e, input_len=x, cached_input_len=0, "
    "output_len=16, attempts=0, type=unified): queue_duration=3.32ms, forward_duration=544.67ms, entry_time=1.0\n"
)


def test_real_lines_parse_and_health_checks_and_malformed_lines_are_left_out() -> None:
    reqs = client.req_time_stats(REAL + MALFORMED)
    assert [r.rid for r in reqs] == ["1d49fce29b0045bf99d9a4067fea1bf7", "1ffc9a2f9eb74db6bcd6b15a39d4e1dd"]
    first, second = reqs
    assert (first.input_len, first.queue_ms, first.forward_ms, first.entry_s) == (6, 0.75, 151.03, 1796010419.463)
    assert (second.input_len, second.queue_ms, second.forward_ms) == (1025, 0.20, 44.18)
    # completed = entry + (queue + forward) / 1000: 1796010419.463 + 0.15178
    assert first.done_s == pytest.approx(1796010419.61478, abs=1e-6)
    assert client.req_time_stats(MALFORMED) == []
    assert client.req_time_stats("") == []


# A closed loop of N = 2 in flight, 5 requests (offsets from T, s; queue and forward ms):
#   A: entry 0.000, queue 1.0, forward 899.0 -> done 0.900
#   B: entry 0.001, queue 9.0, forward 291.0 -> done 0.301
#   C: entry 0.351, queue 2.0, forward 198.0 -> done 0.551   (sent when B finished: gap 50 ms)
#   D: entry 0.621, queue 4.0, forward 400.0 -> done 1.025   (sent when C finished: gap 70 ms)
#   E: entry 1.020, queue 0.5, forward 100.0 -> done 1.1205  (sent when A finished: gap 120 ms)
# Completions in time order: B 0.301, C 0.551, A 0.900, D 1.025, E 1.1205; so entry[2+k] - completion[k] =
# C - B = 50, D - C = 70, E - A = 120 ms: p50 70, p90 70 + 0.8 * (120 - 70) = 110.
# Queue of the first wave by entry (A, B): 1, 9 -> p50 5, p99 1 + 0.99 * 8 = 8.92; of the rest (C, D, E): 0.5, 2, 4 ->
# p50 2, p99 2 + 0.98 * 2 = 3.96. (In log order the first two would be B and C: queue p50 5.5.)
T = 1796010421.0
LOOP = {"A": (100, 0.000, 1.0, 899.0), "B": (101, 0.001, 9.0, 291.0), "C": (102, 0.351, 2.0, 198.0),
        "D": (103, 0.621, 4.0, 400.0), "E": (104, 1.020, 0.5, 100.0)}
EXPECTED = {"sched_queue_first_p50_ms": 5.0, "sched_queue_first_p99_ms": 8.92, "sched_queue_rest_p50_ms": 2.0,
            "sched_queue_rest_p99_ms": 3.96, "slot_gap_p50_ms": 70.0, "slot_gap_p90_ms": 110.0, "req_time_lines": 5.0}


def line(stamp: str, rid: str, input_len: int, entry: float, queue: float, forward: float) -> str:
    return (f"[2026-11-30 03:47:{stamp}] ReqTimeStats(rid={rid}, input_len={input_len}, cached_input_len=0, "
            f"output_len=16, attempts=0, type=unified): queue_duration={queue:.2f}ms, "
            f"forward_duration={forward:.2f}ms, entry_time={T + entry:.3f}\n")


def loop_log() -> str:
    """The loop's lines in the order SGLang writes them (completion), after an earlier warm-up request, with a health
    check among them."""
    text = line("01", "warmup0", 1088, -0.5, 0.2, 300.0)
    for name in "BCADE":
        input_len, entry, queue, forward = LOOP[name]
        text += line("02", f"req{name}", input_len, entry, queue, forward)
        if name == "C":
            text += line("02", "HEALTH_CHECK_5d352ec72a6a40a3b4d2362cfde275c6", 1, 0.6, 0.2, 17.9)
    return text


def test_synthetic_closed_loop_queue_and_slot_gaps() -> None:
    reqs = client.req_time_stats(loop_log())
    assert len(reqs) == 6  # the warm-up and the five; the health check left out
    parts = client.closed_loop_ttft_parts(reqs, 2, 5, input_lens=[100, 101, 102, 103, 104])
    assert parts == pytest.approx(EXPECTED, abs=1e-3)
    assert client.closed_loop_ttft_parts(reqs, 2, 5) == pytest.approx(EXPECTED, abs=1e-3)  # no lengths to check
    # not the measured requests: lengths that are not bench_serving's, or fewer lines than it completed
    assert client.closed_loop_ttft_parts(reqs, 2, 5, input_lens=[1088, 101, 102, 103, 104]) == {}
    assert client.closed_loop_ttft_parts(reqs, 2, 7) == {}
    assert client.closed_loop_ttft_parts(reqs, 5, 5) == {}  # nothing past the first wave
    assert client.closed_loop_ttft_parts([], 2, 5) == {}


def write_folder(root: Path, log: str | None) -> sweep.ResultStore:
    """A sweep folder: a closed loop of 2 (its bench_serving result beside the log), an open-loop point in the same
    window, and a closed loop of another backend with no server log."""
    (root / "logs").mkdir(parents=True)
    if log is not None:
        (root / "logs" / "server-fa3.log").write_text(log)
    (root / "logs" / "bench-fa3-gsp-deep-c2.jsonl").write_text(
        json.dumps({"completed": 5, "input_lens": [100, 101, 102, 103, 104], "ttfts": [0.3] * 5}) + "\n")
    store = sweep.ResultStore(root / "results.jsonl")
    base = {"kind": "point", "workload": "gsp-deep", "workload_id": "w", "server_id": "s", "status": "ok",
            "completed": 5.0, "started": "2026-11-30T03:47:00", "wall_s": 5.0, "request_throughput": 2.0}
    store.append({**base, "backend": "fa3", "load": "c2", "ttft_rest_p50_ms": 123.4})
    store.append({**base, "backend": "fa3", "load": "x0.4"})
    store.append({**base, "backend": "pat@fa3", "load": "c2", "ttft_rest_p50_ms": 234.5})
    return store


def test_report_table_has_a_row_per_closed_loop_with_the_lines(tmp_path: Path) -> None:
    import serving_sweep

    store = write_folder(tmp_path, loop_log())
    measured = (tmp_path / "results.jsonl").read_text()
    text = serving_sweep.write_report(tmp_path, store, "fa3")
    section = text.split("## Where a closed loop's TTFT goes")[1]
    rows = [ln for ln in section.splitlines() if ln.startswith("| gsp-deep")]
    # the hand-worked values above, as the table formats them; bench_serving's TTFT of the rest from the row
    assert rows == ["| gsp-deep | c2 | fa3 | 5.00 | 8.92 | 2.00 | 3.96 | 70.0 | 110.0 | 123.4 |"]
    assert (tmp_path / "results.jsonl").read_text() == measured  # computed for the report, not stored
    assert "slot_gap_p50_ms" in (tmp_path / "results.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("log", [None, "[2026-11-30 03:47:01] Decode batch, #running-req: 2, #token: 9, token usage: "
                                       "0.01, cuda graph: True, gen throughput (token/s): 100.0, #queue-req: 0\n"])
def test_report_without_req_time_lines_has_no_table(tmp_path: Path, log: str | None) -> None:
    import serving_sweep

    text = serving_sweep.write_report(tmp_path, write_folder(tmp_path, log), "fa3")
    assert "## Where a closed loop's TTFT goes" not in text
    assert "## TTFT of the first wave and of the rest" in text  # the rows are there, only the log lines are not
