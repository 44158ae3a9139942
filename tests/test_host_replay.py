"""bench/host_replay.py in its --quick shape (batch 8, context 1k, chunks of 256): the Mooncake trace through SGLang's
real RadixCache with arrivals, finishes and chunked prefill, and the PAT backend planning every decode step. The plans
are checked against plain per-request attention (``pat_sglang.reference``) on random q / K / V."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts import BENCH, on_path

on_path(BENCH)

import host_replay as hr  # noqa: E402
import replay_check as rc  # noqa: E402

SMALL_HEADS = (4, 2, 128)  # q heads, kv heads (GQA group 2), head dim: K/V pools of a few MB


@pytest.fixture(autouse=True)
def one_thread():
    """As the bench runs (the scheduler's one host thread); also keeps the reference's small einsums fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def specs(mooncake_specs: list) -> list:
    return mooncake_specs


def test_quick_replay_times_every_decode_step(specs: list) -> None:
    cfg = hr.quick_config()
    seen: list[tuple[int, int, int]] = []

    def check(sim, be, view, rec) -> None:
        md = be.forward_metadata
        assert md is not None, "the backend did not plan a decode step"
        seen.append((md.plan.num_requests, int(view.batch_size), len(sim.running)))

    res = hr.run_point(cfg, specs, on_step=check)
    recs = res.records
    assert len(recs) == cfg.steps
    assert all(r.host_us > 0 and r.publish_us >= 0 for r in recs)
    # the server really ran: the batch full, requests arriving, joining, finishing, prompts chunked
    assert np.mean([r.batch_size for r in recs]) > 0.9 * cfg.batch
    assert max(r.batch_size for r in recs) == cfg.batch
    assert sum(r.arrivals for r in recs) > 0
    assert sum(r.joined for r in recs) > 0 and sum(r.left for r in recs) > 0
    assert res.admitted > cfg.batch and res.finished > 0
    assert res.chunked_prompts >= 1 and res.chunked_iterations >= 1  # prompts longer than the 256-token chunk
    assert res.cache_hit_tokens > 0  # the trace's shared hash-id prefixes hit the radix cache
    # --scale blocks: the mean prompt is --context tokens, none longer than clip_factor x context
    assert all(r.context_tokens <= r.batch_size * (cfg.clip_factor * cfg.context + cfg.max_output) for r in recs)
    assert 0.25 * cfg.context < np.mean([r.context_tokens / r.batch_size for r in recs]) < 4 * cfg.context
    # every decode step, timed or not, was planned once, for the whole (padded) batch
    be = res.backend
    assert be.stats.steps == len(recs) + res.untimed_steps == len(seen)
    assert all(n == padded for n, padded, _ in seen)
    assert all(padded in hr.capture_sizes(cfg.batch) and padded >= raw for _, padded, raw in seen)
    s = res.summary()
    assert s["p50"] <= s["p99"] <= s["max"]
    assert s["steps_declined"] == 0 and s["served_p50"] == s["p50"]  # no gate: PAT planned every step
    clean = [r.host_us for r in recs if not r.gc]  # steps no collection ran in: their own maximum
    if clean:
        assert s["max_nogc"] == max(clean) <= s["max"]
    else:
        assert np.isnan(s["max_nogc"])
    assert res.verdict() in ("yes",) or res.verdict().startswith("no: ")
    # publishing as in a server (run_point applies the plugin's patches first, gate or not): unchanged batches are
    # republished without reading a request, changed ones by reading only their changed rows
    table = be.chain_table
    assert table.unread > 0 and table.by_rows > 0, (table.unread, table.by_rows)


def test_gated_replay_marks_the_steps_given_to_the_delegate(specs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the dispatch gate on, a timed step is marked declined exactly when the backend left it to the delegate (no
    forward metadata), and the summary counts those steps and times the others apart. The quick point's batches save
    ~0-3% of their KV bytes: a 1% threshold declines some of its steps and serves others."""
    monkeypatch.setenv("PAT_SGLANG_MIN_SAVED_FRACTION", "0.01")
    cfg = hr.quick_config(gate=True, steps=60)
    seen: list[tuple[bool, bool]] = []

    def check(sim, be, view, rec) -> None:
        if rec is not None:
            seen.append((rec.declined, be.forward_metadata is None))

    res = hr.run_point(cfg, specs, on_step=check)
    assert len(seen) == len(res.records) == cfg.steps
    assert all(declined == delegated for declined, delegated in seen)
    s = res.summary()
    assert 0 < s["steps_declined"] == sum(d for d, _ in seen) < cfg.steps  # both kinds of step
    assert s["served_p50"] == np.percentile([r.host_us for r in res.records if not r.declined], 50)


def test_prompt_scaling_keeps_the_trace_sharing() -> None:
    """A later conversation turn (hash ids extending an earlier turn's) still extends the earlier prompt token for token
    under --scale blocks; --scale exact gives exactly --context tokens and keeps the common hash-id prefix."""
    a = hr.RequestSpec(0, 0.0, ((0, 512), (1, 512), (2, 300)), 10)
    b = hr.RequestSpec(1, 0.0, ((0, 512), (1, 512), (2, 512), (3, 100)), 10)
    for factor in (0.1, 1.0, 2.7):
        ta = hr.RequestSpec(0, 0.0, hr.block_segments(a, factor, 1 << 20), 10).prompt_tokens()
        tb = hr.RequestSpec(1, 0.0, hr.block_segments(b, factor, 1 << 20), 10).prompt_tokens()
        assert len(tb) > len(ta) and tb[: len(ta)] == ta
    cut = hr.block_segments(b, 2.0, 1500)
    assert sum(n for _, n in cut) == 1500 and cut[0] == (0, 1024)
    for context in (100, 1024, 5000):
        ea = hr.RequestSpec(0, 0.0, hr.exact_segments(a, context), 10).prompt_tokens()
        eb = hr.RequestSpec(1, 0.0, hr.exact_segments(b, context), 10).prompt_tokens()
        assert len(ea) == len(eb) == context
        common = min(context, 1024 + 300)
        assert ea[:common] == eb[:common]


@pytest.mark.parametrize("path", ["eager", "graph"])
def test_quick_replay_plans_equal_plain_attention(specs: list, path: str) -> None:
    """Every step's plan, run by the torch reference, equals per-request attention over the request's whole
    req_to_token row (prompt, cached prefix and every decoded token), so the plans cover each full sequence: steps
    whose batch changed (arrivals, finishes) and unchanged steps (the plan as it was) alike. The check is the
    correctness soak's (``bench/replay_check.py``: the plan for the whole batch, each row covered once, exact in
    float64), on every step."""
    cfg = hr.quick_config(path=path, heads=SMALL_HEADS, steps=16, warmup=2)
    checker, res = rc.run(cfg, specs, exact_every=1)
    kinds = checker.kinds
    planned = sum(kinds.values())
    assert planned == checker.exact == res.backend.stats.steps == len(res.records) + res.untimed_steps
    assert checker.max_exact_err < rc.EXACT_TOL
    assert planned - kinds["none"] >= 2 and kinds["none"] >= 2, kinds


def test_gsp_workload_is_sglang_generated_shared_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    """``--workload gsp``: 64 groups x 16 prompts of a 2048-token system prompt + a 128-token question, 256 output
    tokens, all at t=0 (or ``--rate`` per second); replayed at its own prompt length, so a group's later requests hit
    the system prompt in the radix cache."""
    specs = hr.gsp_specs(None)
    assert len(specs) == 1024 and all(s.arrival_ms == 0 and s.output_len == 256 for s in specs)
    assert all([n for _, n in s.segments] == [2048, 128] for s in specs)
    assert len({s.segments[0][0] for s in specs}) == 64 and len({s.segments[1][0] for s in specs}) == 1024
    assert [s.arrival_ms for s in hr.gsp_specs(20.0)[:3]] == [0.0, 50.0, 100.0]
    (res,) = hr.main(["--workload", "gsp", "--batch", "16", "--steps", "12", "--max-output", "16", "--no-plan-speed",
                      "--no-progress"])
    assert res.config.context == 2176 and res.time_scale == 1.0 and len(res.records) == 12
    assert res.cache_hit_tokens > 0 and "generated-shared-prefix" in capsys.readouterr().out


def test_phases_split_each_step_and_cold_caches_run(specs: list, capsys: pytest.CaptureFixture[str]) -> None:
    """``--phases``: every timed step records how its forest came about and the time of its parts, which lie inside
    the step's host time (steps with no forest have none); the table lists each kind with its step count.
    ``--evict-mib`` makes the caches cold between steps without changing what is planned."""
    (res,) = hr.main(["--quick", "--steps", "30", "--phases", "--evict-mib", "2", "--no-plan-speed"])
    assert res.config.evict_mib == 2 and len(res.records) == 30
    kinds = {r.forest for r in res.records}
    assert kinds <= {"none", "reused", "edited", "built", "remade"} and kinds - {"none"}  # some steps planned
    for r in res.records:
        assert r.publish_us + r.forest_us + r.plan_us <= r.host_us
        if r.forest == "none":
            assert r.forest_us == r.plan_us == 0.0
        else:
            assert r.plan_us > 0.0
    out = capsys.readouterr().out
    assert "caches made cold between steps (a write to every line of 2 MiB)" in out
    table = out[out.index("forest_us"):].splitlines()[2:]
    counted = {line.split()[2]: int(line.split()[3]) for line in table if line.strip()[:1].isdigit()}
    assert counted == {k: sum(r.forest == k for r in res.records) for k in kinds}
