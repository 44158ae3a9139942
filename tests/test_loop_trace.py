"""CPU tests of the bench-only scheduler-loop trace (bench/ab/dummy_weights/pat_bench_loop_trace.py) and of its reader
(bench/loop_trace.py): an overlap loop of known durations is traced and split back into its parts."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import loop_trace  # noqa: E402
from ab import bench_serving  # noqa: E402
from ab.dummy_weights import HOOK_DIR  # noqa: E402
from ab.dummy_weights import pat_bench_loop_trace as hook  # noqa: E402


class _Mode:
    def __init__(self, name: str) -> None:
        self.name = name

    def is_extend(self) -> bool:
        return self.name == "EXTEND"


class _Req:
    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.input_ids = [1, 2, 3]


class _Batch:
    def __init__(self, mode: str, reqs: list[_Req]) -> None:
        self.forward_mode = _Mode(mode)
        self.reqs = reqs


class _Plan:
    def __init__(self, batch: _Batch | None) -> None:
        self.batch_to_run = batch


PREFILL_S, DECODE_LAUNCH_S, RESULT_S = 0.004, 0.012, 0.003


def _fake_scheduler_module() -> types.ModuleType:
    module = types.ModuleType("fake_scheduler")

    class Scheduler:
        server_args = types.SimpleNamespace(attention_backend="pat")

        def process_input_requests(self, recv_reqs: list) -> None:
            return None

        def get_next_batch_to_run(self, running_batch: object, last_batch: object) -> _Plan:
            return _Plan(running_batch)  # type: ignore[arg-type]

        def run_batch(self, batch: _Batch) -> str:
            time.sleep(PREFILL_S if batch.forward_mode.is_extend() else DECODE_LAUNCH_S)
            return "result"

        def process_batch_result(self, batch: _Batch, result: str) -> None:
            time.sleep(RESULT_S)

    module.Scheduler = Scheduler  # type: ignore[attr-defined]
    return module


def _overlap_loop(scheduler: object, rounds: int) -> None:
    """SGLang's overlap loop in miniature: receive, launch the next batch, then process the last one."""
    last = None
    running: list[_Req] = []
    for i in range(rounds):
        new = [_Req(f"r{i}")]
        scheduler.process_input_requests(new)  # type: ignore[attr-defined]
        scheduler.process_input_requests([])  # an idle poll: not recorded
        prefill = _Batch("EXTEND", new)
        for batch in (prefill, _Batch("DECODE", running + new)):
            scheduler.get_next_batch_to_run(batch, last)  # type: ignore[attr-defined]
            scheduler.run_batch(batch)  # type: ignore[attr-defined]
            if last is not None:
                scheduler.process_batch_result(last, "result")  # type: ignore[attr-defined]
            last = batch
        running += new
    scheduler.process_batch_result(last, "result")  # type: ignore[attr-defined]


def test_traced_loop_splits_into_its_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hook.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(hook, "_trace", None)
    module = _fake_scheduler_module()
    hook.patch_module(module)
    hook.patch_module(module)  # twice: wrapped once
    assert getattr(module.Scheduler.run_batch, "_pat_bench_loop_trace", False)
    assert not getattr(module.Scheduler.run_batch.__wrapped__, "_pat_bench_loop_trace", False)
    _overlap_loop(module.Scheduler(), rounds=5)
    hook._trace.flush()
    (path,) = tmp_path.glob("loop-*.tsv")
    trace = loop_trace.read_trace(path)
    assert trace.backend == "pat"
    events = [r.event for r in trace.records]
    assert events.count("recv") == 5 and events.count("run") == 10 and events.count("proc") == 10
    parts = loop_trace.first_token_parts(trace)
    assert len(parts["total"]) == 5
    for i in range(5):
        whole = parts["wait"][i] + parts["launch"][i] + parts["between"][i] + parts["result"][i]
        assert parts["total"][i] == pytest.approx(whole, abs=1e-3)
        # the decode batch launched before the prefill's result is processed sits inside "between"
        assert DECODE_LAUNCH_S * 1e3 <= parts["next_run"][i] <= parts["between"][i] + 1e-6
        assert parts["launch"][i] >= PREFILL_S * 1e3 and parts["result"][i] >= RESULT_S * 1e3
    for r in trace.records:  # the sleeps are off the CPU; nothing here collects garbage for long
        assert 0.0 <= r.cpu <= (r.end - r.start) + 1e-3 and 0.0 <= r.gc < 0.05
    prefill_runs = [r for r in trace.records if r.event == "run" and r.mode == "EXTEND"]
    assert all((r.end - r.start) - r.cpu >= 0.8 * PREFILL_S for r in prefill_runs)
    decode = loop_trace.decode_run_ms(trace)
    assert len(decode) == 5 and min(decode) >= DECODE_LAUNCH_S * 1e3
    # a window that ends before the first receipt keeps nothing
    early = (0.0, trace.records[0].start + trace.wall_minus_perf - 1.0)
    assert loop_trace.first_token_parts(trace, early)["total"] == []
    table = tmp_path / "t.md"
    assert loop_trace.main([str(tmp_path), "--out", str(table)]) == 0
    text = table.read_text()
    # every decode run of the miniature loop follows a prefill
    assert "| pat (loop-" in text and "(5) | - | - |" in text
    assert "| pat (loop-" in text and "| run EXTEND | 5 |" not in text  # fewer than 20 calls: no event row
    assert "| run DECODE |" not in text


