"""``bench/remade_gpu_cost.py dump``: the plans it samples (a re-made one and the default path's full one of the same
batch) re-addressed to the compact table must each still be exact against float64 attention over the batch's rows of
``req_to_token``, and must read the same requests' KV, so that what its ``time`` step compares is the two plans."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pat_sglang.reference import naive_decode, run_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("remade_gpu_cost", ROOT / "bench" / "remade_gpu_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["remade_gpu_cost"] = module
    spec.loader.exec_module(module)
    return module


def test_sampled_plans_are_exact_over_the_compact_table(tool, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PAT_SGLANG_REMAKE_PLANS", raising=False)
    out = tmp_path / "remade.npz"
    tool.dump(out, 3, ["--quick"])
    samples = tool.load_samples(out)
    assert samples
    gen = torch.Generator().manual_seed(1)
    for s in samples:
        hq, hkv, d = (int(x) for x in s["heads"])
        table, rows, seq = s["table"], s["rows"], s["seq_lens"]
        slots = int(table.max()) + 1
        k = torch.randn(slots, hkv, d, generator=gen, dtype=torch.float64)
        v = torch.randn(slots, hkv, d, generator=gen, dtype=torch.float64)
        q = torch.randn(rows.shape[0], hq, d, generator=gen, dtype=torch.float64)
        indptr = torch.from_numpy(np.r_[0, np.cumsum(seq)])
        indices = torch.from_numpy(np.concatenate([table[r, :n] for r, n in zip(rows, seq, strict=True)]))
        want = naive_decode(q, k, v, indptr, indices, d ** -0.5)
        for side in tool.SIDES:
            plan = tool.plan_of(s, side, "cpu")
            got = run_reference(plan, q, k, v, d ** -0.5, seq_lens=torch.from_numpy(seq), rows=torch.from_numpy(rows))
            assert torch.allclose(got, want, atol=1e-9, rtol=0), side
            meta = s[f"{side}_meta"]
            assert meta[0] == rows.shape[0] and meta[3] >= meta[4] > 0  # the batch; planned KV bytes >= unique ones
