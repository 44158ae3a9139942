"""CPU tests of the serving A/B harness: workloads, server command, report writer, process cleanup, end to end
against a fake server."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scripts import BENCH, REPO, on_path

on_path(BENCH)

from ab import client, report  # noqa: E402
from ab.server import ManagedProcess, ServerConfig, server_command  # noqa: E402
from ab.workload import (  # noqa: E402
    BLOCK_TOKENS,
    TOKEN_HI,
    TOKEN_LO,
    block_tokens,
    mooncake,
    mooncake_prompt,
    shared_prefix,
)


def test_shared_prefix_deterministic_and_shared() -> None:
    a = shared_prefix(3, 4, 100, 10, 8, seed=7)
    b = shared_prefix(3, 4, 100, 10, 8, seed=7)
    c = shared_prefix(3, 4, 100, 10, 8, seed=8)
    assert a.requests == b.requests and a.warmup == b.warmup
    assert a.requests != c.requests
    assert len(a.requests) == 12 and len(a.warmup) == 3
    by_group: dict[str, set[tuple[int, ...]]] = {}
    for r in a.requests:
        assert len(r.input_ids) == 110 and r.max_new_tokens == 8
        assert all(TOKEN_LO <= t < TOKEN_HI for t in r.input_ids)
        by_group.setdefault(r.group, set()).add(r.input_ids[:100])
    assert all(len(s) == 1 for s in by_group.values())  # one system prompt per group
    assert len({next(iter(s)) for s in by_group.values()}) == 3
    for w in a.warmup:
        assert w.input_ids[:100] == next(iter(by_group[w.group]))


def test_equal_hash_ids_give_equal_tokens() -> None:
    assert block_tokens(42) == block_tokens(42)
    assert block_tokens(42) != block_tokens(43)
    assert len(block_tokens(5)) == BLOCK_TOKENS
    p1 = mooncake_prompt([1, 2, 3], 1200)
    p2 = mooncake_prompt([1, 2, 9], 1500)
    assert len(p1) == 1200 and len(p2) == 1500
    assert p1[: 2 * BLOCK_TOKENS] == p2[: 2 * BLOCK_TOKENS]
    assert p1[2 * BLOCK_TOKENS :] != p2[2 * BLOCK_TOKENS : 1200]
    assert len(mooncake_prompt([1], 1500)) == 1500  # filled beyond the listed blocks


def test_mooncake_replay(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 100, "input_length": 700, "output_length": 50, "hash_ids": [10, 11]},
        {"timestamp": 600, "input_length": 1100, "output_length": 500, "hash_ids": [10, 11, 12]},
        {"timestamp": 900, "input_length": 10, "output_length": 5, "hash_ids": [99]},
    ]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    w = mooncake(trace, 2, max_input_len=1000, max_output_len=64)
    assert len(w.requests) == 2
    r0, r1 = w.requests
    assert len(r0.input_ids) == 700 and len(r1.input_ids) == 1000
    assert r0.input_ids == r1.input_ids[:700]
    assert (r0.max_new_tokens, r1.max_new_tokens) == (50, 64)
    assert r1.arrival_s == pytest.approx(0.5)
    assert mooncake(trace, 3, output_len=7).requests[2].max_new_tokens == 7


def test_server_command_flags() -> None:
    cfg = ServerConfig(model_path="configs/models/llama3-8b", attention_backend="pat", port=31234)
    cmd = server_command(cfg)
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    joined = " ".join(cmd)
    for flag in ("--load-format dummy", "--skip-tokenizer-init", "--host 127.0.0.1", "--port 31234",
                 "--attention-backend pat", "--disable-prefill-cuda-graph", "--cuda-graph-max-bs-decode 64"):
        assert flag in joined
    assert "--disable-cuda-graph" not in cmd
    cmd2 = server_command(ServerConfig("m", "flashinfer", 1, cuda_graph=False, context_length=8192,
                                       extra_args=("--foo", "1")))
    assert "--disable-cuda-graph" in cmd2 and "--cuda-graph-max-bs-decode" not in cmd2
    assert cmd2[-2:] == ["--foo", "1"] and "--context-length" in cmd2


def test_table_writer(tmp_path: Path) -> None:
    rows = [
        {"backend": "flashinfer", "workload": "shared_prefix", "ok": 64.0, "tpot_mean_ms": 12.345,
         "ttft_p50_ms": float("nan"), "status": "ok"},
        {"backend": "pat", "workload": "shared_prefix", "status": "start failed", "extra_key": 3},
    ]
    report.write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["backend"] == "flashinfer" and float(got[0]["tpot_mean_ms"]) == pytest.approx(12.345)
    assert got[0]["ttft_p50_ms"] == "" and got[1]["extra_key"] == "3"
    text = report.write_markdown(rows, tmp_path / "r.md", "T", ["- note"],
                                 [{"backend": "pat", "reference": "flashinfer", "token_agree_pct": 100.0}])
    lines = text.splitlines()
    assert lines[0] == "# T" and "- note" in lines
    table = [ln for ln in lines if ln.startswith("| flashinfer")]
    assert table and "12.35" in table[0] and "| - |" in table[0]
    assert "start failed" in text and "Greedy agreement" in text and "100.0" in text
    assert report.plot([r for r in rows if "ok" in r], tmp_path / "p.png") in (True, False)


def test_metrics_helpers() -> None:
    def decode(running: int, tput: float) -> str:
        return (f"[2026-11-24 16:46:56] Decode batch, #running-req: {running}, #token: 33024, token usage: 0.01, "
                f"cuda graph: True, gen throughput (token/s): {tput}, #queue-req: 0\n")

    prefill = ("[x] Prefill batch, #new-seq: 6, #new-token: 8192, #cached-token: 677, token usage: 0.37, "
               "#running-req: 61, #queue-req: 0, input throughput (token/s): 42621.07\n")
    log = (decode(72, 100.0) + decode(64, 6400.0) + "[x] Decode batch [12], #running-req: 32, #token: 1, token usage: "
           "0.00, gen throughput (token/s): 3200.0, #queue-req: 0\nnoise\n" + prefill + prefill + decode(72, 221.86)
           + decode(72, 7200.0))
    # the first line (its interval began before the text) and the one after the prefills are left out
    steps = client.decode_steps(log)
    assert steps == [(64, pytest.approx(10.0)), (32, pytest.approx(10.0)), (72, pytest.approx(10.0))]
    assert client.percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert client.agreement([[1, 2, 3], [4, 5]], [[1, 2, 0], [4, 5]]) == (pytest.approx(80.0), pytest.approx(50.0))
    assert client.prefix_agreement([[1, 2, 3]], [[1, 9, 3]]) == 1.0
    r = client.Result(ok=True, prompt_len=10, output_len=11, ttft_s=0.1, latency_s=1.1)
    assert r.tpot_s == pytest.approx(0.1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_process_group_is_killed(tmp_path: Path) -> None:
    # parent python starts a grandchild sleeper; both must die with the group
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            "print(p.pid, flush=True); time.sleep(600)")
    proc = ManagedProcess([sys.executable, "-c", code], tmp_path / "child.log", term_timeout_s=5).start()
    try:
        deadline = time.monotonic() + 20
        grandchild = None
        while time.monotonic() < deadline and grandchild is None:
            text = (tmp_path / "child.log").read_text().strip()
            grandchild = int(text) if text else None
            time.sleep(0.05)
        assert grandchild is not None and proc.alive()
    finally:
        t0 = time.monotonic()
        proc.stop()
    assert time.monotonic() - t0 < 20
    assert not proc.alive()
    time.sleep(0.2)
    assert not _pid_alive(grandchild)


def test_sleep_child_killed_with_context_manager(tmp_path: Path) -> None:
    with ManagedProcess([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "s.log") as proc:
        pid = proc.pid
        assert proc.alive()
    assert not proc.alive() and not _pid_alive(pid)


def test_trace_default_and_missing_trace(tmp_path: Path) -> None:
    import ab_serving

    assert ab_serving.DEFAULT_TRACE == REPO / "data" / "traces" / "mooncake_conversation_trace.jsonl"
    args = ab_serving.parse_args(["--workloads", "mooncake", "--trace", str(tmp_path / "absent.jsonl")])
    with pytest.raises(FileNotFoundError, match="--trace"):
        ab_serving.build_workloads(args)


def test_end_to_end_against_fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ab_serving

    fake = str(REPO / "tests" / "fake_sglang_server.py")

    def fake_cmd(cfg: ServerConfig) -> list[str]:
        extra = ["--die-after", "0.5"] if cfg.attention_backend == "broken" else []
        return [sys.executable, fake, "--port", str(cfg.port), *extra]

    monkeypatch.setattr(ab_serving, "server_command", fake_cmd)
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps({"timestamp": i, "input_length": 600, "output_length": 3,
                                           "hash_ids": [1, i]}) for i in range(4)) + "\n")
    out = tmp_path / "ab"
    rc = ab_serving.main(["--backends", "flashinfer,broken,pat", "--out", str(out), "--groups", "2",
                          "--prompts-per-group", "3", "--system-len", "32", "--question-len", "4", "--output-len", "5",
                          "--trace", str(trace), "--trace-n", "4", "--concurrency", "3", "--budget-s", "120",
                          "--check-tokens", "4", "--port", "32100"])
    assert rc == 1  # one backend failed to start
    rows = list(csv.DictReader(open(out / "results.csv")))
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["workload"]) for r in ok} == {(b, w) for b in ("flashinfer", "pat")
                                                           for w in ("shared_prefix", "mooncake")}
    assert all(r["ok"] == r["requests"] for r in ok)
    assert [r["status"] for r in rows if r["backend"] == "broken"] == ["start failed"] * 2
    md = (out / "results.md").read_text()
    assert "| pat | flashinfer | 100.0 | 100.0 |" in md
    # the check asked for logprobs: equal tokens from the same deterministic server, so no gap
    assert "max abs logprob diff" in md and "| pat | flashinfer | 100.0 | 100.0 | 4.0 | 0 | 0 |" in md
    assert (out / "server-broken.log").read_text().strip().endswith("failing on purpose")


# ------------------------------------------------------------------------------------------- profile + timeline
def _synthetic_trace(with_plan: bool = True) -> dict:
    """Four overlapped decode steps, 1000 us apart (T = 1000 * i):

    host: plan_step [T+100, T+400], cudaGraphLaunch [T+410, T+420] (correlation i+1);
    GPU: step 0: pat_pack_forward [450, 1000], pat_merge [1000, 1250]; step 1: [1450, 2000], [2000, 2300];
    step 2: [2500, 3000], [3000, 3100]; step 3: a GEMM [3400, 3900] and a memcpy without a launch record
    [3950, 3960]. GPU busy during plan_step: 0, 150/300, 200/300, 0; gaps before steps 1..3: 200, 200, 300 us.
    """
    pid, tid = 4242, 4242
    ev: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "python"}},
        {"ph": "i", "name": "instant", "pid": pid, "tid": tid, "ts": 5.0},
    ]
    gpu = {0: [("pat_pack_forward", 450, 1000), ("pat_merge", 1000, 1250)],
           1: [("pat_pack_forward", 1450, 2000), ("pat_merge", 2000, 2300)],
           2: [("pat_pack_forward", 2500, 3000), ("pat_merge", 3000, 3100)],
           3: [("ampere_bf16_gemm", 3400, 3900)]}
    base = 1_000_000.0  # absolute microseconds, as in real traces
    for i in range(4):
        t = base + 1000 * i
        if with_plan:
            ev.append({"ph": "X", "cat": "user_annotation", "name": "pat::plan_step", "pid": pid, "tid": tid,
                       "ts": t + 100, "dur": 300.0, "args": {"External id": i}})
            ev.append({"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "pid": pid, "tid": tid, "ts": t + 150,
                       "dur": 10.0})
            # the profiler mirrors record_function ranges on the GPU lane: not GPU work
            ev.append({"ph": "X", "cat": "gpu_user_annotation", "name": "pat::plan_step", "pid": 0, "tid": 7,
                       "ts": t + 100, "dur": 2000.0})
        ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "pid": pid, "tid": tid,
                   "ts": t + 410, "dur": 10.0, "args": {"correlation": i + 1}})
        for name, s, e in gpu[i]:
            ev.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": base + s,
                       "dur": float(e - s), "args": {"correlation": i + 1, "stream": 7, "device": 0}})
    ev.append({"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH", "pid": 0, "tid": 7, "ts": base + 3950,
               "dur": 10.0, "args": {"stream": 7}})
    return {"schemaVersion": 1, "traceEvents": ev}


def test_timeline_overlap_and_gaps(tmp_path: Path) -> None:
    import timeline

    trace = timeline.parse(_synthetic_trace()["traceEvents"])
    assert trace.step_source == "pat::plan_step" and len(trace.steps) == 4 and len(trace.gpu) == 8
    assert timeline.assign_steps(trace) == [0, 0, 1, 1, 2, 2, 3, 3]
    s = timeline.analyze(trace, steps=4, first=0, path="x")
    assert [r.step for r in s.rows] == [0, 1, 2, 3]
    assert [r.busy_frac for r in s.rows] == pytest.approx([0.0, 0.5, 2 / 3, 0.0])
    assert [r.events for r in s.rows] == [2, 2, 2, 2] and [r.pat_kernels for r in s.rows] == [2, 2, 2, 0]
    assert s.gaps == pytest.approx([200.0, 200.0, 300.0])
    d = s.as_dict()
    assert d["gap_median_us"] == pytest.approx(200.0) and d["gap_max_us"] == pytest.approx(300.0)
    assert d["busy_median_pct"] == pytest.approx(25.0) and d["busy_min_pct"] == pytest.approx(0.0)
    assert d["gpu_span_us"] == pytest.approx(3510.0) and d["gpu_idle_us"] == pytest.approx(750.0)
    assert s.rows[0].host_start == pytest.approx(1_000_100.0) and s.t0 == s.rows[0].host_start
    # default window: centred, clamped to the steps present
    assert [r.step for r in timeline.analyze(trace, steps=2).rows] == [1, 2]
    assert len(timeline.analyze(trace, steps=10).rows) == 4
    table = timeline.format_table(s)
    assert "| 1 | 1.000 | 1.300 | 300.0 | 50.0 | 2 | 2 |" in table and "max 300.0 us" in table


def test_timeline_attention_share_per_step() -> None:
    """Each step's attention kernels (PAT's, FlashInfer's decode and merge, fa3's, SGLang's Triton decode) over its GPU
    busy time; FlashInfer's norm kernel and a GEMM are not attention, overlapping events are counted once."""
    import timeline

    trace = timeline.parse(_synthetic_trace()["traceEvents"])
    s = timeline.analyze(trace, steps=4, first=0)
    assert [r.attention_us for r in s.rows] == pytest.approx([800.0, 850.0, 600.0, 0.0])
    assert [r.gpu_busy_us for r in s.rows] == pytest.approx([800.0, 850.0, 600.0, 510.0])
    assert s.as_dict()["attention_median_pct"] == pytest.approx(100.0)
    assert "| 800.0 | 100.0 |" in timeline.format_table(s)

    pid = 1
    names = [("void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>", 0, 10),
             ("void flashinfer::BatchDecodeWithPagedKVCacheKernel<...>", 10, 40),
             ("void flashinfer::MergeStatesKernel<...>", 40, 45),
             ("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<...>>>", 45, 75),
             ("_fwd_grouped_kernel_stage1", 75, 85),
             ("sm90_xmma_gemm_bf16bf16_bf16f32", 80, 100)]  # overlaps the Triton kernel by 5 us
    ev = [{"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "pid": pid, "tid": 1, "ts": 0.0, "dur": 1.0,
           "args": {"correlation": 9}}]
    ev += [{"ph": "X", "cat": "kernel", "name": n, "pid": 0, "tid": 7, "ts": float(a), "dur": float(b - a),
            "args": {"correlation": 9, "stream": 7}} for n, a, b in names]
    row = timeline.analyze(timeline.parse(ev), steps=1).rows[0]
    assert row.attention_us == pytest.approx(30 + 5 + 30 + 10)
    assert row.gpu_busy_us == pytest.approx(100.0)


