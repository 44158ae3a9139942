"""Bench-only dummy weights whose model output depends on attention, and the import hook that gives them to SGLang.

Why: SGLang's ``--load-format dummy`` (``DummyModelLoader.load_model`` calls ``initialize_dummy_weights`` of
``sglang.srt.model_loader.weight_utils``) fills every floating tensor of the state dict uniform(-1e-3, 1e-3) from the
SAME seed, RMSNorm weights included. Through 32 layers the hidden state all but vanishes and the logits are flat:
every greedy token's logprob is -ln(vocab) and the outputs cycle two ids whatever the attention backend computed, so a
greedy-agreement check between backends says nothing about attention.

``init_attn_dummy_weights`` (same call signature as SGLang's, so it can stand in for it) fills instead, for each
tensor of ``model.state_dict()``, by its name:

* norm weights (``...norm.weight``, which covers ``...layernorm.weight``): exactly 1;
* biases (``...bias``): 0;
* embeddings (a name part containing ``embed``, e.g. ``model.embed_tokens.weight``): uniform with std 1;
* other matrices (2-D or more): uniform with std ``1/sqrt(fan_in)``, fan_in = the last dimension (``[out, in]`` linear
  weights, merged ``qkv_proj`` / ``gate_up_proj`` and ``[experts, out, in]`` MoE weights alike), so each projection of
  an RMS-normalised input is O(1): attention scores ``q.k/sqrt(d)`` have std about 1 (the softmax is neither flat nor
  one-hot, and every position of the context counts), MLP outputs are O(1), the residual grows about like
  sqrt(2 x layers) and stays far from bf16's range; ``lm_head`` after the final RMSNorm gives logits of std about 1;
* everything else, and every tensor of fewer than 16 bits (FP8/FP4 storage) or named ``...scale...`` (quantisation
  scales), goes to SGLang's own function unchanged, which keeps its handling of low-bit dtypes and tensor subclasses.

Each tensor gets its own stream: a ``torch.Generator`` on the tensor's device seeded with ``zlib.crc32(name, seed)``
(stable across processes, unlike ``hash()``), so the weights are identical in every server process, every backend
and every run for the same parameter name and shape. Values are made on the tensor's device (a CUDA stream differs
from a CPU one for the same seed; every server draws on the GPU, so they agree). Tensor parallelism: each rank fills
its own shard from the same stream (shards of one name are equal across ranks); row-parallel outputs are summed
over ranks, so their std grows like sqrt(tp). The serving harnesses run tp 1.

The hook: ``install_import_hook`` puts a finder at the front of ``sys.meta_path`` that, when
``sglang.srt.model_loader.loader`` is imported, lets the normal finders find it and wraps its loader so that right
after the module body ran (``from ...weight_utils import initialize_dummy_weights`` binds a module-level name that
``DummyModelLoader.load_model`` looks up at call time) the name is rebound to ``init_attn_dummy_weights``. The
``sitecustomize.py`` beside this file calls it in every Python process started with ``PAT_BENCH_DUMMY_WEIGHTS=attn``
and this folder on PYTHONPATH: SGLang's scheduler, which loads the model, is a spawned process of its own.

This module imports torch only when the weights are filled (``sitecustomize`` imports it in every process).
"""

from __future__ import annotations

import math
import sys
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if __package__:  # the harness side (``ab.dummy_weights``)
    from .pat_bench_import_hook import PatchFinder, install_patch
else:  # the server side: this folder's files are top-level modules
    from pat_bench_import_hook import PatchFinder, install_patch

if TYPE_CHECKING:
    import torch

#: The environment variable ``sitecustomize`` reads, and its one value that installs the hook.
ENV_VAR = "PAT_BENCH_DUMMY_WEIGHTS"
ATTN = "attn"
#: The module whose ``initialize_dummy_weights`` name is rebound, and that name.
TARGET_MODULE = "sglang.srt.model_loader.loader"
TARGET_NAME = "initialize_dummy_weights"
#: Begins the line printed to stderr (the server log) each time the weights are filled: the harness looks for it.
MARKER = "[pat-bench] dummy weights attn:"

