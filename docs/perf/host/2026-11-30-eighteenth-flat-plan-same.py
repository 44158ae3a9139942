"""PrefixForest.from_flat of this checkout against another checkout's (BASE=<checkout>, e.g. main before the change):
every forest array and slot_max equal on 2400 random inputs (random rows of pages 1 and 16 up to 4000 slots, int32
and int64; random radix trees laid out flat) and on bench/plan_speed.py's 256 x 4k cases.

    BASE=/work/main .venv/bin/python docs/perf/host/2026-11-30-eighteenth-flat-plan-same.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from plan_speed import flat_cases  # noqa: E402
from test_flat_forest import flat, random_rows  # noqa: E402

from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.workloads import layout_tree, random_tree  # noqa: E402

FIELDS = ("tok", "start", "parent", "depth", "req_ptr", "req_flat", "row_base", "request_lengths")


def base_forest() -> type:
    spec = importlib.util.spec_from_file_location("base_forest", Path(os.environ["BASE"]) / "pat_sglang" / "forest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_forest"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.PrefixForest


def main() -> int:
    base = base_forest()
    count = 0

    def same(indptr, indices) -> None:
        nonlocal count
        ours, theirs = PrefixForest.from_flat(indptr, indices), base.from_flat(indptr, indices)
        for name in FIELDS:
            a, b = getattr(ours, name), getattr(theirs, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert ours.slot_max == theirs.slot_max
        count += 1

    for seed in range(400):
        rng = np.random.default_rng(seed)
        for page in (1, 16):
            rows = random_rows(rng, page, max_rows=int(rng.integers(1, 40)), max_len=int(rng.choice([40, 900, 4000])))
            for dtype in (np.int32, np.int64):
                same(*flat(rows, dtype))
            tree = random_tree(rng, max_depth=6, max_requests=64, max_len=1500, page_size=page,
                               max_request_tokens=60000)
            batch = layout_tree(tree, page_size=page, rng=rng)
            same(batch.kv_indptr, batch.kv_indices)
    for indptr, indices in flat_cases().values():
        same(indptr, indices)
    print(f"identical forests (every array, slot_max): {count} inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
