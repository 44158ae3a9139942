"""CPU tests of the serving A/B harness: workloads, server command, report writer, process cleanup, end to end
against a fake server."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

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
    log = ("[2026-11-24 16:46:56] Decode batch, #running-req: 64, #token: 33024, token usage: 0.01, cuda graph: True, "
           "gen throughput (token/s): 6400.00, #queue-req: 0\n"
           "[x] Decode batch [12], #running-req: 32, #token: 1, token usage: 0.00, gen throughput (token/s): 3200.0, "
           "#queue-req: 0\nnoise\n")
    steps = client.decode_steps(log)
    assert steps == [(64, pytest.approx(10.0)), (32, pytest.approx(10.0))]
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
    assert (out / "server-broken.log").read_text().strip().endswith("failing on purpose")
