"""The SGLang plugin: argument choices, backend registration, version check, idempotent patching."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

import pytest
from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES, ServerArgs

import pat_sglang.sglang_patches as patches
import pat_sglang.sglang_patches.core as core
from pat_sglang import plugin


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    ServerArgs.add_cli_args(p)
    return p


def test_register_makes_sglang_accept_pat() -> None:
    plugin.register()
    args = parser().parse_args(
        ["--model-path", "dummy", "--attention-backend", "pat", "--decode-attention-backend", "pat"]
    )
    assert args.attention_backend == "pat" and args.decode_attention_backend == "pat"
    args = parser().parse_args(["--model-path", "dummy", "--prefill-attention-backend", "pat"])
    assert args.prefill_attention_backend == "pat"
    assert ATTENTION_BACKENDS["pat"] is plugin.create_pat_backend


def test_register_is_idempotent() -> None:
    plugin.register()
    init_new = ForwardBatch.__dict__["init_new"]
    plugin.register()
    assert ATTENTION_BACKEND_CHOICES.count("pat") == 1
    assert ForwardBatch.__dict__["init_new"] is init_new  # not wrapped a second time
    assert core.apply_patches() == []
    assert all(p.is_applied() for p in core.PATCH_SETS["0.5.17"])


def test_unsupported_sglang_version_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "installed_sglang_version", lambda: "0.5.99")
    with pytest.raises(RuntimeError, match=r"supports SGLang 0\.5\.17.*0\.5\.99 is installed"):
        plugin.register()
    with pytest.raises(patches.UnsupportedSGLangVersion):
        core.apply_patches()


def test_supported_versions_are_the_patch_sets() -> None:
    assert patches.SUPPORTED_SGLANG_VERSIONS == ("0.5.17",) == tuple(core.PATCH_SETS)
    assert core.installed_sglang_version() == "0.5.17"


def test_patch_checks_its_target_exists() -> None:
    module = "sglang.srt.model_executor.forward_batch_info"
    missing = core.Patch("missing", module, "ForwardBatch", "no_such", lambda f: f)
    with pytest.raises(RuntimeError, match="does not exist"):
        missing.apply()
    wrong_owner = core.Patch("x", module, "NoSuchClass", "init_new", lambda f: f)
    with pytest.raises(RuntimeError, match="cannot find"):
        wrong_owner.apply()


def test_patch_wraps_classmethod_and_restores() -> None:
    patch = core.PUBLISH_DECODE_CHAINS
    patch.apply()
    assert isinstance(ForwardBatch.__dict__["init_new"], classmethod)
    patch.remove()
    assert not patch.is_applied()
    assert patch.apply() is True and patch.apply() is False


def test_entry_point_declared() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert eps.get("pat") == "pat_sglang.plugin:register"


def test_init_new_wrapper_publishes_decode_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from sglang_harness import RadixHarness, shared_prompts

    from pat_sglang.sglang_patches.publish import wrap_forward_batch_init_new

    h = RadixHarness()
    for prompt in shared_prompts(np.random.default_rng(0))[:4]:
        h.add_request(prompt)
    monkeypatch.setattr(patches.CHAIN_TABLE, "enabled", True)
    monkeypatch.setattr(patches.CHAIN_TABLE, "entries", {})
    wrapped = wrap_forward_batch_init_new(lambda cls, batch, runner, **kw: ("forward-batch", kw))
    assert wrapped(ForwardBatch, h.schedule_batch(), None, return_hidden_states_before_norm=False) == (
        "forward-batch",
        {"return_hidden_states_before_norm": False},
    )
    assert set(patches.CHAIN_TABLE.entries) == {r.req_pool_idx for r in h.reqs}