def test_timeline_interval_helpers() -> None:
    import timeline

    merged = timeline.merge_intervals([(5, 7), (0, 2), (1, 3), (7, 8)])
    assert merged == [(0, 3), (5, 8)]
    assert timeline.covered(merged, 2, 6) == pytest.approx(2.0)
    assert timeline.covered(merged, -5, 100) == pytest.approx(6.0)
    assert timeline.covered(merged, 3, 5) == 0.0


def test_timeline_without_plan_ranges_uses_graph_launches() -> None:
    import timeline

    trace = timeline.parse(_synthetic_trace(with_plan=False)["traceEvents"])
    assert trace.step_source == "cudaGraphLaunch" and len(trace.steps) == 4
    s = timeline.analyze(trace, steps=4, first=0)
    assert s.gaps == pytest.approx([200.0, 200.0, 300.0])
    assert timeline.analyze(timeline.parse([]), steps=3).rows == []


def test_timeline_cli_writes_png_and_table(tmp_path: Path) -> None:
    import gzip

    import timeline

    folder = tmp_path / "prof"
    folder.mkdir()
    old = folder / "old-TP-0.trace.json.gz"
    with gzip.open(old, "wt") as fh:
        json.dump({"traceEvents": []}, fh)
    os.utime(old, (time.time() - 100, time.time() - 100))
    new = folder / "pat-TP-0.trace.json.gz"
    with gzip.open(new, "wt") as fh:
        json.dump(_synthetic_trace(), fh)
    assert timeline.find_trace(folder) == new
    png = tmp_path / "tl" / "timeline.png"
    rc = timeline.main([str(folder), str(png), "--steps", "3"])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = png.with_suffix(".md").read_text()
    assert "pat-TP-0.trace.json.gz" in md and "GPU gap between consecutive steps" in md
    plain = tmp_path / "t.json"
    plain.write_text(json.dumps(_synthetic_trace()["traceEvents"]))  # a bare event list
    assert timeline.main([str(plain), str(tmp_path / "p.png"), "--first", "1", "--steps", "2"]) == 0
    assert timeline.main([str(tmp_path / "missing"), str(tmp_path / "m.png")]) == 2


