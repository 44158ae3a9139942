"""Bench-only import hook: run a patch function on a module right after its body ran, in a server's own processes.

``install_patch(target, patch)`` puts a finder at the front of ``sys.meta_path`` that finds nothing itself: for
``target`` it asks the finders after it and wraps the loader of what they found, so that ``patch(module)`` runs right
after the module body (at once if ``target`` is already imported). The ``sitecustomize.py`` beside this file installs
the hooks of this folder's modules in every process of a harness's SGLang server (SGLang's scheduler is a spawned
process of its own, so a patch made in the launching process would not reach it).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

#: Attribute that marks this module's finders (two copies of this module, imported as a top-level module and inside
#: the ``ab.dummy_weights`` package, must still skip each other's finders, or each would ask the other forever).
FINDER_MARKER = "_pat_bench_patch_finder"


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then the patch; any other attribute (get_source, get_resource_reader, ...) is the real
    loader's, so tracebacks and resources behave as without the hook."""

    def __init__(self, inner: importlib.abc.Loader, patches: list[Callable[[ModuleType], None]]) -> None:
        self._inner = inner
        self._patches = patches

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        for patch in self._patches:
            patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PatchFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``target`` it asks the finders after it and wraps the loader of what they found with
    ``patches`` (in order)."""

    _pat_bench_patch_finder = True

    def __init__(self, target: str, patch: Callable[[ModuleType], None]) -> None:
        self.target = target
        self.patches = [patch]

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.target:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if getattr(finder, FINDER_MARKER, False) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader, self.patches)
            else:
                print(f"[pat-bench] cannot hook {fullname}: its loader {spec.loader!r} has no exec_module; it stays "
                      "unpatched", file=sys.stderr, flush=True)
            return spec
        return None


def install_patch(target: str, patch: Callable[[ModuleType], None]) -> PatchFinder:
    """Make the next import of ``target`` run ``patch(module)`` after its body (at once if already imported). One
    finder per target: a second patch of the same target joins its list (a patch installed twice runs once)."""
    finder = next((f for f in sys.meta_path if getattr(f, FINDER_MARKER, False) and f.target == target), None)
    if finder is None:
        finder = PatchFinder(target, patch)
        sys.meta_path.insert(0, finder)
    elif patch not in finder.patches:
        finder.patches.append(patch)
    if target in sys.modules:
        patch(sys.modules[target])
    return finder
