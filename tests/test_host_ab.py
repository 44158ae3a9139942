"""bench/host_ab.py: the paired host A/B in its --quick shape (the Mooncake trace through SGLang's real RadixCache,
batch 8): each switch really flips its path between steps, both sides get changed steps, the patches are undone after
the run, and the report carries each side's medians and their ratio."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scripts import BENCH, on_path

on_path(BENCH)

import host_ab as ab  # noqa: E402
import host_replay as hr  # noqa: E402

from pat_sglang import host_core  # noqa: E402
from pat_sglang.sglang_patches.chain_table import ChainTable  # noqa: E402


@pytest.fixture(scope="module")
def specs(mooncake_specs: list) -> list:
    return mooncake_specs


@pytest.fixture()
def compiled(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(host_core.DISABLE_ENV, raising=False)  # compiled here even where the suite turns it off
    host_core.reset()
    core = host_core.loaded_batch()
    assert core is not None, "the compiled publisher piece did not load"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield core
    torch.set_num_threads(before)
    host_core.reset()


def test_publish_read_switch_flips_the_compiled_read(specs: list, compiled, monkeypatch: pytest.MonkeyPatch) -> None:
    switch = ab.SWITCHES["publish-read"]()
    current = {"side": 0}
    set_side = switch.set_side

    def recording(backend, side: int) -> None:
        current["side"] = side
        set_side(backend, side)

    switch.set_side = recording
    reached: list[int] = []  # the side in force at each call that ran the compiled read
    real = compiled.publish_read

    def counted(*args):
        reached.append(current["side"])
        return real(*args)

    monkeypatch.setattr(compiled, "publish_read", counted)
    fallback: list[int] = []  # ... and at each run of its Python version
    python_read = ChainTable._publish_read

    def python(self, *args, **kwargs):
        fallback.append(current["side"])
        return python_read(self, *args, **kwargs)

    monkeypatch.setattr(ChainTable, "_publish_read", python)
    point = ab.run_paired(hr.quick_config(steps=60), specs, switch, seed=1)
    assert point.sides == ("compiled", "python")
    assert all(len(side) > 5 for side in point.steps)
    assert all(p > 0 and h >= p for side in point.steps for p, h in side)
    assert reached and set(reached) == {0}  # the compiled read ran on the compiled side only
    assert fallback.count(1) > 5  # and the Python read on the other
    assert compiled.publish_read is counted  # the switch's gate taken off again


def test_publisher_switch_hides_the_whole_piece_and_restores_it(specs: list, compiled) -> None:
    seen: list[bool] = []
    switch = ab.SWITCHES["publisher"]()
    with switch.installed():
        for side in (0, 1, 0):
            switch.set_side(None, side)
            seen.append(host_core.loaded_batch() is None)
    assert seen == [False, True, False]
    assert host_core.loaded_batch() is compiled
    point = ab.run_paired(hr.quick_config(steps=40), specs, ab.SWITCHES["publisher"](), seed=2)
    assert all(side for side in point.steps)
    assert host_core.loaded_batch() is compiled


def test_edit_common_switch_flips_the_one_call_edit(specs: list, compiled) -> None:
    glue = host_core.loaded_glue()
    assert glue is not None
    real = glue.edit_common
    answers: list[bool] = []  # per call of the switch's gate: whether the one call served (not NotImplemented)

    def counted(*args):
        got = real(*args)
        answers.append(got is not NotImplemented)
        return got

    glue.edit_common = counted
    try:
        switch = ab.SWITCHES["edit-common"]()
        with switch.installed():
            gate = glue.edit_common
            assert gate is not counted
            switch.set_side(None, 1)
            assert gate(*[None] * 12) is NotImplemented and not answers  # side 1: the call is not made
        assert glue.edit_common is counted  # the gate taken off again
        point = ab.run_paired(hr.quick_config(steps=60), specs, ab.SWITCHES["edit-common"](), seed=3)
        assert point.sides == ("one call", "stepwise")
        assert all(len(side) > 5 for side in point.steps)
        assert any(answers)  # the one call served edits on its side
    finally:
        glue.edit_common = real


def test_batch_binding_switch_flips_the_publisher_calls(specs: list, compiled) -> None:
    assert compiled.via_glue  # the extension module loads wherever tests run
    bound = {name: getattr(compiled, name) for name in compiled.BOUND}
    switch = ab.SWITCHES["batch-binding"]()
    with switch.installed():
        switch.set_side(None, 1)
        assert all(type(getattr(compiled, name)).__name__ == "_FuncPtr" for name in compiled.BOUND)  # ctypes
        switch.set_side(None, 0)
        assert all(getattr(compiled, name) is call for name, call in bound.items())
        switch.set_side(None, 1)
    assert all(getattr(compiled, name) is call for name, call in bound.items())  # restored after the run
    point = ab.run_paired(hr.quick_config(steps=40), specs, ab.SWITCHES["batch-binding"](), seed=4)
    assert point.sides == ("glue", "ctypes") and all(side for side in point.steps)


def test_remake_switch_sets_the_planner() -> None:
    backend = SimpleNamespace(planner=SimpleNamespace(remake_plans=False))
    switch = ab.SWITCHES["remake-plans"]()
    switch.set_side(backend, 1)
    assert backend.planner.remake_plans is True
    switch.set_side(backend, 0)
    assert backend.planner.remake_plans is False
    assert switch.names == ("full", "remade")


def test_report_gives_each_sides_medians_and_the_ratio() -> None:
    rng = np.random.default_rng(0)
    a = [(float(p), float(p + h)) for p, h in zip(rng.uniform(90, 110, 51), rng.uniform(200, 220, 51), strict=True)]
    b = [(2 * p, 2 * h) for p, h in a]
    text = ab.format_points([ab.PairedPoint(256, 1024, ("compiled", "python"), (a, b))])
    pub, host = np.median([p for p, _ in a]), np.median([h for _, h in a])
    assert f"{pub:.1f}" in text and f"{host:.1f}" in text and f"{2 * pub:.1f}" in text
    assert "python / compiled: publishing 2.000, host 2.000" in text
    empty = ab.format_points([ab.PairedPoint(64, 1024, ("full", "remade"), (a, []))])
    assert "(no changed steps)" in empty and "/" not in empty.splitlines()[-1]
