"""CPU tests of the serving harnesses' dummy weights (bench/ab/dummy_weights/): the fill itself, the start-up hook that
hands it to SGLang's loader in a fresh interpreter, and the harnesses' server environment and settings hash."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts import BENCH, REPO, on_path
from torch import nn

on_path(BENCH)

from ab.dummy_weights import HOOK_DIR  # noqa: E402
from ab.dummy_weights.pat_bench_dummy_weights import (  # noqa: E402
    ONE,
    SGLANG,
    UNIFORM,
    ZERO,
    init_attn_dummy_weights,
    init_rule,
    seed_of,
)
from ab.server import ServerConfig, dummy_weights_hooked, server_env  # noqa: E402


class _Norm(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))


class _Layer(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.input_layernorm = _Norm(hidden)
        self.q_proj = nn.Linear(hidden, hidden, bias=True)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)  # same shape as q_proj: only the name differs
        self.down_proj = nn.Linear(inter, hidden, bias=False)


class _Tiny(nn.Module):
    """Names as in SGLang's Llama: model.embed_tokens, model.layers.N.*, model.norm, lm_head."""

    def __init__(self, vocab: int = 1000, hidden: int = 256, inter: int = 1024) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(vocab, hidden)
        self.model.layers = nn.ModuleList([_Layer(hidden, inter) for _ in range(2)])
        self.model.norm = _Norm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)


def _filled(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)  # construction values differ per call below; the fill must not depend on them
    model = _Tiny().to(dtype)
    init_attn_dummy_weights(model)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_rules_by_name() -> None:
    assert init_rule("model.norm.weight", (4096,), 16) == (ONE, 1.0)
    assert init_rule("model.layers.3.post_attention_layernorm.weight", (4096,), 16) == (ONE, 1.0)
    assert init_rule("model.layers.3.self_attn.q_norm.weight", (128,), 16) == (ONE, 1.0)
    assert init_rule("model.layers.0.self_attn.qkv_proj.bias", (6144,), 16) == (ZERO, 0.0)
    assert init_rule("model.embed_tokens.weight", (128256, 4096), 16) == (UNIFORM, 1.0)
    assert init_rule("lm_head.weight", (128256, 4096), 16) == (UNIFORM, 1 / 64)
    assert init_rule("model.layers.0.mlp.down_proj.weight", (4096, 14336), 16) == (UNIFORM, 1 / math.sqrt(14336))
    assert init_rule("model.layers.0.mlp.experts.w2_weight", (8, 4096, 14336), 16) == (UNIFORM, 1 / math.sqrt(14336))
    # low-bit storage, quantisation scales and unknown vectors keep SGLang's handling
    assert init_rule("model.layers.0.self_attn.qkv_proj.weight", (6144, 4096), 8)[0] == SGLANG
    assert init_rule("model.layers.0.self_attn.qkv_proj.weight_scale", (6144, 1), 32)[0] == SGLANG
    assert init_rule("model.layers.0.something", (7,), 32)[0] == SGLANG


def test_seed_is_a_stable_crc_of_the_name() -> None:
    # zlib.crc32, not hash(): the same in every process whatever PYTHONHASHSEED
    assert seed_of("model.norm.weight") == seed_of("model.norm.weight", 1234)
    assert seed_of("model.layers.0.self_attn.q_proj.weight") != seed_of("model.layers.0.self_attn.k_proj.weight")
    code = ("import sys; sys.path.insert(0, 'bench'); "
            "from ab.dummy_weights.pat_bench_dummy_weights import seed_of; print(seed_of('lm_head.weight'))")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONHASHSEED": h},
                           capture_output=True, text=True, check=True).stdout.strip() for h in ("1", "2")}
    assert outs == {str(seed_of("lm_head.weight"))}


def test_fill_is_deterministic_distinct_and_scaled() -> None:
    a, b = _filled(), _filled()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # two models, two calls: equal
    layer = "model.layers.0."
    # a stream per name: same shapes, different values (SGLang's one seed made them equal)
    assert not torch.equal(a[layer + "q_proj.weight"], a[layer + "k_proj.weight"])
    assert not torch.equal(a[layer + "q_proj.weight"], a["model.layers.1.q_proj.weight"])
    for name in ("model.norm.weight", layer + "input_layernorm.weight", "model.layers.1.input_layernorm.weight"):
        assert torch.equal(a[name], torch.ones_like(a[name]))
    assert torch.equal(a[layer + "q_proj.bias"], torch.zeros_like(a[layer + "q_proj.bias"]))
    for name, std in (("model.embed_tokens.weight", 1.0), ("lm_head.weight", 1 / 16), (layer + "q_proj.weight", 1 / 16),
                      (layer + "down_proj.weight", 1 / 32)):
        t = a[name]
        assert t.std().item() == pytest.approx(std, rel=0.03), name
        assert t.mean().abs().item() < 0.03 * std, name
        assert t.abs().max().item() <= std * math.sqrt(3) * 1.0001, name  # uniform: bounded, no outliers
    # bf16 tensors are filled in their own dtype, from the same streams' shape of values
    h = _filled(torch.bfloat16)
    assert h["lm_head.weight"].dtype == torch.bfloat16
    assert h["lm_head.weight"].float().std().item() == pytest.approx(1 / 16, rel=0.03)
    assert torch.equal(h["model.norm.weight"], torch.ones_like(h["model.norm.weight"]))


