"""``bench/split_model_check.py`` on the CPU: saved runs parse to per-case times, and a case's ratio is the measured
time of the fixed length whose plan equals the planner's pick over the fastest (NaN when none equals it)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scripts import REPO, load_script


@pytest.fixture(scope="module")
def check():
    return load_script(REPO / "bench" / "split_model_check.py")


def test_saved_runs_parse(check, tmp_path: Path) -> None:
    sweep = tmp_path / "tile.txt"
    sweep.write_text(
        "device: X; floor ...\n"
        "       case    floor      table     s2048      s512       fa3     fi_tc\n"
        "          b     74.0      122.8     139.5     134.2       n/a     260.1\n"
        "            items/partials: table 152/512, s2048 144/384, s512 176/896\n"
    )
    assert check.sweep_times(sweep) == {"b": {None: 122.8, 2048: 139.5, 512: 134.2}}
    tables = load_script(REPO / "bench" / "tile_tables.py")  # the reader the committed plots use too
    assert tables.read_table(sweep) == {"b": {"floor": 74.0, "table": 122.8, "s2048": 139.5, "s512": 134.2,
                                              "fi_tc": 260.1}}
    launches = tmp_path / "launches.csv"
    launches.write_text("case,split,items,partials,max_chain,forward_us,launch_us\n"
                        "e,model,200,896,7,58.1,64.8\ne,512,200,896,7,57.9,64.0\n")
    assert check.launch_times(launches) == {"e": {None: 64.8, 512: 64.0}}


def test_long_column_names_read_back(tmp_path: Path) -> None:
    tables = load_script(REPO / "bench" / "tile_tables.py")
    names = ["table", "16/4/4@v14.cu", "16/4/4/r-1", "fa3"]
    row = "        gsp64    103.9      118.2     122.4     119.8     149.3"
    sweep = tmp_path / "tile.txt"
    sweep.write_text(f"device: X\n{tables.table_header(names)}\n{row}\n")
    assert tables.read_table(sweep) == {"gsp64": {"floor": 103.9, "table": 118.2, "16/4/4@v14.cu": 122.4,
                                                  "16/4/4/r-1": 119.8, "fa3": 149.3}}
    ran_together = tmp_path / "old.txt"  # the header before table_header: the long name touched its neighbours
    ran_together.write_text("device: X\n       case    floor      table16/4/4@v14.cu16/4/4/r-1       fa3\n"
                            f"{row}\n")
    assert tables.read_table(ran_together) == {}
    assert tables.read_table(ran_together, columns=names) == tables.read_table(sweep)


def test_the_pick_is_read_off_the_column_with_its_plan(check, capsys) -> None:
    from pat_sglang.forest import PrefixForest
    from pat_sglang.planner import plan_forest

    indptr, indices, _ = check.case_batch("b", np.random.default_rng(0))
    pick = plan_forest(PrefixForest.from_flat(indptr, indices), check.HEADS, check.H200)
    other = 256 if pick.split_tokens > 256 else 8192
    ratios = check.check("run", {"b": {pick.split_tokens: 120.0, other: 100.0, None: 110.0}})
    assert ratios == [pytest.approx(1.2)]
    ratios = check.check("run", {"b": {other: 100.0}})
    assert len(ratios) == 1 and math.isnan(ratios[0])
    assert "not among the measured plans" in capsys.readouterr().out


def test_a_sweeps_heads_and_kv_dtype_come_from_its_device_line(check, tmp_path: Path) -> None:
    """A sweep names the heads and KV dtype it was timed with; the check plans with those (a 64/8 FP8 sweep checked
    with 32/8 bf16 plans would compare other plans' picks). A line without them (older runs): the defaults."""
    import torch

    sweep = tmp_path / "fp8.txt"
    sweep.write_text("device: NVIDIA H200; SMs 132; times in us (median); KV fp8_e4m3; heads 64/8, head dim 256; "
                     "table variant 32/3/2/wg/n32; floor: ...\n       case    floor      table\n")
    heads = check.sweep_heads(sweep)
    assert (heads.num_q_heads, heads.num_kv_heads, heads.head_dim) == (64, 8, 256)
    assert heads.kv_fp8 and heads.kv_dtype == torch.float8_e4m3fn
    bf16 = tmp_path / "bf16.txt"
    bf16.write_text("device: NVIDIA H200; KV bf16; heads 32/32, head dim 128; ...\n")
    assert not check.sweep_heads(bf16).kv_fp8 and check.sweep_heads(bf16).num_kv_heads == 32
    old = tmp_path / "old.txt"
    old.write_text("device: NVIDIA H200; SMs 132; times in us (median)\n")
    assert check.sweep_heads(old) == check.HEADS
