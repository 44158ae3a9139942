"""Two decode CUDA graphs per batch size: one running PAT, one running the delegate backend.

Role in pack-forward-merge: lets the dispatch gate (``pat_sglang.dispatch``) choose per step under CUDA graphs. A
captured graph holds one backend's kernels, so SGLang's ``DecodeCudaGraphRunner`` captures each batch size once per
variant the attention backend names, and replays the variant the backend chose for the step, at no cost inside the
graph. The runner already keys its graphs by ``ShapeKey.variant_label`` (it records "lora"/"nolora" variants that way);
these wrappers add the backend's variant to that label:

* ``capture_one_shape(size, forward, stream_idx, variant_label)`` runs once per name in the backend's
  ``GRAPH_VARIANTS_ATTR``, with ``CAPTURE_VARIANT_ATTR`` set to it (the backend's capture-time metadata reads it);
* ``_resolve_lora_variant(forward_batch)`` appends the backend's ``REPLAY_VARIANT_ATTR``, which its
  ``init_forward_metadata_out_graph`` sets for the step just before the runner resolves the graph key.

A backend without ``GRAPH_VARIANTS_ATTR`` (or with it empty) sees the runner unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GRAPH_VARIANTS_ATTR = "graph_variants"  # tuple of variant names the backend captures (empty: one graph as usual)
CAPTURE_VARIANT_ATTR = "capture_variant"  # the variant being captured (None outside capture)
REPLAY_VARIANT_ATTR = "replay_variant"  # the variant the backend prepared the current step for


def graph_label(base: str | None, variant: str) -> str:
    """The runner's graph label for ``variant`` on top of its own label ``base`` (e.g. "lora")."""
    return variant if base is None else f"{base}+{variant}"


def _variants(runner: Any) -> tuple[str, ...]:
    return tuple(getattr(getattr(runner, "attn_backend", None), GRAPH_VARIANTS_ATTR, ()) or ())


def wrap_capture_one_shape(original: Callable[..., Any]) -> Callable[..., Any]:
    def capture_one_shape(
        self: Any, size: int, forward: Callable, stream_idx: int | None = None, variant_label: str | None = None
    ) -> Any:
        variants = _variants(self)
        if not variants:
            return original(self, size, forward, stream_idx, variant_label)
        backend = self.attn_backend
        out = None
        for variant in variants:
            setattr(backend, CAPTURE_VARIANT_ATTR, variant)
            try:
                out = original(self, size, forward, stream_idx, graph_label(variant_label, variant))
            finally:
                setattr(backend, CAPTURE_VARIANT_ATTR, None)
        return out

    return capture_one_shape


def wrap_resolve_lora_variant(original: Callable[..., Any]) -> Callable[..., Any]:
    def _resolve_lora_variant(self: Any, forward_batch: Any) -> str | None:
        base = original(self, forward_batch)
        variants = _variants(self)
        if not variants:
            return base
        chosen = getattr(self.attn_backend, REPLAY_VARIANT_ATTR, None)
        return graph_label(base, chosen if chosen in variants else variants[0])

    return _resolve_lora_variant
