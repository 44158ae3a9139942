"""Issue 9: the host extension module built for size (-Os) against the default -O2, as a paired A/B inside one
Mooncake host replay (``bench/host_ab.py``'s method: each decode step's side drawn at random), fifty-sixth session.

Why: the compiled pieces' cost in a changed step is mostly a fixed cold cost (``2026-12-04-fiftysixth-cold-calls.py``:
the planning pass +53-57 us after evicting 128 MiB, whatever the forest's size), so a smaller code footprint might
shorten it. The second module is the same sources built with ``ALT`` (default -Os) and loaded from its own path; both
the planner's calls (``host_core.loaded_glue``) and the publisher's (``host_core.loaded_batch``) switch with the side.

    .venv/bin/python docs/perf/host/2026-12-04-fiftysixth-ab-glue-flags.py --batch 256 --context 1k
"""

import importlib.machinery
import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_ab as ab  # noqa: E402

from pat_sglang import host_core  # noqa: E402

ALT = os.environ.get("ALT", "-Os")


def load_glue(opt: str):
    saved = host_core.COMPILE_FLAGS
    host_core.COMPILE_FLAGS = (opt, *saved[1:])
    try:
        flags = (*host_core.layout_flags(), *host_core.python_include_flags(), f"-I{np.get_include()}")
        path = host_core.library_path(host_core.GLUE_SOURCE_NAMES, flags, host_core.GLUE_MODULE)
    finally:
        host_core.COMPILE_FLAGS = saved
    loader = importlib.machinery.ExtensionFileLoader(host_core.GLUE_MODULE, str(path))
    spec = importlib.util.spec_from_file_location(host_core.GLUE_MODULE, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def switch() -> ab.Switch:
    state: dict = {}

    @contextmanager
    def installed():
        core, batch = host_core.loaded(), host_core.loaded_batch()
        glues = [core.glue, load_glue(ALT)]
        state.update(core=core, glues=glues, batches=[batch, host_core._HostBatch(None, glues[1])], side=0)
        loader = host_core.loaded_batch
        host_core.loaded_batch = lambda: state["batches"][state["side"]]
        try:
            yield
        finally:
            core.glue = glues[0]
            host_core.loaded_batch = loader

    def set_side(backend, side: int) -> None:
        state["side"] = side
        state["core"].glue = state["glues"][side]

    return ab.Switch((host_core.COMPILE_FLAGS[0], ALT), set_side, installed)


if __name__ == "__main__":
    ab.SWITCHES["glue-flags"] = switch
    ab.main(["--switch", "glue-flags", *sys.argv[1:]])