def test_hook_needs_the_variable_and_patches_on_import(tmp_path: Path) -> None:
    """In a fresh interpreter with the harness folder on the path: without the variable no finder; with it, the
    import of the target module runs the patch (here a stand-in module of that name, made importable)."""
    pkg = tmp_path / "pkgs"
    target = pkg / "sglang" / "srt" / "managers"
    target.mkdir(parents=True)
    for d in (pkg / "sglang", pkg / "sglang" / "srt", target):
        (d / "__init__.py").write_text("")
    (target / "scheduler.py").write_text(
        "class Scheduler:\n"
        "    def process_input_requests(self, r): pass\n"
        "    def get_next_batch_to_run(self, a, b): pass\n"
        "    def run_batch(self, b): pass\n"
        "    def process_batch_result(self, b, r): pass\n")
    probe = ("import sys, sglang.srt.managers.scheduler as s\n"
             "print(sum(getattr(getattr(s.Scheduler, n), '_pat_bench_loop_trace', False) for n in "
             "('process_input_requests', 'get_next_batch_to_run', 'run_batch', 'process_batch_result')))")
    env = {"PYTHONPATH": f"{HOOK_DIR}:{pkg}", "PATH": "/usr/bin:/bin"}
    off = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert off.stdout.strip() == "0"
    on = subprocess.run([sys.executable, "-c", probe], env={**env, hook.ENV_VAR: str(tmp_path / "t")},
                        capture_output=True, text=True, timeout=60, check=True)
    assert on.stdout.strip() == "4", on.stderr


