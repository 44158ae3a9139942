"""Issue 9, fifty-second session: two small host measurements, warm, one process. (1) A wave's tally count: the
compiled ``pat_tally_refs`` against ``chain_table.tally_refs`` (the ``Counter``) on 256 synthetic paths of 11 nodes
(nine shared among four prefixes, two own: 2816 pairs). (2) A garbage-collection mark and its difference
(``GC_PAUSES.since(GC_PAUSES.mark())``, four per decode step) with ``GcMark`` a named tuple against the frozen
dataclass it was. Run from the repository root with the project's venv:
``.venv/bin/python docs/perf/host/2026-12-04-fiftysecond-micro.py``."""

import sys
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from pat_sglang import gc_pauses, host_core  # noqa: E402
from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402


@dataclass(frozen=True)
class FrozenMark:
    """``GcMark`` as it was before this session: a frozen dataclass."""

    collections: int
    seconds: float


def median_us(fn: object, repeats: int = 300) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main() -> None:
    rng = np.random.default_rng(1)
    keys = np.concatenate([np.concatenate([np.arange(9) + 100 * (i % 4), rng.integers(10**6, 10**7, size=2)])
                           for i in range(256)]).astype(np.int64)
    tokens = (keys % 97 + 1).astype(np.int64)
    core = host_core.loaded_batch()
    assert core is not None and core.tally_refs(keys, tokens) == ct.tally_refs(keys, tokens)
    print(f"tally of {keys.shape[0]} pairs ({len(ct.tally_refs(keys, tokens)[0])} distinct): "
          f"Counter {median_us(lambda: ct.tally_refs(keys, tokens)):.1f} us, "
          f"compiled {median_us(lambda: core.tally_refs(keys, tokens)):.1f} us")
    pauses = gc_pauses.GC_PAUSES
    pauses.mark()
    number, named = 200000, gc_pauses.GcMark
    for name, cls in (("named tuple", named), ("frozen dataclass", FrozenMark)):
        gc_pauses.GcMark = cls  # mark() and since() make whatever class the module holds
        try:
            per = timeit.timeit(lambda: pauses.since(pauses.mark()), number=number) / number * 1e6
        finally:
            gc_pauses.GcMark = named
        print(f"GC mark and its difference, {name}: {per:.2f} us")


if __name__ == "__main__":
    main()