def test_start_profile_request_body(tmp_path: Path) -> None:
    from ab import profile

    body = profile.profile_request(tmp_path / "profile" / "pat", 8, profile_id="pat")
    assert body == {
        "output_dir": str((tmp_path / "profile" / "pat").resolve()),
        "num_steps": 8,
        "activities": ["CPU", "GPU"],
        "with_stack": False,
        "record_shapes": False,
        "profile_by_stage": False,
        "merge_profiles": False,
        "profile_id": "pat",
    }
    assert json.loads(json.dumps(body)) == body
    assert Path(profile.profile_request(Path("rel"), 2)["output_dir"]).is_absolute()
    assert "profile_id" not in profile.profile_request(tmp_path, 2)
    with pytest.raises(ValueError):
        profile.profile_request(tmp_path, 0)
    assert profile.trace_name("pat") == "pat-TP-0.trace.json.gz"
    assert profile.profile_env(tmp_path)["SGLANG_TORCH_PROFILER_DIR"] == str(tmp_path.resolve())
    # SGLang's HTTP server parses the body into its ProfileReq through pydantic (FastAPI Body): same path here
    try:
        import pydantic
        from sglang.srt.managers.io_struct import ProfileReq
    except Exception:  # CPU installs without all of SGLang's deps
        return
    req = pydantic.TypeAdapter(ProfileReq).validate_json(json.dumps(body))
    assert req.num_steps == 8 and req.activities == ["CPU", "GPU"] and req.with_stack is False
    assert req.output_dir == body["output_dir"] and req.profile_id == "pat" and req.start_step is None


