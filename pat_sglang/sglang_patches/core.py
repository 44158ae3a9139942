"""The version-checked runtime patch layer: what SGLang's plugin API does not expose.

Role in pack-forward-merge: infrastructure for the hand-off into *pack*. ``PATCH_SETS`` maps each
supported SGLang release to the patches it needs; ``apply_patches`` refuses any other installed release
(a wrapped method can change meaning between releases, so nothing is patched blindly). Each patch names
the attribute it wraps, checks it exists, and marks its wrapper, so applying twice does nothing.

Adding a release: check the wrapped attributes still mean the same there, add ``"X.Y.Z": (...)`` to
``PATCH_SETS`` (reusing the patches that still apply), and run ``tests/test_plugin.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .graph_variants import wrap_capture_one_shape, wrap_resolve_lora_variant
from .publish import (
    PATCH_MARKER,
    RECACHING_PATCH,
    SPLITS_PATCH,
    wrap_cache_unfinished_req,
    wrap_forward_batch_init_new,
    wrap_split_node,
)


class UnsupportedSGLangVersion(RuntimeError):
    pass


@dataclass(frozen=True)
class Patch:
    """Wrap ``module.owner.attr`` (a function, method or classmethod) with ``make_wrapper(original)``."""

    name: str
    module: str
    owner: str
    attr: str
    make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]

    @property
    def target(self) -> str:
        return f"{self.module}.{self.owner}.{self.attr}"

    def _owner(self) -> Any:
        try:
            return getattr(importlib.import_module(self.module), self.owner)
        except (ImportError, AttributeError) as e:
            raise RuntimeError(f"PAT patch {self.name!r}: cannot find {self.module}.{self.owner}") from e

    def is_applied(self) -> bool:
        raw = self._owner().__dict__.get(self.attr)
        func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
        return getattr(func, PATCH_MARKER, None) == self.name

    def apply(self) -> bool:
        """Install the wrapper; ``False`` if it was already installed."""
        owner = self._owner()
        if self.attr not in owner.__dict__:
            raise RuntimeError(f"PAT patch {self.name!r}: {self.target} does not exist in the installed SGLang")
        if self.is_applied():
            return False
        raw = owner.__dict__[self.attr]
        kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
        original = raw.__func__ if kind is not None else raw
        if not callable(original):
            raise RuntimeError(f"PAT patch {self.name!r}: {self.target} is not callable")
        wrapper = self.make_wrapper(original)
        setattr(wrapper, PATCH_MARKER, self.name)
        wrapper.__pat_sglang_original__ = original  # type: ignore[attr-defined]
        setattr(owner, self.attr, kind(wrapper) if kind is not None else wrapper)
        return True

    def remove(self) -> None:
        """Restore the original (tests only)."""
        owner = self._owner()
        if not self.is_applied():
            return
        raw = owner.__dict__[self.attr]
        kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
        wrapper = raw.__func__ if kind is not None else raw
        original = wrapper.__pat_sglang_original__
        setattr(owner, self.attr, kind(original) if kind is not None else original)


PUBLISH_DECODE_CHAINS = Patch(
    name="publish-decode-chains",
    module="sglang.srt.model_executor.forward_batch_info",
    owner="ForwardBatch",
    attr="init_new",
    make_wrapper=wrap_forward_batch_init_new,
)

COUNT_RADIX_SPLITS = Patch(
    name=SPLITS_PATCH,
    module="sglang.srt.mem_cache.radix_cache",
    owner="RadixCache",
    attr="_split_node",
    make_wrapper=wrap_split_node,
)

COUNT_RADIX_RECACHING = Patch(
    name=RECACHING_PATCH,
    module="sglang.srt.mem_cache.radix_cache",
    owner="RadixCache",
    attr="cache_unfinished_req",
    make_wrapper=wrap_cache_unfinished_req,
)

_DECODE_GRAPH_RUNNER = "sglang.srt.model_executor.runner.decode_cuda_graph_runner"

CAPTURE_GRAPH_VARIANTS = Patch(
    name="capture-graph-variants",
    module=_DECODE_GRAPH_RUNNER,
    owner="DecodeCudaGraphRunner",
    attr="capture_one_shape",
    make_wrapper=wrap_capture_one_shape,
)

REPLAY_GRAPH_VARIANT = Patch(
    name="replay-graph-variant",
    module=_DECODE_GRAPH_RUNNER,
    owner="DecodeCudaGraphRunner",
    attr="_resolve_lora_variant",
    make_wrapper=wrap_resolve_lora_variant,
)

# Installed SGLang release -> the patches it needs.
PATCH_SETS: dict[str, tuple[Patch, ...]] = {
    "0.5.17": (
        PUBLISH_DECODE_CHAINS, COUNT_RADIX_SPLITS, COUNT_RADIX_RECACHING, CAPTURE_GRAPH_VARIANTS, REPLAY_GRAPH_VARIANT,
    ),
}
SUPPORTED_SGLANG_VERSIONS: tuple[str, ...] = tuple(PATCH_SETS)
# Both graph-variant patches, or neither: the backend captures per-variant graphs only when both are in place.
GRAPH_VARIANT_PATCHES: tuple[Patch, ...] = (CAPTURE_GRAPH_VARIANTS, REPLAY_GRAPH_VARIANT)


def graph_variants_patched() -> bool:
    """Whether the installed runner captures and replays per-variant decode graphs (both patches applied)."""
    try:
        return all(p.is_applied() for p in GRAPH_VARIANT_PATCHES)
    except RuntimeError:  # the runner class is not there (another SGLang layout)
        return False


def installed_sglang_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        from sglang.version import __version__  # source checkouts without metadata

        return str(__version__)


def patches_for(version: str) -> tuple[Patch, ...]:
    if version not in PATCH_SETS:
        raise UnsupportedSGLangVersion(
            f"pat-sglang supports SGLang {', '.join(SUPPORTED_SGLANG_VERSIONS)}, but SGLang {version} is "
            f"installed: install a supported release (e.g. pip install sglang=={SUPPORTED_SGLANG_VERSIONS[-1]})"
        )
    return PATCH_SETS[version]


def apply_patches(version: str | None = None) -> list[str]:
    """Apply the patch set of the installed SGLang; returns the names newly applied (empty the 2nd time)."""
    patches = patches_for(version or installed_sglang_version())
    return [p.name for p in patches if p.apply()]
