"""``bench/item_costs.py`` on the CPU: CTA stamps map to their items in the kernel's CTA order, the per-tile fit
recovers known lines, and saved records report the same as fresh ones."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scripts import REPO, load_script

from pat_sglang.planner import ITEM_FIELDS, ITEM_KV_BEGIN, ITEM_KV_END, ITEM_TILE_M


@pytest.fixture(scope="module")
def costs():
    return load_script(REPO / "bench" / "item_costs.py")


def synthetic(rng: np.random.Generator, kv_heads: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Items of tile m 16 and 64 with random KV lengths, and stamps whose durations follow a known line per tile."""
    truth = {16: (3.0, 40.0), 64: (5.0, 90.0)}  # overhead us, us per 1000 tokens
    n = 40
    items = np.zeros((n, ITEM_FIELDS), dtype=np.int32)
    kv = rng.integers(100, 4000, n)
    begin = rng.integers(0, 10_000, n)
    items[:, ITEM_KV_BEGIN] = begin
    items[:, ITEM_KV_END] = begin + kv
    tiles = rng.choice([16, 64], n)
    items[:, ITEM_TILE_M] = tiles
    rows = np.where(tiles == 64, 64, 4)
    stamps = np.zeros((n * kv_heads, 4), dtype=np.int64)
    for cta in range(n * kv_heads):
        item = cta // kv_heads
        start = 1_000_000 + int(rng.integers(0, 50_000))
        overhead, per_k = truth[int(tiles[item])]
        dur_ns = int((overhead + per_k * kv[item] / 1e3) * 1e3)
        stamps[cta] = (start, start + 500, start + dur_ns - 300, start + dur_ns)
    return items, rows, stamps, truth


def test_records_follow_the_kernel_cta_order(costs) -> None:
    rng = np.random.default_rng(1)
    items, rows, stamps, _ = synthetic(rng)
    recs = costs.cta_records("t", "model", items, rows, 4, stamps)
    assert len(recs) == 160
    assert min(r["start_ns"] for r in recs) == 0
    for cta, r in enumerate(recs):  # blockIdx.y = item, blockIdx.x = KV head: item-major
        assert (r["item"], r["kv_head"]) == divmod(cta, 4)
        it = items[r["item"]]
        assert r["kv"] == it[ITEM_KV_END] - it[ITEM_KV_BEGIN] and r["tile_m"] == it[ITEM_TILE_M]
        assert r["end_ns"] - r["start_ns"] == stamps[cta, 3] - stamps[cta, 0]
    with pytest.raises(ValueError, match="KV heads"):
        costs.cta_records("t", "model", items, rows, 8, stamps)


def test_fit_recovers_each_tiles_line(costs) -> None:
    rng = np.random.default_rng(2)
    items, rows, stamps, truth = synthetic(rng)
    fits = costs.fit_tile_costs(costs.cta_records("t", "model", items, rows, 4, stamps))
    assert set(fits) == set(truth)
    for tile, (overhead, per_k) in truth.items():
        got_overhead, got_per_k, n = fits[tile]
        assert n > 0
        assert got_overhead == pytest.approx(overhead, abs=0.01) and got_per_k == pytest.approx(per_k, rel=1e-3)
    one_length = [{"tile_m": 32, "kv": 512, "start_ns": 0, "end_ns": 7000}] * 3
    overhead, per_k, n = costs.fit_tile_costs(one_length)[32]
    assert overhead == pytest.approx(7.0) and math.isnan(per_k) and n == 3