def test_profile_trigger_waits_for_steady_state() -> None:
    from ab import profile

    posted: list[tuple[int, dict]] = []

    def poster(port: int, body: dict, timeout: float) -> tuple[bool, str]:
        posted.append((port, body))
        return True, "Start profiling."

    progress = client.Progress()
    trig = profile.ProfileTrigger(1234, {"num_steps": 3}, progress, target_first_tokens=3, max_wait_s=30,
                                  poster=poster)
    trig.start()
    progress.on_first_token()
    progress.on_first_token()
    time.sleep(0.1)
    assert not posted and trig.is_alive()
    progress.on_first_token()
    trig.join(5)
    assert posted == [(1234, {"num_steps": 3})] and trig.ok and "3 first tokens" in trig.reason

    # cancelled before the steady state: nothing is posted
    trig2 = profile.ProfileTrigger(1, {}, client.Progress(), 5, max_wait_s=30, poster=poster)
    trig2.start()
    trig2.cancel()
    trig2.join(5)
    assert not trig2.is_alive() and trig2.reason == "cancelled" and len(posted) == 1

    # a poster that raises is reported, not raised
    def bad(*_: object) -> tuple[bool, str]:
        raise RuntimeError("boom")

    trig3 = profile.ProfileTrigger(1, {}, client.Progress(), 1, max_wait_s=0.05, poster=bad)
    trig3.start()
    trig3.join(5)
    assert not trig3.ok and "boom" in trig3.message and trig3.reason.startswith("waited")


def test_profile_post_to_closed_port_and_trace_wait(tmp_path: Path) -> None:
    import gzip
    import socket

    from ab import profile

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, msg = profile.start_profile(port, {"num_steps": 1}, timeout_s=2)
    assert not ok and msg
    assert profile.wait_for_trace(tmp_path, 0.0, timeout_s=0.2, poll_s=0.05) is None
    p = tmp_path / "x-TP-0.trace.json.gz"
    with gzip.open(p, "wt") as fh:
        json.dump({"traceEvents": []}, fh)
    assert profile.wait_for_trace(tmp_path, 0.0, timeout_s=5, poll_s=0.05) == p
    assert profile.wait_for_trace(tmp_path, time.time() + 60, timeout_s=0.1, poll_s=0.05) is None
    p.write_bytes(gzip.compress(b'{"traceEvents": [' * 50)[:-8])  # truncated gzip: not complete
    assert profile.wait_for_trace(tmp_path, 0.0, timeout_s=0.3, poll_s=0.05) is None


def _tiny_ab_args(tmp_path: Path, backends: str, port: int) -> list[str]:
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps({"timestamp": i, "input_length": 600, "output_length": 3,
                                           "hash_ids": [1, i]}) for i in range(4)) + "\n")
    return ["--backends", backends, "--out", str(tmp_path / "ab"), "--groups", "1", "--prompts-per-group", "2",
            "--system-len", "16", "--question-len", "4", "--output-len", "3", "--trace", str(trace), "--trace-n", "4",
            "--concurrency", "4", "--budget-s", "120", "--no-check", "--port", str(port)]


def test_end_to_end_profile_failure_does_not_break_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ab_serving

    fake = str(REPO / "tests" / "fake_sglang_server.py")
    monkeypatch.setattr(ab_serving, "server_command", lambda cfg: [sys.executable, fake, "--port", str(cfg.port)])
    monkeypatch.setenv("PAT_SGLANG_MIN_SAVED_FRACTION", "0.0476")  # a setting the command line does not show
    rc = ab_serving.main(_tiny_ab_args(tmp_path, "pat", 32400) + ["--profile-steps", "4"])
    assert rc == 0  # the fake server has no /start_profile
    run = json.loads((tmp_path / "ab" / "run.json").read_text())
    assert "PAT_SGLANG_MIN_SAVED_FRACTION=0.0476" in run["env"]
    environment = [line for line in (tmp_path / "ab" / "results.md").read_text().splitlines()
                   if line.startswith("- environment: ")]
    assert len(environment) == 1 and "PAT_SGLANG_MIN_SAVED_FRACTION=0.0476" in environment[0]
    prof = run["servers"][0]["profile"]
    assert prof["workload"] == "mooncake" and prof["status"].startswith("start_profile failed")
    assert prof["pass_ok"] == prof["pass_requests"] == 4
    rows = list(csv.DictReader(open(tmp_path / "ab" / "results.csv")))
    assert all(r["status"] == "ok" for r in rows) and len(rows) == 2
    assert "start_profile failed" in (tmp_path / "ab" / "results.md").read_text()


