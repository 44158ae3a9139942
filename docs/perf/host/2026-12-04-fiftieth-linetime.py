"""Issue 9: the host time of each top-level statement (and of each statement inside a ``with`` block) of chosen
functions, over the host replay's timed steps at batch 256 x 1k (``bench/host_replay.py``). Each function is re-compiled
from its source with a ``perf_counter`` stamp after every statement (functions called inside an instrumented one are
timed as one statement there, and pay the stamps' own cost where they are instrumented too). Prints the statements
costing at least 0.8 us per replay step. Run from the repository root with the project's venv:

    .venv/bin/python docs/perf/host/2026-12-04-fiftieth-linetime.py chain_table:ChainTable.publish_rows,planner:_plan

Optional (fifty-first session): ``REPLAY`` (the replay's arguments, default below), ``MIN_US`` (print threshold, default
0.8 us per step; 0 prints the statements of rare steps too). Instrument callees before their callers; a module-level
function imported by another module (``planner:plan_forest`` in ``decode_step``) is rebound there too.
"""

import ast
import inspect
import os
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import host_replay as hr  # noqa: E402

from pat_sglang import backend, decode_step, forest_edit, kernels, planner  # noqa: E402
from pat_sglang.sglang_patches import chain_table, publish  # noqa: E402

MODULES = {m.__name__.rsplit(".", 1)[-1]: m for m in (backend, decode_step, forest_edit, kernels, planner,
                                                       chain_table, publish)}
STATS: dict[str, list[float]] = defaultdict(list)
REPLAY = os.environ.get("REPLAY", "--batch 256 --context 1k --no-plan-speed --no-progress").split()


def instrument(module: object, qualname: str) -> None:
    parts = qualname.split(".")
    owner = module
    for p in parts[:-1]:
        owner = getattr(owner, p)
    fn = getattr(owner, parts[-1])
    src = textwrap.dedent(inspect.getsource(fn))
    lines = src.splitlines()
    tree = ast.parse(src)
    fdef = tree.body[0]
    fdef.decorator_list = []

    def wrap(body: list) -> list:
        out = []
        for stmt in body:
            if isinstance(stmt, (ast.With, ast.Try)):  # (Try bodies: fifty-seventh session)
                stmt.body = wrap(stmt.body)
            out.append(stmt)
            label = f"{qualname}:{stmt.lineno}:{lines[stmt.lineno - 1].strip()[:60]}"
            out.extend(ast.parse(f"__t1 = __pc(); __rec({label!r}, __t1 - __t0); __t0 = __t1").body)
        return out

    fdef.body = [ast.parse("__t0 = __pc()").body[0], *wrap(fdef.body)]
    ast.fix_missing_locations(tree)
    ns = dict(vars(module))
    ns["__pc"] = time.perf_counter
    ns["__rec"] = lambda k, v: STATS[k].append(v * 1e6)
    exec(compile(tree, inspect.getsourcefile(fn), "exec"), ns)
    new = ns[fdef.name]
    if isinstance(inspect.getattr_static(owner, parts[-1]), staticmethod):
        new = staticmethod(new)
    setattr(owner, parts[-1], new)
    for m in MODULES.values():  # rebind names other modules imported
        if len(parts) == 1 and getattr(m, parts[-1], None) is fn:
            setattr(m, parts[-1], new)


def main(argv: list[str]) -> None:
    for q in argv[0].split(","):
        mod, name = q.split(":")
        instrument(MODULES[mod], name)
    hr.main(REPLAY)
    steps = 2010  # timed steps + warm-up steps the replay runs the host path for
    for k, v in STATS.items():
        if sum(v) / steps >= float(os.environ.get("MIN_US", "0.8")):
            print(f"{sum(v) / steps:7.1f} us/step  n={len(v):6d} p50 {np.percentile(v, 50):6.1f}  {k}")


if __name__ == "__main__":
    main(sys.argv[1:])
