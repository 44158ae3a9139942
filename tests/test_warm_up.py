"""The start-up warm-up of the per-step host path (``pat_sglang.warm_up``): it runs the paths a server's decode steps
take (publishing in full and by changed rows, a wave; forest built with a split search, last plan reused, forest
edited, gate declined before planning), touches no state of the server's, and a failure of it never stops the
backend."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sglang_harness import RadixHarness, RecordingDelegate, decode_batch, shared_prompts
from test_backend_cpu import HKV, HQ, D, fake_runner

import pat_sglang.backend as backend_mod
from pat_sglang.backend import PATAttnBackend
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.sglang_patches import chain_table as chain_table_mod
from pat_sglang.sglang_patches.chain_table import ChainTable
from pat_sglang.warm_up import warm_host_path

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.mark.parametrize("heads", [HeadConfig(32, 8, 128, torch.bfloat16), HeadConfig(8, 8, 64, torch.float16),
                                   HeadConfig(16, 2, 256, torch.bfloat16)])
@pytest.mark.parametrize("remake", [False, True])
def test_warm_up_runs_each_kind_of_step(heads: HeadConfig, remake: bool) -> None:
    done = warm_host_path(heads, DeviceSpec(), remake_plans=remake)
    c = done.counters
    assert done.planned == [True, True, True, True, False]
    assert done.split_searched  # the first plan compared split lengths
    # every step that read requests took the publisher's changed-batch path, the first (no batch before it) too
    assert done.published_by_rows == 4
    assert c.plans_reused == 1  # the grown, unchanged batch took last step's plan
    assert c.declined == c.declined_unplanned == 1  # the gate declined the last step before any forest
    if remake:  # requests only left and joined: last plan re-made, or (refused) the forest edited
        assert c.remade + c.edited == 1
    else:
        assert c.built == 3 and c.edited == 1  # built from the paths, edited, built again for the wave
    assert c.unshared == 0  # every made-up request's path was published and used
    assert done.seconds > 0.0


def test_warm_up_touches_no_table_but_its_own() -> None:
    """The module's default table and a server's bound table keep what they hold."""
    h = RadixHarness()
    for prompt in shared_prompts(np.random.default_rng(1)):
        h.add_request(prompt)
    h.decode(steps=2)
    table = ChainTable(enabled=True)
    decode_batch(h, table)
    served, default = table.batch, chain_table_mod.CHAIN_TABLE.batch
    entries = dict(table.entries)
    warm_host_path(HeadConfig(HQ, HKV, D, torch.float32), DeviceSpec())
    assert table.batch is served and table.entries == entries
    assert chain_table_mod.CHAIN_TABLE.batch is default


def test_backend_warms_up_at_start_and_survives_a_failing_warm_up(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    h = RadixHarness()
    for prompt in shared_prompts(np.random.default_rng(2)):
        h.add_request(prompt)
    runner = fake_runner(h)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=ChainTable(), min_saved_fraction=0.0)
    assert be.warm_up is not None and be.warm_up.planned == [True, True, True, True, False]
    assert be.planner.counters.built == 0  # the server's own planner has planned nothing yet

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("made-up failure")

    monkeypatch.setattr(backend_mod, "warm_host_path", broken)
    with caplog.at_level(logging.WARNING, logger=backend_mod.logger.name):
        be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=ChainTable(), min_saved_fraction=0.0)
    assert be.warm_up is None
    assert any("warm-up failed" in r.getMessage() and "made-up failure" in r.getMessage() for r in caplog.records)