def test_end_to_end_profile_writes_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    import ab_serving
    from ab import profile

    fake = str(REPO / "tests" / "fake_sglang_server.py")
    monkeypatch.setattr(ab_serving, "server_command", lambda cfg: [sys.executable, fake, "--port", str(cfg.port)])
    bodies: list[dict] = []

    def fake_start(port: int, body: dict, timeout_s: float = 60.0) -> tuple[bool, str]:
        # what the SGLang scheduler does: write <output_dir>/<profile_id>-TP-0.trace.json.gz after N steps
        bodies.append(body)
        out = Path(body["output_dir"]) / profile.trace_name(body["profile_id"])
        with gzip.open(out, "wt") as fh:
            json.dump(_synthetic_trace(), fh)
        return True, "Start profiling."

    monkeypatch.setattr(profile, "start_profile", fake_start)
    # a backend label with a delegate: every file the profile writes has a plain name (a device run returns only those)
    rc = ab_serving.main(_tiny_ab_args(tmp_path, "pat@flashinfer", 32500)
                         + ["--profile-steps", "3", "--workloads", "shared"])
    assert rc == 0
    out = tmp_path / "ab"
    folder = out / "profile-pat-flashinfer"
    assert bodies and bodies[0]["num_steps"] == 3 and bodies[0]["output_dir"] == str(folder.resolve())
    prof = json.loads((out / "run.json").read_text())["servers"][0]["profile"]
    assert prof["status"] == "ok" and prof["workload"] == "shared_prefix"
    assert prof["trace"] == "profile-pat-flashinfer/pat-flashinfer-TP-0.trace.json.gz" and prof["steps_shown"] == 3
    assert (folder / "timeline.png").exists() and (folder / "timeline.md").exists()
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in folder.iterdir())
    md = (out / "results.md").read_text()
    assert "profile-pat-flashinfer/timeline.png" in md and "GPU gap between steps median 200 us" in md
    # steps 0-2 run attention alone (forward + merge: 800, 850 and 600 us)
    assert "attention kernels median 800 us per step, 100.0% of its GPU busy time" in md


def test_workload_progress_bar_counts_requests() -> None:
    """The measured workloads show a tqdm bar of finished requests (on a terminal; silent otherwise)."""
    from tqdm import tqdm

    bar = client._bar(5, "[pat] shared_prefix")
    assert isinstance(bar, tqdm)
    assert bar.disable or (bar.total == 5 and bar.desc.startswith("[pat] shared_prefix"))  # off when not a terminal
    bar.update(2)
    bar.close()


def test_workload_status_names_a_budget_cut() -> None:
    """A workload whose requests were cut by a deadline the run budget set says so (its logged decode steps stand);
    real failures, and cuts by the workload's own timeout, keep the first error."""
    ok = client.Result(ok=True, prompt_len=4, output_len=3)
    cut = client.Result(ok=False, prompt_len=4, error="timeout while streaming")
    skipped = client.Result(ok=False, prompt_len=4, error="skipped")
    broken = client.Result(ok=False, prompt_len=4, error="HTTPException: boom")
    assert client.workload_status([ok, ok], 10.0, 60.0, by_budget=True) == "ok"
    assert client.workload_status([ok, cut, skipped], 15.4, 15.0, by_budget=True) == (
        "cut by --budget-s after 15 s: 2 of 3 requests unfinished")
    assert client.workload_status([cut, skipped], 90.1, 90.0, by_budget=False) == "2 failed: timeout while streaming"
    assert client.workload_status([cut, broken], 15.4, 15.0, by_budget=True) == "2 failed: timeout while streaming"
    assert client.workload_status([broken], 3.0, 15.0, by_budget=True) == "1 failed: HTTPException: boom"