def test_low_bit_and_scale_tensors_get_sglangs_values(capsys: pytest.CaptureFixture[str]) -> None:
    from sglang.srt.model_loader.weight_utils import initialize_dummy_weights

    def quantised() -> nn.Module:
        m = nn.Module()
        m.qkv_proj = nn.Module()
        m.qkv_proj.weight = nn.Parameter(torch.zeros(64, 32).to(torch.float8_e4m3fn), requires_grad=False)
        m.qkv_proj.weight_scale = nn.Parameter(torch.zeros(64, 1))
        m.o_proj = nn.Linear(32, 32, bias=False)
        return m

    ours, theirs = quantised(), quantised()
    init_attn_dummy_weights(ours)
    initialize_dummy_weights(theirs)
    for name in ("qkv_proj.weight", "qkv_proj.weight_scale"):
        assert torch.equal(ours.state_dict()[name].float(), theirs.state_dict()[name].float()), name
        assert ours.state_dict()[name].float().abs().max().item() <= 2e-3  # +-1e-3, rounded to FP8
    assert ours.o_proj.weight.std().item() == pytest.approx(1 / math.sqrt(32), rel=0.15)
    assert ours.o_proj.weight.dtype == torch.float32
    err = capsys.readouterr().err
    assert dummy_weights_hooked(err) and "1 tensors uniform" in err and "2 left to SGLang" in err


def test_outputs_depend_on_attention_and_stay_finite_in_bf16() -> None:
    """A 32-layer Llama (Hugging Face's, names as SGLang's) in bf16: with our weights the logits have std ~1, the top
    token's logprob is far above -ln(vocab), and changing one early prompt token changes the last position's logits
    (only attention carries it there); with SGLang's the logits are flat and the change is invisible."""
    from sglang.srt.model_loader.weight_utils import initialize_dummy_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=448, num_hidden_layers=32,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    ids = torch.randint(0, cfg.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 1) % cfg.vocab_size
    flat = -math.log(cfg.vocab_size)
    results = {}
    for init in (init_attn_dummy_weights, initialize_dummy_weights):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
        init(model)
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
            moved = model(changed).logits[:, -1].float()
        logits = out.logits[:, -1].float()
        assert all(torch.isfinite(h).all() for h in out.hidden_states) and torch.isfinite(logits).all()
        results[init] = (logits.std().item(), torch.log_softmax(logits, -1).max().item(),
                         (logits - moved).abs().max().item(), max(h.float().abs().max().item()
                                                                  for h in out.hidden_states))
    std, top_lp, change, peak = results[init_attn_dummy_weights]
    assert 0.5 < std < 2.0 and top_lp > flat + 1.0 and change > 0.1 and peak < 1000
    std, top_lp, change, _ = results[initialize_dummy_weights]
    assert std < 1e-3 and top_lp == pytest.approx(flat, abs=1e-3) and change < 1e-3