def test_saved_records_report_as_fresh_ones(costs, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    items, rows, stamps, _ = synthetic(rng)
    recs = costs.cta_records("t", "1024", items, rows, 4, stamps)
    launches = [{"case": "t", "split": "1024", "items": 40, "partials": 12, "max_chain": 3, "forward_us": 150.5,
                 "launch_us": 160.0}]
    costs.write_csv(tmp_path / "ctas.csv.gz", costs.CTA_FIELDS, recs)
    costs.write_csv(tmp_path / "launches.csv", costs.LAUNCH_FIELDS, launches)
    fresh = costs.report(recs, launches)
    saved = costs.report(costs.read_csv(tmp_path / "ctas.csv.gz"), costs.read_csv(tmp_path / "launches.csv"))
    assert saved == fresh
    assert "9.5" in fresh  # the merge: the whole launch less the forward span


def test_a_runs_configuration_is_saved_and_reported(costs, tmp_path: Path) -> None:
    """Runs of other heads or KV dtypes (``--heads``, ``--head-dim``, ``--kv-dtype``) write their configuration into
    ``launches.csv``; the report names it, and ``split_model_check.py`` plans that run's trees with those heads."""
    import torch

    rng = np.random.default_rng(4)
    items, rows, stamps, _ = synthetic(rng)
    recs = costs.cta_records("t", "model", items, rows, 4, stamps)
    launches = [{"case": "b", "split": "model", "items": 40, "partials": 12, "max_chain": 3, "forward_us": 150.5,
                 "launch_us": 160.0, "heads": "64/8", "head_dim": 256, "kv_dtype": "fp8_e4m3"}]
    costs.write_csv(tmp_path / "launches.csv", costs.LAUNCH_FIELDS + costs.CONFIG_FIELDS, launches)
    saved = costs.read_csv(tmp_path / "launches.csv")
    assert costs.report(recs, saved).splitlines()[0] == "heads 64/8, head dim 256, KV fp8_e4m3"
    check = load_script(REPO / "bench" / "split_model_check.py")
    heads = check.launch_heads(tmp_path / "launches.csv")
    assert (heads.num_q_heads, heads.num_kv_heads, heads.head_dim, heads.kv_dtype) == (64, 8, 256,
                                                                                       torch.float8_e4m3fn)
    old = tmp_path / "old.csv"  # written before the config columns: the defaults the model was fitted on
    costs.write_csv(old, costs.LAUNCH_FIELDS, [{k: launches[0][k] for k in costs.LAUNCH_FIELDS}])
    assert check.launch_heads(old) == check.HEADS
    assert costs.report(recs, costs.read_csv(old)).startswith("per tile m")


@pytest.mark.parametrize("text", ["64", "64/0", "6/4", "a/b"])
def test_bad_heads_are_refused(costs, text: str, tmp_path: Path) -> None:
    """``--heads`` reads HQ/HKV with the sweeps' parser (``tile_sweep.parse_heads``): malformed ones end the run before
    anything is measured or read; well-formed ones reach the run (here: a report folder with no records)."""
    with pytest.raises(SystemExit) as refused:
        costs.main(["--heads", text, "--report", str(tmp_path)])
    assert refused.value.code == 2  # argparse's usage error
    with pytest.raises(FileNotFoundError):
        costs.main(["--heads", "64/8", "--report", str(tmp_path)])


def test_the_fit_becomes_a_measured_costs_entry(costs) -> None:
    """``--costs``: the per-tile lines in the planner's unit, keyed as ``planner.MEASURED_ITEM_COSTS`` is; 16-bit 32/8
    d128 at the fit's own rate (61.5 us per 1000 tokens) costs a token its 512 bytes."""
    from pat_sglang.planner import SLOT_BYTES_PER_US

    fits = {16: (6.0, 61.5, 100), 32: (8.0, math.nan, 3), 64: (23.0, 90.0, 40)}
    launches = [{"heads": "64/8", "head_dim": 128, "kv_dtype": "fp8_e4m3"}]
    entry = costs.cost_entry(fits, launches)
    key, body = entry.rstrip(",").split(": ", 1)
    assert key == '("fp8", 128, 8)'
    parsed = ast.literal_eval(body)  # a dict literal of ints: what the planner's table holds
    assert set(parsed) == {16, 64}  # tile 32's line is not determined: left to the default
    assert parsed[16] == (round(6.0 * SLOT_BYTES_PER_US), round(0.0615 * SLOT_BYTES_PER_US))
    assert abs(parsed[16][1] - 512) <= 1 and parsed[64][1] > parsed[16][1]
    bf16 = costs.cost_entry(fits, [{"heads": "32/8", "head_dim": 256, "kv_dtype": "bf16"}])
    assert bf16.startswith('("16bit", 256, 4): ')
    with pytest.raises(ValueError, match="configuration"):
        costs.cost_entry(fits, [{"case": "b"}])
