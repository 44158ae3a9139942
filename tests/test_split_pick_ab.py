"""``bench/split_pick_ab.py``'s CPU half: the picks file holds, per head config and random tree, the split length the
planner at ``--planner-root`` chooses for that tree (the GPU half times those picks against this checkout's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripts import REPO, load_script

from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import plan_forest


@pytest.fixture(scope="module")
def ab():
    return load_script(REPO / "bench" / "split_pick_ab.py")


def test_picks_file_holds_the_planners_choice_per_tree(ab, tmp_path: Path) -> None:
    out = tmp_path / "picks.json"
    assert ab.main(["--picks-out", str(out), "--kv-dtype", "fp8_e4m3", "--trees", "2"]) == 0
    saved = json.loads(out.read_text())
    assert saved["kv_dtype"] == "fp8_e4m3"
    picks = saved["picks"]
    assert sorted(picks) == sorted(f"{hq}/{hkv}/{hd}/{seed}" for hq, hkv, hd in ab.HEAD_CONFIGS for seed in range(2))
    for key, length in picks.items():
        hq, hkv, hd, seed = (int(x) for x in key.split("/"))
        indptr, indices, _ = ab.tree_inputs(seed)
        heads = HeadConfig(hq, hkv, hd, torch.bfloat16, torch.float8_e4m3fn)
        want = plan_forest(PrefixForest.from_flat(indptr, indices), heads, DeviceSpec(sm_count=ab.H200_SMS))
        assert length == want.split_tokens


def test_it_needs_one_mode_and_matching_kv_dtypes(ab, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        ab.main(["--kv-dtype", "bf16"])
    saved = tmp_path / "bf16.json"
    saved.write_text(json.dumps({"kv_dtype": "bf16", "picks": {}}))
    with pytest.raises(SystemExit):
        ab.main(["--base", str(saved), "--kv-dtype", "fp8_e4m3"])
