"""Issue 9, fifty-fifth session: the forest edit in one call (``kernels/host_glue.c`` ``edit_common``, with its new
and dissolved kept nodes) and the publisher pieces called through the extension module must not leak references. The
random edit sequences of ``tests/test_forest_edit.py`` (every answer: the kept nodes unchanged, remade, refused) are
replayed 300 times after a warm-up, then the crafted calls of its refusal test (NotImplemented and refusals) 20000
times: traced Python memory and the count of GC-tracked objects after each round must not grow (a reference leak in
the C would grow both). Run from the repository root with the project's venv:
``.venv/bin/python docs/perf/host/2026-12-04-fiftyfifth-leak-check.py``."""

import gc
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_forest_edit as tfe  # noqa: E402

from pat_sglang import host_core  # noqa: E402
from pat_sglang.forest_edit import RadixIndex  # noqa: E402
from pat_sglang.sglang_patches.chain_table import ChainEntry  # noqa: E402


def sequences(answers: Counter) -> None:
    """Every step of two random edit sequences, through the one call (its answers counted)."""
    for seed in (0, 1):
        with pytest.MonkeyPatch.context() as m:
            _, served = tfe._index_steps(seed, 2, True, m)
        answers.update(served)


def crafted(glue: object) -> None:
    """The refusal test's calls: a joiner off the kept chains, other tokens, a new kept node, one at the root, and
    arguments of another shape."""
    entries = [ChainEntry(i, 0, ((10 + i, 2000 + i, 3), (2, 1002, 5), (1, 1001, 10))) for i in range(3)]
    rows = np.arange(1, 4, dtype=np.int64)
    index = RadixIndex.of(tfe._fresh(entries, rows, np.array([20, 21, 22], np.int64), 0), tuple(entries), rows)
    kept = index.kept
    old_of = np.array([0, 1, 2, -1], np.int64)
    joiners = [ChainEntry(9, 0, sig) for sig in (
        ((30, 2030, 3), (1, 1001, 10)), ((30, 2030, 3), (2, 1002, 6), (1, 1001, 10)),
        ((31, 2031, 2), (10, 2010, 3), (2, 1002, 5), (1, 1001, 10)),
        ((31, 2031, 2), (10, 2010, 4), (2, 1002, 5), (1, 1001, 10)), ((31, 2031, 2), (10, 2010, 3)),
    )]
    seq = np.array([21, 22, 23, 24], np.int64)
    for joiner in joiners:
        for s in (seq, seq.astype(np.int32)):
            glue.edit_common(old_of, [3], [], (*entries, joiner), index.attach, index.first_private, kept.packed,
                             kept.ancestors.shape[1], kept.chain, kept.deepest, index.q, s, kept.top, kept.rank)


def main() -> None:
    glue = host_core.loaded_glue()
    assert glue is not None and host_core.loaded_batch().via_glue, "the extension module did not load"
    answers: Counter = Counter()
    for _ in range(20):
        sequences(answers)
        crafted(glue)
    gc.collect()
    tracemalloc.start()
    base, objects = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    print(f"warm: traced {base} B, {objects} GC-tracked objects; answers so far {dict(answers)}")
    for r in range(3):
        for _ in range(100):
            sequences(answers)
        for _ in range(6000):
            crafted(glue)
        gc.collect()
        now, count = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
        print(f"round {r + 1}: traced {now - base:+d} B, GC-tracked objects {count - objects:+d}")
    print(f"answers over the run: {dict(answers)}")


if __name__ == "__main__":
    main()