def test_the_wrapped_methods_exist_on_the_pinned_sglang_scheduler() -> None:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("sglang is not installed")
    source = Path(spec.submodule_search_locations[0]) / "srt" / "managers" / "scheduler.py"
    tree = ast.parse(source.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Scheduler"]
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert set(hook._METHODS) <= methods


def test_points_measured_in_rounds_are_named_by_round(tmp_path: Path) -> None:
    """A sweep's repeated points (``--rounds``) get one window each, named by round; a point measured once keeps its
    plain name."""
    def point(backend: str, load: str, started: str, **extra: object) -> dict:
        return {"kind": "point", "backend": backend, "workload": "gsp", "load": load, "workload_id": "w",
                "server_id": "s", "started": started, "wall_s": 80.0, **extra}

    rows = [{"kind": "run", "argv": []}, point("fa3", "r17", "2026-11-30T14:47:05"),
            point("fa3", "r17", "2026-11-30T14:55:04", round=2), point("fa3", "r25", "2026-11-30T15:00:00"),
            point("pat@fa3", "r17", "2026-11-30T14:49:39")]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    windows = loop_trace.point_windows(results)
    assert [(b, name) for b, name, _, _ in windows] == [
        ("fa3", "gsp r17 round 1"), ("fa3", "gsp r17 round 2"), ("fa3", "gsp r25"), ("pat@fa3", "gsp r17")]
    start = dt.datetime.fromisoformat("2026-11-30T14:55:04").timestamp()
    assert windows[1][2] == (start, start + 80.0)


def test_bench_serving_main_writes_each_requests_client_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench_serving_main.record_client_times`` wraps bench_serving's request functions: each finished request's
    send time (perf_counter, turned into wall time by the header's offset), TTFT and success land in the file as it
    ends, and ``read_client_times`` reads them back in send order (a failed request without a first chunk)."""
    import asyncio

    from ab import bench_serving_main

    stubs = bench_serving.stub_modules(tmp_path / "stubs", names=bench_serving.missing_modules())
    if stubs is not None:  # sglang.benchmark's module-level imports this venv lacks
        monkeypatch.syspath_prepend(str(stubs))
    from sglang.benchmark import serving

    outputs = [types.SimpleNamespace(start_time=20.0, ttft=0.030, latency=1.5, success=True),
               types.SimpleNamespace(start_time=10.0, ttft=0.025, latency=2.0, success=True),
               types.SimpleNamespace(start_time=15.0, ttft=0.0, latency=0.1, success=False)]

    async def fake_request(request_func_input: object, pbar: object = None) -> object:
        return outputs[int(request_func_input)]  # type: ignore[call-overload]

    monkeypatch.setattr(serving, "ASYNC_REQUEST_FUNCS", {"sglang": fake_request})
    assert bench_serving_main.output_file_arg(["--x", "1", "--output-file", "a/b.jsonl"]) == Path("a/b.jsonl")
    assert bench_serving_main.output_file_arg(["--output-file=c.jsonl"]) == Path("c.jsonl")
    assert bench_serving_main.output_file_arg(["--seed", "1"]) is None
    path = bench_serving.client_times_file(tmp_path / "bench-fa3-gsp-r17.jsonl")
    assert path.name == "bench-fa3-gsp-r17.times.tsv"
    before = time.time() - time.perf_counter()
    bench_serving_main.record_client_times(path)
    after = time.time() - time.perf_counter()

    async def run_all() -> None:
        for i in range(3):
            await serving.ASYNC_REQUEST_FUNCS["sglang"](i)

    asyncio.run(run_all())
    got = bench_serving.read_client_times(path)
    assert [r.ok for r in got] == [True, False, True]
    offset = got[0].sent - 10.0
    assert before - 1e-3 <= offset <= after + 1e-3
    assert got[0].first - got[0].sent == pytest.approx(0.025, abs=1e-5)  # written to the microsecond
    assert got[2].sent - offset == pytest.approx(20.0, abs=1e-5)
    assert got[1].first != got[1].first  # nan: no first chunk


def test_client_requests_are_matched_to_the_schedulers_in_order() -> None:
    """``outside_parts``: each client request to the scheduler's next request received after it was sent; requests
    the client did not send (the harness's warm-up) and client requests the scheduler never received in time stay
    unmatched; the parts add up to the client's TTFT."""
    def token(received: float, total_ms: float) -> loop_trace.FirstToken:
        return loop_trace.FirstToken(received, received + total_ms / 1e3, {"total": total_ms})

    client_req = bench_serving.ClientRequest
    tokens = [token(99.0, 5.0),  # the harness's warm-up: before any client request
              token(100.004, 12.0), token(100.066, 15.0), token(100.070, 11.0), token(101.009, 20.0)]
    client = [client_req(100.000, 100.000 + 0.004 + 0.012 + 0.002, True),
              client_req(100.060, 100.060 + 0.006 + 0.015 + 0.003, True),
              client_req(100.065, 100.065 + 0.005 + 0.011 + 0.001, True),
              client_req(100.500, float("nan"), False),  # failed
              client_req(100.700, 100.900, True),  # never received in time: 101.009 is 309 ms later
              client_req(101.000, 101.000 + 0.009 + 0.020 + 0.004, True)]
    parts, inverted = loop_trace.outside_parts(tokens, client)
    assert inverted == 0
    assert parts["to_scheduler"] == pytest.approx([4.0, 6.0, 5.0, 9.0])
    assert parts["total"] == [12.0, 15.0, 11.0, 20.0]
    assert parts["from_scheduler"] == pytest.approx([2.0, 3.0, 1.0, 4.0])
    for i in range(4):
        whole = parts["to_scheduler"][i] + parts["total"][i] + parts["from_scheduler"][i]
        assert parts["client_ttft"][i] == pytest.approx(whole)
    # a client first chunk before the scheduler's hand-out is a wrong match: counted, not used
    parts, inverted = loop_trace.outside_parts([token(100.004, 12.0)], [client_req(100.0, 100.010, True)])
    assert inverted == 1 and parts["total"] == []


def test_the_table_shows_the_first_token_outside_the_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``loop_trace.py --results``: a point whose client-times file is in the sweep's logs gets a row of the first
    token's time outside the scheduler thread (here each request sent 2 ms before the scheduler received it and its
    first chunk 1 ms after the hand-out)."""
    monkeypatch.setenv(hook.ENV_VAR, str(tmp_path / "loop"))
    monkeypatch.setattr(hook, "_trace", None)
    module = _fake_scheduler_module()
    hook.patch_module(module)
    _overlap_loop(module.Scheduler(), rounds=5)
    hook._trace.flush()
    (path,) = (tmp_path / "loop").glob("loop-*.tsv")
    trace = loop_trace.read_trace(path)
    tokens = loop_trace.first_tokens(trace)
    assert len(tokens) == 5
    start = tokens[0].received - 2.0
    point = {"kind": "point", "backend": "pat", "workload": "gsp", "load": "r17", "workload_id": "w",
             "server_id": "s", "status": "ok", "wall_s": 60.0,
             "started": dt.datetime.fromtimestamp(start).isoformat(timespec="seconds")}
    (tmp_path / "results.jsonl").write_text(json.dumps(point) + "\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    times = bench_serving.client_times_file(logs / "bench-pat-gsp-r17.jsonl")
    lines = [f"{bench_serving.CLIENT_TIMES_HEADER}\twall_minus_perf=0.0"]
    lines += [f"{t.received - 0.002:.6f}\t{t.handed_out + 0.001 - (t.received - 0.002):.6f}\t1.0\t1" for t in tokens]
    times.write_text("\n".join(lines) + "\n")
    table = tmp_path / "t.md"
    assert loop_trace.main([str(tmp_path / "loop"), "--results", str(tmp_path / "results.jsonl"),
                            "--out", str(table)]) == 0
    (row,) = [ln for ln in table.read_text().splitlines() if ln.startswith("| pat gsp r17 | 5 / 5 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "2.00 / 2.00 / 2.00" and cells[5] == "1.00 / 1.00 / 1.00"  # to and from the scheduler
