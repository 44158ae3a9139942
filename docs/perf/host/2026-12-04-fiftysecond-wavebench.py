"""Issue 9, fifty-second session: a wave of 256 joining requests (radix chains of ~11 nodes under four system prompts,
the tests' harness over SGLang's real RadixCache) published into a fresh table, with the publisher's compiled wave
pieces (``kernels/host_batch.c``: the chain signatures, the wave's entries, the entries' node index, the tally's count)
against their Python versions, alternating in one process (warm); then a cProfile of the compiled path. Run from the
repository root with the project's venv: ``.venv/bin/python docs/perf/host/2026-12-04-fiftysecond-wavebench.py``."""

import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_publish_wave as tpw  # noqa: E402
from sglang_harness import RadixHarness  # noqa: E402

from pat_sglang.sglang_patches import chain_table as ct  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

ROUNDS, REPEATS = 8, 30
SET_ENTRIES = ct.ChainTable._set_entries
REBUILD = ct._Tally.rebuild


def python_rebuild(self: ct._Tally, rows: list, entries: tuple, keys: object, tokens: object) -> int:
    """``_Tally.rebuild`` with the Python count (``chain_table.tally_refs``), as before the compiled one."""
    self.version += 1
    self.by_row = dict(zip(rows, entries, strict=True))
    self.refs, self.total = ct.tally_refs(keys, tokens)
    return self.total


def python_set_entries(self: ct.ChainTable, made: object) -> None:
    """``_set_entries`` with a wave's loop in Python (``_set_wave``), as before the compiled ``set_wave``."""
    if not isinstance(made, ct.Wave):
        SET_ENTRIES(self, made)
        return
    self._row_room_each(made.rows)
    self._set_wave(made)
    self._row_paths.set_many(made)


def use(pieces: tuple) -> None:
    ct.wave_signatures, ct.make_entries, ct.ChainTable._set_entries, ct._Tally.rebuild = pieces


def main() -> None:
    rng = np.random.default_rng(4)
    h = RadixHarness(max_reqs=300, max_context=512, num_slots=1 << 17)
    systems = [rng.integers(1000, 2000, size=40).tolist() for _ in range(4)]
    tpw.join(h, tpw.prompts(rng, 256, systems))
    batch = h.schedule_batch(list(range(len(h.reqs))))
    sides = {"compiled": (ct.wave_signatures, ct.make_entries, SET_ENTRIES, REBUILD),
             "python": (ct._wave_signatures, ct._make_entries, python_set_entries, python_rebuild)}
    res: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, pieces in sides.items():
            use(pieces)
            times = []
            for _ in range(REPEATS):
                table = ct.ChainTable(enabled=True)
                start = time.perf_counter()
                publish_decode_batch(batch, table)
                times.append(time.perf_counter() - start)
                assert table.batch is not None and len(table.entries) == 256
            res[name].append(float(np.median(times)) * 1e6)
    depth = np.mean([len(e.signature) for e in table.entries.values()])
    print(f"radix chain depth mean {depth:.2f}")
    for name, values in res.items():
        print(f"{name:9s} wave of 256, publish us (median of {REPEATS}, per round): "
              + " ".join(f"{v:.0f}" for v in values) + f" | median {np.median(values):.0f}")
    use(sides["compiled"])
    profile = cProfile.Profile()
    for _ in range(20):
        table = ct.ChainTable(enabled=True)
        profile.enable()
        publish_decode_batch(batch, table)
        profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
