"""The PAT backend's step log (``PAT_SGLANG_STEP_LOG``, ``pat_sglang.step_stats.StepLog``) and its reader
(``bench/step_log_report.py``): a row per decode step that adds up to the stats line's totals and percentiles."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scripts import BENCH, on_path

from pat_sglang.decode_step import NO_PHASES, StepPhases
from pat_sglang.step_stats import HOST_BINS_PER_OCTAVE, STEP_LOG_ENV, STEP_LOG_FLUSH_ROWS, StepLog

on_path(BENCH)

import host_replay as hr  # noqa: E402
import step_log_report as slr  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class _Plan:
    num_items = 7


def test_rows_read_back_with_their_kind(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STEP_LOG_ENV, str(tmp_path / "steps"))
    log = StepLog.from_env()
    assert log is not None and log.path.parent == tmp_path / "steps"
    log.add(256, "by rows", 120e-6, 310e-6, StepPhases(90e-6, 150e-6, "edited", True), 20e-6, _Plan(), 0.0)
    log.add(255, "", 0.0, 40e-6, NO_PHASES, 0.0, None, 0.0)  # declined before any forest, batch not published
    log.add(254, "unchanged", 30e-6, 500e-6, StepPhases(200e-6, 250e-6, "built"), 0.0, None, 80e-6)
    assert not log.path.read_text()  # buffered until a flush (written with each stats line)
    log.flush()
    steps = slr.load([log.path])
    assert [s.served_by for s in steps] == ["pat", "declined", "delegate"]
    assert [s.host_us for s in steps] == pytest.approx([430.0, 40.0, 530.0])
    assert steps[0].kind == "pat, forest edited, split search, published by rows"
    assert steps[1].kind == "declined, forest none, published -"
    text = slr.report(steps)
    assert text.startswith("3 steps, host time (publishing + planning) us: p50 430.0, p90 530.0, p99 530.0")
    log.add(8, "by rows", 1e-6, 2e-6, NO_PHASES, 0.0, None, 0.0)
    log.flush()  # appended after the rows already written
    assert len(slr.load([log.path])) == 4
    for _ in range(STEP_LOG_FLUSH_ROWS):  # a full buffer is written without a stats line
        log.add(8, "unchanged", 1e-6, 2e-6, NO_PHASES, 0.0, None, 0.0)
    assert len(slr.load([log.path])) == 4 + STEP_LOG_FLUSH_ROWS


def test_rows_are_written_when_the_process_exits(tmp_path) -> None:
    """A server that stops normally (or a replay that ends) between stats lines keeps its last rows."""
    code = (
        "from pat_sglang.decode_step import NO_PHASES\n"
        "from pat_sglang.step_stats import StepLog\n"
        "log = StepLog.from_env()\n"
        "for _ in range(3):\n"
        "    log.add(4, 'by rows', 1e-6, 2e-6, NO_PHASES, 0.0, None, 0.0)\n"
    )
    env = {**os.environ, STEP_LOG_ENV: str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    (path,) = tmp_path.glob("pat-steps-*.tsv")
    assert len(slr.load([path])) == 3


def test_no_log_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STEP_LOG_ENV, raising=False)
    assert StepLog.from_env() is None


def test_a_folder_that_cannot_be_written_is_said_plainly(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(STEP_LOG_ENV, str(blocker / "steps"))  # under a file: no folder can be made
    with pytest.raises(ValueError, match="PAT_SGLANG_STEP_LOG=.*cannot write the step log"):
        StepLog.from_env()


def test_nearest_rank_is_the_stats_lines_definition() -> None:
    values = sorted(np.random.default_rng(3).exponential(100.0, 257).tolist())
    for q in (1, 50, 90, 99, 100):
        assert slr.nearest_rank(values, q) == values[math.ceil(q / 100 * 257) - 1]
    assert math.isnan(slr.nearest_rank([], 50))


def test_a_replayed_servers_log_adds_up_to_its_stats(mooncake_specs: list, tmp_path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend in the host replay (SGLang's real RadixCache, arrivals, finishes, chunked prefill) with the log on
    and the gate deciding: one row per step the stats count, the rows' sums equal to the stats' totals, their
    percentiles within half a bin of the stats line's, and both sides of the gate present."""
    monkeypatch.setenv(STEP_LOG_ENV, str(tmp_path))
    monkeypatch.setenv("PAT_SGLANG_MIN_SAVED_FRACTION", "0.01")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = hr.run_point(hr.quick_config(gate=True, steps=60), mooncake_specs)
    finally:
        torch.set_num_threads(before)
    be = res.backend
    be.step_log.flush()
    steps = slr.load([be.step_log.path])
    stats = be.stats
    assert len(steps) == stats.steps > 60
    rounding_us = 0.05 * len(steps)  # each row's times to 0.1 us
    assert sum(s.host_us - s.publish_us for s in steps) == pytest.approx(1e6 * stats.plan_s_total, abs=rounding_us)
    assert sum(s.publish_us for s in steps) == pytest.approx(1e6 * stats.publish_s_total, abs=rounding_us)
    assert {"pat", "declined"} <= {s.served_by for s in steps}
    host = sorted(s.host_us for s in steps)
    half_bin = 2.0 ** (0.5 / HOST_BINS_PER_OCTAVE)
    for q in (50, 90, 99):
        exact, binned = slr.nearest_rank(host, q), 1e6 * stats.host_bins.percentile(q)
        assert exact / half_bin - 0.1 <= binned <= exact * half_bin + 0.1, (q, exact, binned)
