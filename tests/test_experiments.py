"""Radix-cache replay (pat_sglang.experiments): hand-counted sharing and bytes on tiny traces, generator
shapes, CSV columns and the command line. CPU only; imports SGLang's RadixCache (a few seconds, once)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("sglang.srt.mem_cache.radix_cache")

from pat_sglang.config import HeadConfig  # noqa: E402
from pat_sglang.experiments import (  # noqa: E402
    ReplayConfig,
    StepRecord,
    generated_shared_prefix,
    load_mooncake,
    rollout,
    run_replay,
)
from pat_sglang.experiments.replay import STEP_COLUMNS  # noqa: E402

# 1 q head, 1 KV head, d=64, bf16: K+V of a token = 2*64*2 = 256 bytes; one partial = 2*1*(64*2 + 4) = 264 bytes
# (a bf16 row and an fp32 log-sum-exp, written and read)
TINY_HEADS = HeadConfig(1, 1, 64, torch.bfloat16)
TOKEN_BYTES = 256
PARTIAL_BYTES = 264
LAYERS = 2


def _cfg(**kw) -> ReplayConfig:
    base = dict(heads=TINY_HEADS, num_layers=LAYERS, record_every=1, kv_pool_tokens=1000, progress=False)
    base.update(kw)
    return ReplayConfig(**base)


def _write_trace(path: Path, rows: list[tuple[int, int, int, list[int]]]) -> Path:
    with open(path, "w") as f:
        for ts, n_in, n_out, ids in rows:
            f.write(json.dumps({"timestamp": ts, "input_length": n_in, "output_length": n_out, "hash_ids": ids}) + "\n")
    return path


@pytest.fixture
def four_requests(tmp_path: Path):
    """Blocks of 4 tokens. A, B, C share hash ids 0 and 1 (8 tokens); D shares nothing."""
    return _write_trace(
        tmp_path / "t.jsonl",
        [
            (0, 10, 2, [0, 1, 2]),  # A: 4 + 4 + 2
            (0, 12, 2, [0, 1, 3]),  # B: 4 + 4 + 4
            (0, 9, 2, [0, 1, 4]),  # C: 4 + 4 + 1
            (0, 7, 2, [5, 6]),  # D: 4 + 3
        ],
    )


def _run(specs, cfg):
    recs: list[StepRecord] = []
    summary = run_replay(specs, cfg, recs.append, workload="t")
    return recs, summary


def test_mooncake_blocks_to_tokens(four_requests):
    specs = load_mooncake(four_requests, block_tokens=4)
    assert [s.input_len for s in specs] == [10, 12, 9, 7]
    a, b = specs[0].prompt_tokens(), specs[1].prompt_tokens()
    assert list(a[:8]) == list(b[:8]) and a[8] != b[8]
    assert len(set(specs[3].prompt_tokens()) & set(a)) == 0
    assert len(load_mooncake(four_requests, limit=2, block_tokens=4)) == 2
    assert load_mooncake(four_requests, time_scale=2.0, block_tokens=4)[0].arrival_ms == 0.0


def test_shipped_trace_and_missing_trace(tmp_path: Path):
    from pat_sglang.experiments.workloads import DEFAULT_MOONCAKE_TRACE

    repo = Path(__file__).resolve().parent.parent
    assert DEFAULT_MOONCAKE_TRACE == repo / "data" / "traces" / "mooncake_conversation_trace.jsonl"
    assert DEFAULT_MOONCAKE_TRACE.exists()  # shipped in the repository (data/traces/README.md)
    specs = load_mooncake(limit=3)
    assert len(specs) == 3 and all(s.input_len > 0 for s in specs)
    with pytest.raises(FileNotFoundError, match="--trace"):
        load_mooncake(tmp_path / "absent.jsonl")


def test_hand_counted_step(four_requests):
    specs = load_mooncake(four_requests, block_tokens=4)
    recs, summary = _run(specs, _cfg())
    # output_len 2: the first token comes from prefill, one decode step each, all four in one batch
    assert summary.decode_steps == 1 and summary.finished == 4 and summary.dropped == 0
    # B and C find blocks 0, 1 (8 tokens) cached by A; D finds nothing
    assert summary.prompt_tokens == 38 and summary.cache_hit_tokens == 16
    (r,) = recs
    # KV lengths 11, 13, 10, 8; forest: shared node 8 tokens (A, B, C), leaves 3, 5, 2 and D's 8
    assert r.batch_size == 4
    assert r.request_tokens == 42 and r.unique_tokens == 26 and r.shared_tokens == 8
    assert r.dedup_ratio == pytest.approx(16 / 42)
    assert r.shared_token_ratio == pytest.approx(8 / 42)
    assert r.shared_read_ratio == pytest.approx(24 / 42)
    # The shared node is packed: saved (3 - 1) * 8 * 256 = 4096 > cost 3 * 264. Five packs of one split
    # each (26 tokens, far below the 256-token minimum split); A, B, C have two partials each, D none.
    assert r.num_packs == 5 and r.shared_packs == 1 and r.max_pack_requests == 3
    assert r.total_splits == 5 and r.num_items == 5 and r.num_partials == 6
    assert r.bytes_per_request == 42 * TOKEN_BYTES * LAYERS
    assert r.bytes_unique == 26 * TOKEN_BYTES * LAYERS
    assert r.bytes_pat_kv == 26 * TOKEN_BYTES * LAYERS
    assert r.bytes_pat_partials == 6 * PARTIAL_BYTES * LAYERS
    assert r.bytes_pat == (26 * TOKEN_BYTES + 6 * PARTIAL_BYTES) * LAYERS
    assert r.pat_saving == pytest.approx(1 - (26 * TOKEN_BYTES + 6 * PARTIAL_BYTES) / (42 * TOKEN_BYTES))
    assert summary.pat_saving == pytest.approx(r.pat_saving)


def test_decode_tokens_are_private(four_requests):
    specs = load_mooncake(four_requests, block_tokens=4)
    specs = [type(s)(s.rid, s.arrival_ms, s.segments, 4) for s in specs]  # 3 decode steps each
    recs, summary = _run(specs, _cfg())
    assert summary.decode_steps == 3
    # each step adds one private token per request: request +4, unique +4, shared unchanged
    assert [r.request_tokens for r in recs] == [42, 46, 50]
    assert [r.unique_tokens for r in recs] == [26, 30, 34]
    assert [r.shared_tokens for r in recs] == [8, 8, 8]


def test_batch_cap_and_small_pool(four_requests):
    specs = load_mooncake(four_requests, block_tokens=4)
    specs = [type(s)(s.rid, s.arrival_ms, s.segments, 6) for s in specs]
    recs, summary = _run(specs, _cfg(max_running=2, kv_pool_tokens=40))
    assert summary.finished == 4
    assert max(r.batch_size for r in recs) <= 2
    assert max(r.pool_used_tokens for r in recs) <= 40


def test_request_that_never_fits_is_dropped(four_requests):
    specs = load_mooncake(four_requests, block_tokens=4)
    _, summary = _run(specs, _cfg(kv_pool_tokens=12))
    assert summary.dropped == 1 and summary.finished == 3  # B: 12 prompt + 1 decode token > 12 slots


def test_gsp_shape_and_sharing():
    specs = generated_shared_prefix()
    assert len(specs) == 64 * 16
    assert {s.input_len for s in specs} == {2048 + 128} and {s.output_len for s in specs} == {256}
    firsts = Counter(s.segments[0] for s in specs)
    assert len(firsts) == 64 and set(firsts.values()) == {16}
    assert len({s.segments[1] for s in specs}) == 1024
    assert [s.segments[0][0] for s in generated_shared_prefix(2, 3, shuffle=False)] == [0, 0, 0, 1, 1, 1]

    recs, _ = _run(generated_shared_prefix(1, 3, 16, 4, 2, shuffle=False), _cfg())
    (r,) = recs
    assert r.request_tokens == 3 * 21 and r.unique_tokens == 16 + 3 * 5 and r.shared_tokens == 16


def test_rollout_shape():
    specs = rollout(num_prompts=4, samples_per_prompt=3, prompt_len=100, min_gen_len=5, max_gen_len=9, seed=1)
    assert len(specs) == 12
    assert Counter(s.segments for s in specs) == {((p, 100),): 3 for p in range(4)}
    assert all(5 <= s.output_len <= 9 for s in specs)
    recs, summary = _run(specs, _cfg())
    assert summary.finished == 12
    first = recs[0]
    # four prompts of 100 tokens, each read by three samples, one private token per sample
    assert first.batch_size == 12 and first.unique_tokens == 400 + 12 and first.request_tokens == 12 * 101


def test_cli_writes_csv_and_plots(tmp_path: Path):
    from pat_sglang.cli import main

    out = tmp_path / "out"
    args = ["experiment", "gsp", "--gsp-num-groups", "2", "--gsp-prompts-per-group", "3"]
    args += ["--gsp-system-prompt-len", "64", "--gsp-question-len", "8", "--gsp-output-len", "5"]
    assert main([*args, "--out", str(out), "--record-every", "2", "--quiet"]) == 0
    with open(out / "gsp.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == STEP_COLUMNS
    for col in ("step", "batch_size", "dedup_ratio", "bytes_per_request", "bytes_pat", "bytes_unique", "plan_ms"):
        assert col in rows[0]
    assert [int(r["step"]) for r in rows] == [0, 2]  # 4 decode steps, every 2nd recorded
    assert (out / "gsp_bytes.png").stat().st_size > 0 and (out / "gsp_sharing.png").stat().st_size > 0
    assert "PAT bytes saved" in (out / "gsp_summary.txt").read_text()


def test_replay_progress_bar() -> None:
    from pat_sglang.experiments.replay import _progress_bar

    bar = _progress_bar(7, "mooncake")
    assert bar is not None and bar.total == 7 and "mooncake" in bar.desc
    bar.close()