# ---------------------------------------------------------------------------------------------------- the hook
def _hook_env(mode: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the harnesses give a server with ``--dummy-weights mode``."""
    return server_env(ServerConfig("m", "fa3", 1, dummy_weights=mode), dict(os.environ) if base is None else base)


def test_server_env_on_by_default_and_off_on_request() -> None:
    base = {"PYTHONPATH": "/a:/b", "HOME": "/h"}
    on = server_env(ServerConfig("m", "fa3", 1), base)
    assert on["PYTHONPATH"].split(os.pathsep) == [str(HOOK_DIR), "/a", "/b"]
    assert on["PAT_BENCH_DUMMY_WEIGHTS"] == "attn" and on["HOME"] == "/h"
    assert server_env(ServerConfig("m", "fa3", 1), on)["PYTHONPATH"] == on["PYTHONPATH"]  # not added twice
    off = _hook_env("sglang", on)  # even inherited, the hook is removed
    assert off["PYTHONPATH"].split(os.pathsep) == ["/a", "/b"] and "PAT_BENCH_DUMMY_WEIGHTS" not in off
    assert "PYTHONPATH" not in _hook_env("sglang", {"PAT_BENCH_DUMMY_WEIGHTS": "attn"})
    assert base == {"PYTHONPATH": "/a:/b", "HOME": "/h"}  # not modified
    with pytest.raises(ValueError):
        _hook_env("uniform", base)


_PROBE = """
import json, sys, types
# SGLang's RotaryEmbedding imports a vLLM kernel on a CPU-only machine without AMX; it is never called here
ops = types.ModuleType("vllm._custom_ops")
ops.rotary_embedding = None
sys.modules["vllm"] = types.ModuleType("vllm")
sys.modules["vllm._custom_ops"] = ops
from sglang.srt import runtime_context
from sglang.srt.configs.device_config import DeviceConfig
from sglang.srt.configs.load_config import LoadConfig
from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.distributed import parallel_state
from sglang.srt.server_args import ServerArgs
import sglang.srt.model_loader.loader as L
import sglang.srt.model_loader.weight_utils as W

model_dir, init_file = sys.argv[1:3]
parallel_state.init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                            distributed_init_method="file://" + init_file)
parallel_state.initialize_model_parallel(1)
runtime_context.publish(ServerArgs(model_path=model_dir, device="cpu", load_format="dummy", skip_tokenizer_init=True),
                        role="test")
# what the scheduler's model runner does with --load-format dummy
model = L.get_model_loader(LoadConfig(load_format="dummy")).load_model(
    model_config=ModelConfig(model_dir, dtype="bfloat16"), device_config=DeviceConfig("cpu"))
P = sys.modules.get("pat_bench_dummy_weights")
print(json.dumps({"ours": P is not None and L.initialize_dummy_weights is P.init_attn_dummy_weights,
                  "sglangs": L.initialize_dummy_weights is W.initialize_dummy_weights,
                  "weight_utils_kept": W.initialize_dummy_weights.__module__ == W.__name__,
                  "tensors": {k: [float(v.float().std()), float(v.float().mean())]
                              for k, v in model.state_dict().items()}}))
"""


def _tiny_llama(folder: Path) -> Path:
    """configs/models/llama3-8b-4l made tiny (hidden 128, 2 layers, vocab 512): SGLang's own Llama builds it on the
    CPU in a few seconds."""
    cfg = json.loads((REPO / "configs/models/llama3-8b-4l/config.json").read_text())
    cfg.update(hidden_size=128, intermediate_size=448, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
               num_hidden_layers=2, vocab_size=512, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_a_fresh_interpreter_loads_sglangs_dummy_model_with_our_weights_only_when_asked(tmp_path: Path) -> None:
    """As SGLang's scheduler process starts: a new interpreter with the harness's server environment imports the real
    ``sglang.srt.model_loader.loader`` and builds SGLang's Llama with its ``--load-format dummy`` loader (~10 s on
    the CPU; both modes run at once)."""
    model_dir = _tiny_llama(tmp_path / "tiny")
    procs = {mode: subprocess.Popen([sys.executable, "-c", _PROBE, str(model_dir), str(tmp_path / f"pg-{mode}")],
                                    env=_hook_env(mode), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for mode in ("attn", "sglang")}
    res = {}
    for mode, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        res[mode] = (json.loads(out.strip().splitlines()[-1]), err)
    ours, err = res["attn"]
    assert ours["ours"] and not ours["sglangs"] and ours["weight_utils_kept"]
    assert "[pat-bench] sglang.srt.model_loader.loader.initialize_dummy_weights ->" in err
    assert dummy_weights_hooked(err) and "10 tensors uniform" in err and "5 norm weights = 1" in err
    t = ours["tensors"]
    # SGLang's own parameter names: merged qkv / gate_up projections, norms, embeddings, lm_head
    for name in ("model.norm.weight", "model.layers.0.input_layernorm.weight",
                 "model.layers.1.post_attention_layernorm.weight"):
        assert t[name] == [0.0, 1.0], name
    for name, std in (("model.embed_tokens.weight", 1.0), ("model.layers.0.self_attn.qkv_proj.weight", 128 ** -0.5),
                      ("model.layers.1.mlp.gate_up_proj.weight", 128 ** -0.5),
                      ("model.layers.0.self_attn.o_proj.weight", 128 ** -0.5),
                      ("model.layers.0.mlp.down_proj.weight", 448 ** -0.5), ("lm_head.weight", 128 ** -0.5)):
        assert t[name][0] == pytest.approx(std, rel=0.05), name
    theirs, err = res["sglang"]
    assert theirs["sglangs"] and not theirs["ours"] and "[pat-bench]" not in err
    assert all(std < 1e-3 and abs(mean) < 1e-3 for std, mean in theirs["tensors"].values())  # norms too
    assert theirs["tensors"].keys() == t.keys()


def test_sitecustomize_runs_the_one_it_shadows(tmp_path: Path) -> None:
    """Our ``sitecustomize`` is first on the path; the next one (here a stand-in) still runs, once, and a broken one
    is reported without stopping the interpreter. The hook needs the variable, not just the folder."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.PAT_TEST_CHAINED = "
                                            "getattr(builtins, 'PAT_TEST_CHAINED', 0) + 1\n")
    probe = ("import builtins, sys, sitecustomize\n"
             "print(sitecustomize.__file__, getattr(builtins, 'PAT_TEST_CHAINED', 0), "
             "[type(f).__name__ for f in sys.meta_path if hasattr(f, 'target')])")

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                              check=True)

    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PAT_BENCH_DUMMY_WEIGHTS")}
    env = _hook_env("attn", {**base, "PYTHONPATH": str(other)})
    mine, count, hooks = run(env).stdout.split(maxsplit=2)
    assert Path(mine).parent == HOOK_DIR and count == "1" and hooks.strip() == "['PatchFinder']"
    # the folder without the variable: no hook, the other sitecustomize still runs
    mine, count, hooks = run({**env, "PAT_BENCH_DUMMY_WEIGHTS": ""}).stdout.split(maxsplit=2)
    assert count == "1" and hooks.strip() == "[]"
    (other / "sitecustomize.py").write_text("raise RuntimeError('broken on purpose')\n")
    res = run(env)
    assert "Error in sitecustomize" in res.stderr and "broken on purpose" in res.stderr
    assert res.stdout.split()[1] == "0"


