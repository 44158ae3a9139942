"""bench/sweep_table.py reads a saved tile_sweep table back (the kernel evidence folders' plots use it)."""

from __future__ import annotations

from scripts import BENCH, REPO, load_script


def test_reads_a_saved_sweep() -> None:
    read_sweep = load_script(BENCH / "sweep_table.py").read_sweep
    names, rows = read_sweep(REPO / "docs/perf/kernels/2026-11-30-h200-d256-wgmma-rows/sweep-d256-m64.txt")
    assert names == ["table", "16/4/2/wg/m64", "16/3/2/wg/m64", "32/2/2/wg/m64", "16/4/2/wg/c2", "again"]
    assert list(rows) == ["d64x4096", "d8x32768", "mooncake96", "a128", "e", "b"]  # the items lines are skipped
    assert rows["d64x4096"] == [657.0, 603.1, 598.9, 901.5, 649.7, 656.4]
    assert all(len(times) == len(names) for times in rows.values())
