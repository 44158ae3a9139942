"""Repository paths for tests, and loading a repository script (``bench/*.py``, ``tools/wheelhouse/*.py``) as a module:
scripts are not in a package, and some of them import each other by name, so the module is registered under its
file's stem."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"  # the benchmark scripts and their ``ab`` package
WHEELHOUSE = REPO / "tools" / "wheelhouse"


def on_path(folder: Path) -> None:
    """Make the modules of a repository script folder importable by name (``from ab import ...``, ``import pieces``)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod
