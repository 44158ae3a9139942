"""Start-up hook of the serving harnesses' SGLang servers (bench only): attention-dependent dummy weights.

Python's ``site`` imports the first ``sitecustomize`` module on ``sys.path`` when any interpreter starts. The harnesses
(``bench/ab/server.py: server_env``) put this folder first on the server's PYTHONPATH and set
``PAT_BENCH_DUMMY_WEIGHTS=attn``, so every process of that server, the spawned scheduler that loads the model
included, runs this file. With the variable at ``attn`` it installs ``pat_bench_dummy_weights.install_import_hook``
(SGLang's ``--load-format dummy`` then fills the model with ``init_attn_dummy_weights``); without it, or with
``sglang``, it changes nothing. With ``PAT_BENCH_LOOP_TRACE=<folder>`` it also installs the scheduler-loop timestamps of
``pat_bench_loop_trace.py`` (bench only: where a first token waits on the scheduler thread).

Shadowing: being first on the path, this file hides any other ``sitecustomize`` (a distribution's, or one of the GPU
machine's interpreter, not inspected). So that it does not silently replace it, this file then runs the next
``sitecustomize`` found on the ``sys.path`` entries after this folder, as ``site`` would have; an error there is
printed and ignored, as ``site`` does. ``usercustomize`` is imported by ``site`` separately and is not affected.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

import pat_bench_dummy_weights as hook  # beside this file: its folder is on sys.path, or this file was not found
import pat_bench_loop_trace

_HERE = os.path.dirname(os.path.realpath(__file__))

#: The ``sitecustomize`` this file shadowed and ran (None: there was none).
chained: ModuleType | None = None


def _install() -> None:
    mode = os.environ.get(hook.ENV_VAR, "")
    if mode == hook.ATTN:
        hook.install_import_hook()
    elif mode not in ("", "sglang"):
        print(f"[pat-bench] {hook.ENV_VAR}={mode!r} is neither 'attn' nor 'sglang': SGLang's dummy weights stay",
              file=sys.stderr, flush=True)
    pat_bench_loop_trace.install()


def _run_next_sitecustomize() -> ModuleType | None:
    """Run the ``sitecustomize`` that the entries of ``sys.path`` after this folder hold, if any."""
    entries = [os.path.realpath(p or os.curdir) for p in sys.path]
    if _HERE not in entries:
        return None
    rest = sys.path[entries.index(_HERE) + 1:]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # as site does: a broken sitecustomize must not stop the interpreter
        print(f"Error in sitecustomize {spec.origin} (run by {__file__}): {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)
    return module


_install()
chained = _run_next_sitecustomize()