def test_backend_labels() -> None:
    from ab.server import LABEL_OPTIONS, BackendLabel, backend_labels, file_tag

    assert BackendLabel.parse("fa3") == BackendLabel("fa3", "fa3", {})
    assert BackendLabel.parse("pat") == BackendLabel("pat", "pat", {})
    label = BackendLabel.parse(" pat@fa3+all ")
    assert label.attention_backend == "pat" and label.label == "pat@fa3+all"
    assert label.env == {"PAT_SGLANG_DELEGATE": "fa3", **LABEL_OPTIONS["all"]}
    assert BackendLabel.parse("pat+all").env == LABEL_OPTIONS["all"]  # SGLang's default delegate, gate off
    assert BackendLabel.parse("pat@fa3+delegate").env == {"PAT_SGLANG_DELEGATE": "fa3", **LABEL_OPTIONS["delegate"]}
    from pat_sglang.decode_step import REMAKE_PLANS_ENV

    assert BackendLabel.parse("pat@fa3+remade").env == {"PAT_SGLANG_DELEGATE": "fa3", REMAKE_PLANS_ENV: "1"}
    for bad in ("fa3@triton", "fa3+all", "pat@", "@fa3", "pat@fa3+fast", "pat+"):
        with pytest.raises(ValueError, match="backend label"):
            BackendLabel.parse(bad)
    assert backend_labels("fa3, pat@fa3,pat@fa3+all,") == ["fa3", "pat@fa3", "pat@fa3+all"]
    for bad, why in (("fa3,fa3", "named twice"), (" , ", "no backend"), ("fa3,pat@fa3+x", "unknown option")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            backend_labels(bad)
    assert file_tag("pat@fa3+all") == "pat-fa3-all"


def test_bad_backend_label_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    import ab_serving

    with pytest.raises(SystemExit) as stop:
        ab_serving.parse_args(["--backends", "flashinfer,pat@fa3+nogate"])
    assert stop.value.code == 2 and "unknown option 'nogate'" in capsys.readouterr().err


def test_logprob_gap_over_the_common_run() -> None:
    a = client.Generated([[1, 2, 3], [4, 5]], [[-0.1, -0.2, -0.3], [-1.0, -2.0]])
    b = client.Generated([[1, 2, 9], [4, 5]], [[-0.15, -0.2, -5.0], [-1.0, -2.5]])
    gap_max, gap_mean = client.logprob_gap(a, b)
    # pair 0: positions 0-1 (they differ at 2, which is not compared); pair 1: both positions
    assert gap_max == pytest.approx(0.5) and gap_mean == pytest.approx((0.05 + 0 + 0 + 0.5) / 4)
    assert all(math.isnan(x) for x in client.logprob_gap(a, client.Generated(b.ids)))
    row = client.agreement_row("pat", "fa3", a, b, 3)
    assert row["max_logprob_diff"] == pytest.approx(0.5) and row["token_agree_pct"] == pytest.approx(100 * 4 / 5)
    assert row["mean_common_prefix"] == pytest.approx(2.0) and row["sequences"] == 2


def test_pat_step_stats_per_point() -> None:
    """The backend's own stats line (``StepStats.summary``), read back per point."""
    from pat_sglang.decode_step import StepCounters, StepPhases
    from pat_sglang.step_stats import StepStats, describe_step

    def line(steps: int, mean_ms: float, max_ms: float, declined: int) -> str:
        stats = StepStats(steps=steps, plan_s_total=steps * mean_ms / 1e3, plan_s_max=max_ms / 1e3)
        return f"[t] {stats.summary(StepCounters(declined=declined))}\n"

    before = line(100, 0.2, 3.0, 10) + "noise\n" + line(200, 0.15, 3.0, 20)
    during = line(300, 0.2, 3.5, 50) + line(400, 0.175, 3.5, 80)
    got = client.pat_step_stats(before, during)
    # the point's 200 steps: (400 * 0.175 - 200 * 0.15) / 200 ms each, 60 of them on the delegate
    assert got == {"pat_steps": 200.0, "pat_plan_ms_mean": pytest.approx(0.2), "pat_plan_ms_max_since_start": 3.5,
                   "pat_declined_pct": pytest.approx(30.0), "pat_gc_steps": 0.0, "pat_gc_ms_max_since_start": 0.0,
                   "pat_plan_ms_max_no_gc_since_start": 0.0, "pat_host_ms_max_no_gc_since_start": 0.0,
                   "pat_plan_cpu_ms_max_since_start": 0.0,
                   "pat_publish_ms_mean": 0.0, "pat_publish_ms_max_since_start": 0.0,
                   "pat_host_ms_max_since_start": 0.0, "pat_plan_ms_max": 0.0, "pat_host_ms_max": 0.0,
                   "pat_host_ms_p50_since_start": 0.0, "pat_host_ms_p90_since_start": 0.0,
                   "pat_host_ms_p99_since_start": 0.0}
    # steps recorded with and without a collection: the GC clause read back per point
    from pat_sglang.gc_pauses import GcMark

    stats = StepStats()
    stats.record(0.0004, GcMark(0, 0.0), 0.0003)
    first = f"[t] {stats.summary(StepCounters())}\n"
    stats.record(0.0031, GcMark(1, 0.0025), 0.0029)
    stats.record(0.0012, GcMark(0, 0.0), 0.0005)  # a step that waited: 1.2 ms wall, 0.5 ms of its own CPU time
    got = client.pat_step_stats(first, f"[t] {stats.summary(StepCounters())}\n")
    assert got["pat_steps"] == 2.0 and got["pat_gc_steps"] == 1.0
    assert got["pat_plan_ms_max_since_start"] == pytest.approx(3.1)
    assert got["pat_gc_ms_max_since_start"] == pytest.approx(2.5)
    assert got["pat_plan_ms_max_no_gc_since_start"] == pytest.approx(1.2)
    assert got["pat_plan_cpu_ms_max_since_start"] == pytest.approx(2.9)
    # a collection during a step's publishing only: a GC step, its planning still the planner's own worst, and
    # the slowest step with no collection anywhere read apart; the slowest step's description names the collecting
    stats.record(0.0009, GcMark(0, 0.0), 0.0009, lambda: describe_step(
        8, StepPhases(0.0004, 0.0004, "edited"), 0.0001, None, 0.0030, 0.0026), 0.0030, GcMark(1, 0.0026))
    stats.record(0.0002, None, 0.0002, publish_seconds=0.0018)
    after = client.pat_step_stats(first, f"[t] {stats.summary(StepCounters())}\n")
    assert after["pat_gc_steps"] == 2.0 and after["pat_gc_ms_max_since_start"] == pytest.approx(2.6)
    assert after["pat_plan_ms_max_no_gc_since_start"] == pytest.approx(1.2)  # the 0.9 ms planning had no collection
    assert after["pat_host_ms_max_no_gc_since_start"] == pytest.approx(2.0)  # 0.2 + 1.8, not the 3.9 ms step
    assert after["pat_host_ms_max_since_start"] == pytest.approx(3.9)
    assert after["pat_slowest_step"].endswith("no plan (delegate), of it collecting garbage 2.600 ms")
    assert after["pat_plan_cpu_ms_max_since_start"] == pytest.approx(2.9)  # the clause after the new one still read
    # since the fifty-fourth session: the publishing routes' counts after the publishing clause, the route in the
    # slowest step's description; the line reads back as before
    routes = "batches published unchanged 5, by rows 3 (1 of them on the Python read), read in full 1"
    stats.record(0.0001, None, 0.0001, lambda: describe_step(
        8, StepPhases(0.0004, 0.0004, "edited"), 0.0001, None, 0.0050, 0.0, "by rows"), 0.0050)
    routed = client.pat_step_stats(first, f"[t] {stats.summary(StepCounters(), routes)}\n")
    assert routed["pat_steps"] == 5.0 and routed["pat_publish_ms_max_since_start"] == pytest.approx(5.0)
    assert routed["pat_gc_steps"] == 2.0 and routed["pat_plan_cpu_ms_max_since_start"] == pytest.approx(2.9)
    assert routed["pat_slowest_step"].startswith("batch 8, publish 5.000 ms (by rows), forest edited")
    earlier = first.replace(", with publishing 0.400 ms", "")  # a line of the sessions before the new clause
    assert earlier != first and "pat_host_ms_max_no_gc_since_start" not in client.pat_step_stats("", earlier)
    assert client.pat_step_stats("", earlier)["pat_plan_cpu_ms_max_since_start"] == pytest.approx(0.3)
    gc_only = first.replace("; the planning thread's own CPU time at most 0.300 ms in one step", "")
    assert "pat_plan_cpu_ms_max_since_start" not in client.pat_step_stats("", gc_only)  # the eleventh session's line
    old_line = ("[t] PAT: 10 decode steps, host planning 0.050 ms mean / 0.500 ms max; plans reused as they were 0; "
                "batches sharing too little, served by the delegate 2 (2 decided without planning)\n")
    assert "pat_gc_steps" not in client.pat_step_stats("", old_line)  # lines before the clause still parse
    assert client.pat_step_stats("", during)["pat_steps"] == 400.0  # no line before: since the start
    assert client.pat_step_stats(before, "Decode batch ...\n") == {}  # no line during the point


def test_the_steps_host_time_percentiles_are_read_back() -> None:
    """The stats line's per-step percentiles of publishing + planning (``HostTimeBins``), as the line writes them
    and the client reads them back: within half a geometric bin of the exact nearest-rank percentile."""
    from pat_sglang.decode_step import StepCounters
    from pat_sglang.step_stats import HOST_BINS_PER_OCTAVE, StepStats

    rng = np.random.default_rng(58)
    plan_s = rng.lognormal(np.log(80e-6), 0.6, 3000)  # ~80 us steps with a long tail
    publish_s = rng.lognormal(np.log(40e-6), 0.8, 3000)
    stats = StepStats()
    for p, q in zip(plan_s, publish_s, strict=True):
        stats.record(float(p), None, float(p), publish_seconds=float(q))
    got = client.pat_step_stats("", f"[t] {stats.summary(StepCounters())}\n")
    host_ms = np.sort(1e3 * (plan_s + publish_s))
    half_bin = 2.0 ** (0.5 / HOST_BINS_PER_OCTAVE)
    for q in (50, 90, 99):
        exact = host_ms[int(np.ceil(q / 100 * host_ms.size)) - 1]
        read = got[f"pat_host_ms_p{q}_since_start"]
        assert exact / half_bin * 0.999 <= read <= exact * half_bin * 1.001 + 5e-4, (q, exact, read)
    assert got["pat_host_ms_p50_since_start"] < got["pat_host_ms_p90_since_start"] < got["pat_host_ms_p99_since_start"]
    assert got["pat_host_ms_max_since_start"] == pytest.approx(host_ms[-1], rel=1e-3, abs=1e-3)


def test_host_time_bins_edges() -> None:
    """Steps under the first bin and past the last one are counted, not dropped; no step reads as 0."""
    from pat_sglang.step_stats import HOST_BIN_FIRST_S, HOST_BINS, HostTimeBins

    bins = HostTimeBins()
    assert bins.percentile(50) == 0.0
    for s in (0.0, 1e-9, 5.0, 5.0):
        bins.add(s)
    assert bins.total == 4 and bins.counts[0] == 2 and bins.counts[HOST_BINS - 1] == 2
    assert bins.percentile(50) == pytest.approx(HOST_BIN_FIRST_S, rel=0.03)
    assert bins.percentile(99) > 0.9  # the last bin, ~1 s


def test_the_points_own_maxima_come_from_the_lines_logged_during_it() -> None:
    """Each stats line carries the maxima of the steps since the line before (``new_interval`` after a line is
    logged): a point's own maxima are the largest over the lines logged during it, not the server's since its start
    (here a 4 ms step of the start's first wave, before the point)."""
    from pat_sglang.decode_step import StepCounters
    from pat_sglang.step_stats import StepStats

    stats = StepStats()
    lines = []

    def log_line() -> None:
        lines.append(f"[t] {stats.summary(StepCounters())}\n")
        stats.new_interval()

    stats.record(0.0040, None, 0.0040, publish_seconds=0.0010)  # the first wave: 5 ms with its publishing
    stats.record(0.0003, None, 0.0003)
    log_line()
    stats.record(0.0009, None, 0.0009, publish_seconds=0.0004)
    log_line()
    stats.record(0.0012, None, 0.0012, publish_seconds=0.0001)
    stats.record(0.0002, None, 0.0002)
    log_line()
    assert "since the last line: 2 steps, host planning at most 1.200 ms, with publishing 1.300 ms" in lines[2]
    got = client.pat_step_stats(lines[0], lines[1] + lines[2])
    assert got["pat_steps"] == 3.0
    assert got["pat_plan_ms_max"] == pytest.approx(1.2) and got["pat_host_ms_max"] == pytest.approx(1.3)
    assert got["pat_plan_ms_max_since_start"] == pytest.approx(4.0)
    assert got["pat_host_ms_max_since_start"] == pytest.approx(5.0)
    # a line of an earlier version (no clause): no per-point maxima, the rest as before
    older = lines[2].replace("; since the last line: 2 steps, host planning at most 1.200 ms, with publishing "
                             "1.300 ms", "")
    got = client.pat_step_stats(lines[0], older)
    assert "pat_plan_ms_max" not in got and got["pat_plan_ms_max_since_start"] == pytest.approx(4.0)


def test_the_slowest_step_is_described_and_read_back() -> None:
    """``StepStats.record`` asks for a description only when a step is the slowest so far, keeps the slowest one's,
    and the sweep reads it back from the stats line (lines without the clause parse as before)."""
    from pat_sglang.decode_step import StepCounters, StepPhases
    from pat_sglang.step_stats import StepStats, describe_step

    asked: list[float] = []

    def describe(seconds: float):
        def text() -> str:
            asked.append(seconds)
            return describe_step(64, StepPhases(0.0004, seconds - 0.0005, "built", seconds > 0.003), 0.0001, None)
        return text

    stats = StepStats()
    for seconds in (0.001, 0.003, 0.002, 0.0031, 0.0005):
        stats.record(seconds, None, seconds, describe(seconds))
    assert asked == [0.001, 0.003, 0.0031]  # only new maxima are described
    assert stats.slowest == ("batch 64, publish 0.000 ms, forest built 0.400 ms, plan_forest 2.600 ms (split search), "
                             "load 0.100 ms, no plan (delegate)")
    got = client.pat_step_stats("", f"[t] {stats.summary(StepCounters())}\n")
    assert got["pat_slowest_step"] == stats.slowest and got["pat_plan_ms_max_since_start"] == pytest.approx(3.1)
    assert "pat_slowest_step" not in client.pat_step_stats("", f"[t] {StepStats().summary(StepCounters())}\n")


def test_publishing_is_counted_with_the_step() -> None:
    """A step's publishing time (the scheduler patch, before the backend's planning) enters the stats line: its own
    mean over a point and max, and the slowest step by publishing and planning together, whose description names it."""
    from pat_sglang.decode_step import StepCounters, StepPhases
    from pat_sglang.step_stats import StepStats, describe_step

    stats = StepStats()
    stats.record(0.0010, None, 0.0010, publish_seconds=0.0002)
    first = f"[t] {stats.summary(StepCounters())}\n"
    for plan_s, publish_s in ((0.0020, 0.0001), (0.0012, 0.0015), (0.0004, 0.0)):  # the second is the slowest in all
        stats.record(plan_s, None, plan_s, lambda p=plan_s, q=publish_s: describe_step(
            8, StepPhases(p / 2, p / 2, "edited"), 0.0, None, q), publish_s)
    got = client.pat_step_stats(first, f"[t] {stats.summary(StepCounters())}\n")
    assert got["pat_steps"] == 3.0 and got["pat_publish_ms_mean"] == pytest.approx((0.1 + 1.5 + 0.0) / 3, abs=1e-3)
    assert got["pat_publish_ms_max_since_start"] == pytest.approx(1.5)
    assert got["pat_plan_ms_max_since_start"] == pytest.approx(2.0)  # planning alone: the first step
    assert got["pat_host_ms_max_since_start"] == pytest.approx(2.7)  # the two together: the second
    assert got["pat_slowest_step"].startswith("batch 8, publish 1.500 ms, forest edited 0.600 ms")


def test_step_stats_full_batch_needs_several_lines() -> None:
    """The full batch is the largest seen on at least FULL_BS_MIN_LINES lines: one line at a transient batch size
    (whose interval may be mostly prefill) does not set the step time."""
    k = client.FULL_BS_MIN_LINES
    steady = [(200, 90.0 + i) for i in range(k)]
    got = client.step_stats([(64, 20.0), *steady, (218, 2622.0)])
    assert got["step_full_bs"] == 200.0 and got["step_full_lines"] == float(k)
    assert got["step_ms_p50_full"] == pytest.approx(90.0 + (k - 1) / 2)
    assert got["decode_log_lines"] == float(k + 2)
    # no batch size that common: the largest seen at all
    rare = client.step_stats([(64, 20.0), (218, 2622.0)])
    assert rare["step_full_bs"] == 218.0 and rare["step_ms_p50_full"] == pytest.approx(2622.0)
    assert client.step_stats([])["step_full_bs"] == 0.0


def test_recorded_env_keeps_pat_and_sglang_settings_sorted() -> None:
    from ab import report

    env = {"PATH": "/bin", "SGLANG_X": "1", "PAT_SGLANG_DELEGATE": "fa3", "HOME": "/root", "PAT_OTHER": "2",
           "MY_SGLANG_Y": "3"}
    assert report.recorded_env(env) == ["PAT_SGLANG_DELEGATE=fa3", "SGLANG_X=1"]
    assert report.recorded_env({}) == []


def test_recorded_command_runs_again() -> None:
    """A run's recorded command line (results.md) parses back to the same arguments: ``--server-args`` with a value
    that starts with ``--`` stays one argument once quoted, and both spellings of the option reach it."""
    import shlex

    import ab_serving

    argv = ["--backends", "fa3,pat@fa3", "--server-args", "--kv-cache-dtype fp8_e4m3", "--concurrency", "64"]
    first = ab_serving.parse_args(argv)
    line = report.command_line(["python3", "bench/ab_serving.py", *argv])
    assert "'--kv-cache-dtype fp8_e4m3'" in line
    again = ab_serving.parse_args(shlex.split(line)[2:])
    assert vars(again) == vars(first) and again.server_args == "--kv-cache-dtype fp8_e4m3"
    assert ab_serving.parse_args(["--server-args=--kv-cache-dtype fp8_e4m3"]).server_args == first.server_args
    with pytest.raises(SystemExit):  # what the unquoted copy of the old record said: a stray argument
        ab_serving.parse_args(" ".join(argv).split())


def test_slowest_step_names_a_coarsened_plan() -> None:
    """The stats line's slowest step says when its plan was made coarser than the split model chose (to fit the
    CUDA-graph buffers): the served Qwen2.5-7B FP8 loss of 2026-12-02 was found from that count alone."""
    from types import SimpleNamespace

    from pat_sglang.decode_step import StepPhases
    from pat_sglang.step_stats import describe_step

    phases = StepPhases(0.0005, 0.0003, "built", True)
    plain = describe_step(64, phases, 0.0002, SimpleNamespace(num_items=160, num_partials=832, fallback=""))
    coarse = describe_step(64, phases, 0.0002, SimpleNamespace(num_items=152, num_partials=768,
                                                              fallback="coarser split"))
    assert plain.endswith("160 items, 832 partials")
    assert coarse.endswith("152 items, 768 partials, coarsened to fit: coarser split")
