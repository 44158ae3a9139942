"""``bench/split_regret.py``'s CPU half: the candidates it records are the ones the planner costs, and a planner's
regret on a tree is the time of the length it picks over the fastest timed candidate's (times here are made up: the
GPU half measures them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from scripts import REPO, load_script

from pat_sglang import planner
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest

H200 = DeviceSpec(sm_count=132, arch="sm90")


@pytest.fixture(scope="module")
def sr():
    return load_script(REPO / "bench" / "split_regret.py")


@pytest.mark.parametrize("name", ["0", "7", "case:0:b", "case:1:e", "case:2:gsp:4:16:64:4096:256:256"])
def test_recorded_candidates_are_the_planners_and_hold_its_pick(sr, name: str) -> None:
    indptr, indices, _ = sr.tree_inputs(name)
    forest = PrefixForest.from_flat(indptr, indices)
    for heads in sr.head_configs("bf16"):
        pick, candidates = sr.pick_and_candidates(forest, heads, H200)
        assert pick == planner.plan_forest(forest, heads, H200).split_tokens
        assert pick in candidates
        assert candidates == sorted(set(candidates), reverse=True)  # _split_candidates: distinct, longest first


def test_a_serving_window_case_is_its_batch(sr) -> None:
    """``gsp:GROUPS:PER_GROUP:BATCH:PREFIX:QUESTION:GENERATED``: BATCH requests, each its group's prefix + its
    question + 0..GENERATED tokens, and the same tree for the same name (the seed follows the case's place)."""
    indptr, indices, _ = sr.tree_inputs("case:3:gsp:4:16:64:4096:256:256")
    lengths = (indptr[1:] - indptr[:-1]).tolist()
    assert len(lengths) == 64
    assert all(4096 + 256 <= n <= 4096 + 256 + 256 for n in lengths)
    again = sr.tree_inputs("case:3:gsp:4:16:64:4096:256:256")
    assert torch.equal(torch.as_tensor(indices), torch.as_tensor(again[1]))
    with pytest.raises(ValueError, match="GROUPS"):
        sr.tree_inputs("case:0:gsp:4:16:64")


def _records(sr, names: list[str], kv_dtype: str, fastest: str) -> dict[str, dict]:
    """Made-up times per candidate: ``fastest`` "longest" or "pick" decides which candidate is 100 us; the others
    are 100 us + 1% per place away from it."""
    out = {}
    for name in names:
        indptr, indices, _ = sr.tree_inputs(name)
        forest = PrefixForest.from_flat(indptr, indices)
        for heads in sr.head_configs(kv_dtype):
            pick, candidates = sr.pick_and_candidates(forest, heads, H200)
            best = 0 if fastest == "longest" else candidates.index(pick)
            us = {str(c): 100.0 * (1 + 0.01 * abs(i - best)) for i, c in enumerate(candidates)}
            out[f"{heads.num_q_heads}/{heads.num_kv_heads}/{heads.head_dim}/{name}"] = {
                "candidates": candidates, "pick": pick, "us": us}
    return out


def test_regret_is_the_picks_time_over_the_fastest(sr) -> None:
    records = _records(sr, ["1", "case:1:e"], "fp8_e4m3", "longest")
    scored = sr.regrets(records, 132, "fp8_e4m3")
    assert scored.keys() == records.keys()
    for key, (now, then, pick, recorded) in scored.items():
        rec = records[key]
        assert pick == recorded == rec["pick"]
        want = 1 + 0.01 * rec["candidates"].index(pick)
        assert now == pytest.approx(want) and then == pytest.approx(want)
    assert "all" in sr.summary(scored)


def test_a_pick_that_was_not_timed_is_missing_not_scored(sr) -> None:
    records = _records(sr, ["2"], "bf16", "pick")
    key, rec = next((k, r) for k, r in records.items() if len(r["candidates"]) > 1)
    pick = rec["pick"]
    other = next(c for c in rec["candidates"] if c != pick)
    del rec["us"][str(pick)]  # this planner's pick was not timed; the run recorded another
    rec["pick"] = other
    scored = sr.regrets(records, 132, "bf16")
    assert math.isnan(scored[key][0])
    assert scored[key][1] == pytest.approx(rec["us"][str(other)] / min(rec["us"].values()))
    assert all(now == pytest.approx(1.0) for k, (now, _, _, _) in scored.items() if k != key)
    assert sr.summary(scored).splitlines()[-1].split()[-1] == "1"  # the "all" row: one missing


def test_evaluate_reads_a_measurement_file(sr, tmp_path: Path, capsys) -> None:
    records = _records(sr, ["3"], "bf16", "pick")
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"kv_dtype": "bf16", "device": "made up", "sm_count": 132, "rounds": 1, "reps": 1,
                                "records": records}))
    assert sr.main(["--evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "made up, KV bf16" in out
    assert "1.000" in out.splitlines()[-1]


def test_it_needs_one_mode(sr) -> None:
    with pytest.raises(SystemExit):
        sr.main([])


def test_chain_cost_follows_the_kv_element() -> None:
    """The merge-chain price is the configuration's KV element's (16-bit and FP8 pools were fitted apart), unless the
    configuration has its own (``MEASURED_CHAIN_COSTS``)."""
    bf16 = HeadConfig(32, 8, 128, torch.bfloat16)
    fp8 = HeadConfig(32, 8, 128, torch.bfloat16, torch.float8_e4m3fn)
    assert planner.cost_key(fp8) not in planner.MEASURED_CHAIN_COSTS
    assert planner._chain_cost(bf16) == planner.MERGE_CHAIN_COST_SLOT_BYTES["16bit"]
    assert planner._chain_cost(fp8) == planner.MERGE_CHAIN_COST_SLOT_BYTES["fp8"]
    for key, price in planner.MEASURED_CHAIN_COSTS.items():
        element, head_dim, group = key
        own = HeadConfig(group * 4, 4, head_dim, torch.bfloat16, torch.float8_e4m3fn if element == "fp8" else None)
        assert planner.cost_key(own) == key and planner._chain_cost(own) == price


def test_heads_flag_picks_the_configs(sr) -> None:
    """``--heads HQ/HKV/HD`` (e.g. Qwen2.5-7B's 28/4/128) replaces the default configs; what the kernels cannot serve
    is refused when the command line is parsed."""
    import argparse

    assert sr.parse_config("28/4/128") == (28, 4, 128)
    configs = sr.head_configs("fp8_e4m3", (sr.parse_config("28/4/128"), sr.parse_config("40/8/64")))
    assert [(h.num_q_heads, h.num_kv_heads, h.head_dim, h.group) for h in configs] == [(28, 4, 128, 7), (40, 8, 64, 5)]
    assert all(h.kv_dtype == torch.float8_e4m3fn for h in configs)
    for bad in ("28/4", "28/4/96", "x/4/128", "28/0/128", "256/8/128"):
        with pytest.raises(argparse.ArgumentTypeError):
            sr.parse_config(bad)
