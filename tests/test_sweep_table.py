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
    floors = load_script(BENCH / "sweep_table.py").read_floors(
        REPO / "docs/perf/kernels/2026-11-30-h200-d256-wgmma-rows/sweep-d256-m64.txt")
    assert list(floors) == list(rows) and floors["d64x4096"] == 509.8


def test_plot_sweeps_draws_one_panel_per_sweep(tmp_path) -> None:
    import pytest

    sweep_table = load_script(BENCH / "sweep_table.py")
    for name in ("sweep-d256.txt", "sweep-d128.txt"):
        (tmp_path / name).write_text((REPO / "docs/perf/kernels/2026-11-30-h200-loader-sectors" / name).read_text())
    panels = [("sweep-d256.txt", "d256"), ("sweep-d128.txt", "d128")]
    out = sweep_table.plot_sweeps(tmp_path, panels, ylabel="ratio", title="t", ylim=(0.9, 1.3))
    assert out == tmp_path / "plot.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = sweep_table.plot_sweeps(tmp_path, panels[:1], ylabel="ratio", title="t", out_name="other.png")
    assert other == tmp_path / "other.png" and other.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):  # a panel without a place on the grid, never a silently missing one
        sweep_table.plot_sweeps(tmp_path, panels, ylabel="ratio", title="t", grid=(1, 1))
