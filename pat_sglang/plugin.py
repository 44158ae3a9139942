"""SGLang plugin entry point: ``[project.entry-points."sglang.srt.plugins"] pat = "pat_sglang.plugin:register"``.

Role in pack-forward-merge: wires the whole pipeline into SGLang. ``register()`` applies the
version-checked patch layer (publishing radix chains into *pack*), adds ``pat`` to the choices of
``--attention-backend`` / ``--decode-attention-backend`` / ``--prefill-attention-backend`` and registers
the factory that builds ``PATAttnBackend`` from the model runner. Idempotent: SGLang loads plugins in
several processes and may call it more than once.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

BACKEND_NAME = "pat"


def create_pat_backend(model_runner: Any) -> Any:
    """Attention-backend factory (SGLang calls it with the model runner).

    A model PAT cannot serve (``backend.UnsupportedModel``: MLA, sliding windows, logit caps, per-head FP8 scales,
    ...) runs entirely on the delegate, the backend SGLang would have picked (or ``PAT_SGLANG_DELEGATE``), with one
    warning saying why: a server started with ``--attention-backend pat`` never serves slower than without it. Bad
    PAT settings (an unknown delegate, a fraction out of range) still stop the start with their error."""
    from .backend import PATAttnBackend, UnsupportedModel, build_delegate  # lazily: only PAT's processes pay

    try:
        return PATAttnBackend(model_runner)
    except UnsupportedModel as e:
        delegate, name, why = build_delegate(model_runner)
        logger.warning(f"PAT: {e}; every batch of this model runs on the {name!r} attention backend ({why}; pass "
                       f"--attention-backend {name} to start it directly)")
        return delegate


def register() -> None:
    # Patches first: on an unsupported SGLang this raises before anything is registered.
    from pat_sglang.sglang_patches import apply_patches

    apply_patches()

    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS, register_attention_backend
    from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES, add_attention_backend_choices

    if BACKEND_NAME not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([BACKEND_NAME])
    if ATTENTION_BACKENDS.get(BACKEND_NAME) is not create_pat_backend:
        register_attention_backend(BACKEND_NAME)(create_pat_backend)