# What ``init_rule`` says to do with one tensor.
ONE, ZERO, UNIFORM, SGLANG = "one", "zero", "uniform", "sglang"


def init_rule(name: str, shape: Sequence[int], bits: int) -> tuple[str, float]:
    """(what to do, target std) for the floating tensor ``name`` of ``shape`` with ``bits``-bit elements."""
    if bits < 16:  # FP8/FP4 storage: uniform_ cannot fill it directly; SGLang's function knows how
        return SGLANG, 0.0
    parts = name.split(".")
    if name.endswith("norm.weight"):
        return ONE, 1.0
    if parts[-1] == "bias":
        return ZERO, 0.0
    if "scale" in name:  # weight_scale, input_scale, k_scale, ...: left as SGLang has them for a quantised layer
        return SGLANG, 0.0
    if len(shape) >= 2 and shape[-1] > 0:
        if any("embed" in p for p in parts[:-1]) and "lm_head" not in parts:
            return UNIFORM, 1.0
        return UNIFORM, 1.0 / math.sqrt(shape[-1])
    return SGLANG, 0.0


def seed_of(name: str, seed: int = 1234) -> int:
    """The generator seed of tensor ``name``: CRC-32 of the name, started from ``seed`` (stable in every process)."""
    return zlib.crc32(name.encode(), seed & 0xFFFFFFFF)


def _sglang_init() -> Any:
    """SGLang's own ``initialize_dummy_weights`` (from weight_utils, whose name is never rebound)."""
    from sglang.srt.model_loader.weight_utils import initialize_dummy_weights

    return initialize_dummy_weights


def _tensor_module(tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A module whose state dict is exactly ``tensors`` (SGLang's function fills ``model.state_dict().values()``)."""
    import torch

    class _Tensors(torch.nn.Module):
        def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
            return dict(tensors)

    return _Tensors()


def init_attn_dummy_weights(model: torch.nn.Module, low: float = -1e-3, high: float = 1e-3, seed: int = 1234) -> None:
    """Fill ``model``'s floating tensors in place as the module docstring says. The parameters are SGLang's:
    ``low``/``high`` reach only the tensors left to SGLang's function; ``seed`` is also where every name's CRC
    starts."""
    import torch

    counts: Counter[str] = Counter()
    left: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not torch.is_floating_point(tensor):
                continue
            rule, std = init_rule(name, tuple(tensor.shape), torch.finfo(tensor.dtype).bits)
            counts[rule] += 1
            if rule == ONE:
                tensor.fill_(1.0)
            elif rule == ZERO:
                tensor.zero_()
            elif rule == UNIFORM:
                gen = torch.Generator(device=tensor.device)
                gen.manual_seed(seed_of(name, seed))
                half = std * math.sqrt(3.0)  # uniform(-a, a) has std a/sqrt(3)
                tensor.uniform_(-half, half, generator=gen)
            else:
                left[name] = tensor
        if left:
            _sglang_init()(_tensor_module(left), low, high, seed)
    print(f"{MARKER} {counts[UNIFORM]} tensors uniform with std 1/sqrt(fan_in) (embeddings 1), {counts[ONE]} norm "
          f"weights = 1, {counts[ZERO]} biases = 0, {counts[SGLANG]} left to SGLang's initialize_dummy_weights",
          file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- import hook
def patch_module(module: ModuleType) -> None:
    """Rebind ``module.initialize_dummy_weights`` to ``init_attn_dummy_weights`` (SGLang's stays in weight_utils)."""
    if getattr(module, TARGET_NAME, None) is not init_attn_dummy_weights:
        setattr(module, TARGET_NAME, init_attn_dummy_weights)
        print(f"[pat-bench] {module.__name__}.{TARGET_NAME} -> {__name__}.init_attn_dummy_weights", file=sys.stderr,
              flush=True)


def install_import_hook(target: str = TARGET_MODULE) -> PatchFinder:
    """Make the next import of ``target`` rebind its ``initialize_dummy_weights`` (at once if already imported)."""
    return install_patch(target, patch_module)