# ------------------------------------------------------------------------------------------------ the harnesses
def test_harness_options_and_settings_hash() -> None:
    import ab_serving
    import serving_sweep
    from ab import sweep

    assert ab_serving.parse_args([]).dummy_weights == "attn"
    assert ab_serving.parse_args(["--dummy-weights", "sglang"]).dummy_weights == "sglang"
    args = serving_sweep.parse_args([])
    assert args.dummy_weights == "attn"
    assert serving_sweep.server_config(args, "fa3", Path("/m"), 1).dummy_weights == "attn"
    off = serving_sweep.parse_args(["--dummy-weights", "sglang"])
    assert serving_sweep.server_config(off, "pat@fa3", Path("/m"), 1).dummy_weights == "sglang"
    on_id = sweep.short_hash(serving_sweep.server_settings(args, "mid"))
    off_settings = serving_sweep.server_settings(off, "mid")
    # "sglang" hashes as the settings did before the option (old rows had SGLang's weights); "attn" differs
    assert "dummy_weights" not in off_settings and sweep.short_hash(off_settings) != on_id
    assert serving_sweep.server_settings(args, "mid")["dummy_weights"] == "attn"


def _ab_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[str, dict]:
    import ab_serving

    fake = str(REPO / "tests" / "fake_sglang_server.py")
    monkeypatch.setattr(ab_serving, "server_command", lambda cfg: [sys.executable, fake, "--port", str(cfg.port)])
    out = tmp_path / ("ab" + "-".join(extra))
    rc = ab_serving.main(["--backends", "flashinfer", "--workloads", "shared", "--out", str(out), "--groups", "1",
                          "--prompts-per-group", "2", "--system-len", "16", "--question-len", "4", "--output-len", "3",
                          "--check-tokens", "3", "--budget-s", "120", "--port", "32500", *extra])
    assert rc == 0
    return (out / "server-flashinfer.log").read_text(), json.loads((out / "run.json").read_text())


def test_ab_serving_servers_get_the_hook_unless_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PAT_BENCH_DUMMY_WEIGHTS", raising=False)
    log, run = _ab_run(tmp_path, monkeypatch)
    # the server process ran our sitecustomize with the variable: the hook is installed there
    assert "ENV PAT_BENCH_DUMMY_WEIGHTS=attn" in log
    assert "IMPORT HOOK PatchFinder sglang.srt.model_loader.loader" in log
    server = run["servers"][0]
    # the fake server loads no model, so no weights line: the harness says so
    assert server["dummy_weights"] == "attn" and server["dummy_weights_hooked"] is False
    assert "WARNING: no 'attn' dummy-weight line" in capsys.readouterr().out
    log, run = _ab_run(tmp_path, monkeypatch, "--dummy-weights", "sglang")
    assert "PAT_BENCH" not in log and "IMPORT HOOK" not in log
    assert run["servers"][0]["dummy_weights"] == "sglang"
    assert "WARNING" not in capsys.readouterr().out
