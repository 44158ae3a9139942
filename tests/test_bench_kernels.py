"""CPU checks of bench/bench_kernels.py: case sets, floors, fa3's page table, the report with peers missing."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from scripts import REPO, load_script

from pat_sglang.workloads import layout_tree, random_tree, tree_batch

# keys of the core set before the set names, page size and fp16 existed: earlier results are keyed by these
CORE_KEYS = [
    *(f"{w}/32q8kv/d128" for w in ("a32", "a64", "a128", "a256", "b", "c", "d64x4096", "d256x1024", "e")),
    *(f"{w}/{h}/d128" for h in ("64q8kv", "32q32kv") for w in ("a128", "b", "d256x1024", "e")),
]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(REPO / "bench" / "bench_kernels.py")


def test_core_set_keys_unchanged(bench: ModuleType) -> None:
    assert [c.key for c in bench.cases_for_sets("core")] == CORE_KEYS
    assert [c.key for c in bench.all_cases()] == CORE_KEYS


def test_case_keys_unique_and_sets_compose(bench: ModuleType) -> None:
    every = bench.cases_for_sets("all")
    keys = [c.key for c in every]
    assert len(keys) == len(set(keys))
    for name in bench.CASE_SETS:
        part = [c.key for c in bench.CASE_SETS[name]()]
        assert len(part) == len(set(part)), name
        assert set(part) <= set(keys), name
    issue10 = {c.key for c in bench.cases_for_sets("issue10")}
    assert issue10 == {c.key for n in bench.ISSUE10_SETS for c in bench.CASE_SETS[n]()}
    assert not issue10 & set(CORE_KEYS)
    # a comma list keeps the first occurrence only
    assert [c.key for c in bench.cases_for_sets("core,core,page16")] == CORE_KEYS + [
        c.key for c in bench.page16_cases()
    ]
    with pytest.raises(ValueError, match="unknown case set"):
        bench.cases_for_sets("core,nope")


def test_issue10_covers_the_named_shapes(bench: ModuleType) -> None:
    cases = bench.cases_for_sets("issue10")
    no_sharing = [c for c in cases if c.workload.startswith("d")]
    assert {c.batch().batch for c in no_sharing} >= {8, 16, 32, 64, 128, 256}
    assert max(max(c.batch().tree.request_lengths()) for c in no_sharing) == 32768
    heads = {(c.num_q_heads, c.num_kv_heads) for c in no_sharing}
    assert {(32, 8), (64, 8), (32, 32)} <= heads  # GQA 4, GQA 8, MHA
    for d in (64, 256):  # both shared-prefix and no-sharing batches at each new head dim
        assert {c.workload for c in cases if c.head_dim == d} >= {"a128", "d8x32768"}
    assert {c.workload for c in cases if c.dtype == "fp16"} >= {"a128", "d8x32768"}
    assert {c.workload for c in cases if c.page_size == 16} >= {"a128", "d8x32768"}
    for c in cases:
        batch = c.batch()
        assert batch.page_size == c.page_size
        if c.page_size > 1:  # slots of one page are contiguous and page-aligned
            for slots in batch.node_slots:
                assert (slots[:: c.page_size] % c.page_size == 0).all()


def test_dry_run_lists_sets(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--dry-run", "--set", "longctx,page16,hd64,hd256,hd256gqa2,fp16"]) == 0
    out = capsys.readouterr().out
    for key in ("d8x32768/32q8kv/d128", "d8x32768/32q32kv/d128", "d8x32768/64q8kv/d128", "a128/32q8kv/d128/p16",
                "a128/32q8kv/d64", "d8x32768/32q8kv/d256", "d8x32768/16q8kv/d256", "d64x4096/32q8kv/d128/fp16"):
        assert f"\n{key} " in out, key
    assert "floor us" in out and "pools GB" in out
    assert bench.main(["--dry-run", "--set", "core", "--cases", "a128"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("a128/")]
    assert listed == ["a128/32q8kv/d128", "a128/64q8kv/d128", "a128/32q32kv/d128"]
    with pytest.raises(SystemExit):
        bench.main(["--dry-run", "--set", "bogus"])


def test_floors_use_element_size_not_page_size(bench: ModuleType) -> None:
    bw = 4e12
    tokens = 8 * 32768
    for kw, elem in (({}, 2), ({"dtype": "fp16"}, 2), ({"kv_dtype": "fp8_e4m3"}, 1)):
        for d in (64, 128, 256):
            for page in (1, 16):
                for hq, hkv in ((32, 8), (32, 32)):
                    c = bench.Case("d8x32768", hq, hkv, head_dim=d, page_size=page, **kw)
                    want = tokens * 2 * hkv * d * elem
                    assert bench.unique_kv_bytes(c) == want, c.key
                    assert bench.floor_us(c, bw) == pytest.approx(want / bw * 1e6), c.key
    # shared prefix: unique tokens once, at page size 16 too (trailing partial pages are not read)
    for page in (1, 16):
        c = bench.Case("a128", 32, 8, page_size=page)
        assert bench.unique_kv_bytes(c) == (4096 + 128 * 256) * 2 * 8 * 128 * 2


def _direct_page_table(indptr: torch.Tensor, indices: torch.Tensor, page_size: int) -> torch.Tensor:
    """Row by row: every page_size-th slot of a request, as a page index; zero-padded to the longest row."""
    rows = []
    for r in range(indptr.numel() - 1):
        slots = indices[int(indptr[r]) : int(indptr[r + 1])].tolist()
        rows.append([slots[t] // page_size for t in range(0, len(slots), page_size)])
    width = max(len(row) for row in rows)
    return torch.tensor([row + [0] * (width - len(row)) for row in rows], dtype=torch.int32)


@pytest.mark.parametrize("page_size", [1, 16])
def test_fa3_page_table_matches_direct_construction(bench: ModuleType, page_size: int) -> None:
    batches = [bench.Case("e", 32, 8, page_size=page_size).batch(rng=3)]
    batches += [tree_batch([(1, 64), (5, 37)], page_size=page_size, rng=1, num_slots=4096)]  # leaves end mid-page
    batches += [layout_tree(random_tree(s, page_size=page_size, max_len=80), page_size, s) for s in range(8)]
    for batch in batches:
        table, seqlens = bench.fa3_page_table(batch.kv_indptr, batch.kv_indices, page_size)
        assert table.dtype == seqlens.dtype == torch.int32
        assert torch.equal(table, _direct_page_table(batch.kv_indptr, batch.kv_indices, page_size))
        assert torch.equal(seqlens.long(), (batch.kv_indptr[1:] - batch.kv_indptr[:-1]).long())
        # what fa3 reads through the table is exactly each request's slot list
        ip = batch.kv_indptr.tolist()
        for r in range(batch.batch):
            t = torch.arange(int(seqlens[r]))
            read = table[r, t // page_size].long() * page_size + t % page_size
            assert torch.equal(read, batch.kv_indices[ip[r] : ip[r + 1]].long())


def test_fa3_page_table_refuses_slots_that_are_not_pages(bench: ModuleType) -> None:
    batch = tree_batch([(1, 64), (4, 32)], page_size=1, rng=0)  # page-1 layout: slots scattered token by token
    with pytest.raises(ValueError, match="not whole pages"):
        bench.fa3_page_table(batch.kv_indptr, batch.kv_indices, 16)
    indptr = torch.tensor([0, 16], dtype=torch.int32)
    with pytest.raises(ValueError, match="not whole pages"):  # contiguous but not page-aligned
        bench.fa3_page_table(indptr, torch.arange(8, 24, dtype=torch.int32), 16)
    with pytest.raises(ValueError, match=">= 1 KV token"):
        bench.fa3_page_table(torch.tensor([0, 0], dtype=torch.int32), torch.zeros(0, dtype=torch.int32), 1)


def test_fa3_without_sgl_kernel_is_a_clear_error(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sgl_kernel.flash_attn", None)  # import fails as with no flash_ops library
    batch = tree_batch([(2, 16)], rng=0)
    q, k, v = torch.zeros(2, 4, 64), torch.zeros(32, 1, 64), torch.zeros(32, 1, 64)
    with pytest.raises(RuntimeError, match="sgl_kernel fa3 does not import"):
        bench.fa3_decode(batch.kv_indptr, batch.kv_indices, [(q, k, v)], 1, 0.125)


def test_pat_over_best_pairs_like_timings(bench: ModuleType) -> None:
    row = {"pat": 110.0, "pat_graph": 100.0, "fi_best": 100.0, "fi_best_peer": "fi_dec_tc", "fa3": 125.0}
    assert bench.pat_over_best(row) == (pytest.approx(1.1), "fi_dec_tc")  # eager vs eager binds
    row["fa3"] = 80.0
    assert bench.pat_over_best(row) == (pytest.approx(1.25), "fa3")  # graph vs graph binds
    assert bench.pat_over_best({**row, "pat_graph": None}) == (pytest.approx(110 / 80), "fa3")
    assert bench.pat_over_best({**row, "fi_best": None}) == (pytest.approx(1.25), "fa3")
    assert bench.pat_over_best({**row, "fa3": None}) == (pytest.approx(1.1), "fi_dec_tc")
    assert bench.pat_over_best({**row, "pat": None, "pat_graph": None}) == (None, None)
    assert bench.pat_over_best({"pat": 1.0}) == (None, None)
    # FlashInfer captured as graph replays: PAT's graph time against FlashInfer's, not the eager pair
    graphs = {**row, "fa3": None, "fi_best_graph": 95.0, "fi_best_graph_peer": "fi_dec_tc"}
    assert bench.pat_over_best(graphs) == (pytest.approx(100 / 95), "fi_dec_tc(g)")
    assert bench.pat_over_best({**graphs, "pat_graph": None}) == (pytest.approx(1.1), "fi_dec_tc")


def test_report_with_missing_peers(bench: ModuleType, tmp_path: Path) -> None:
    cases = [bench.Case("a128", 32, 8), bench.Case("d8x32768", 32, 8, page_size=16), bench.Case("b", 32, 8)]
    peers = {"device": "test", "cases": {
        cases[0].key: {"fi_dec_tc": {"us": 200.0, "err": 1e-3}, "fa3": {"error": "not run: RuntimeError: no fa3"}},
        cases[1].key: {"fi_dec": {"us": 260.0, "err": 1e-3}, "fa3": {"us": 250.0, "err": 1e-3, "timing": "graph"}},
        cases[2].key: {"fi_dec": {"us": 300.0, "graph_us": 280.0, "err": 1e-3},
                       "fi_dec_tc": {"us": 290.0, "graph_us": 285.0, "err": 1e-3}},
    }}
    pat = {"copy_bw": 4e12, "cases": {
        cases[0].key: {"pat": {"us": 100.0, "graph_us": 95.0, "err": 1e-3, "plan_us": 50.0}},
        cases[1].key: {"pat": {"us": 270.0, "graph_us": 262.5, "err": 1e-3}},
    }}
    only_b = {"copy_bw": 4e12, "cases": {cases[2].key: {"pat": {"us": 150.0, "graph_us": 140.0, "err": 1e-3}}}}
    b_row = bench.build_rows(cases[2:], peers, only_b)[0]
    # FlashInfer's best eager kernel (decTC) is not its best graph replay (dec): each pair takes its own best
    assert (b_row["fi_best"], b_row["fi_best_peer"]) == (290.0, "fi_dec_tc")
    assert (b_row["fi_best_graph"], b_row["fi_best_graph_peer"]) == (280.0, "fi_dec")
    assert b_row["pat_over_best"] == pytest.approx(140 / 280) and b_row["best_base"] == "fi_dec(g)"
    rows = bench.build_rows(cases, peers, pat)
    assert rows[0]["fa3"] is None and rows[0]["pat_over_best"] == pytest.approx(0.5)
    assert rows[0]["best_base"] == "fi_dec_tc"
    assert rows[1]["pat_over_best"] == pytest.approx(1.05) and rows[1]["best_base"] == "fa3"
    assert rows[1]["page_size"] == 16 and rows[2]["pat"] is None and rows[2]["pat_over_best"] is None
    assert rows[0]["fi_best_graph"] is None  # FlashInfer not captured: the eager pair stands
    # the floor ratio twice: eager PAT, and PAT's graph replay (issue 10's); none without a PAT time
    floor = rows[0]["floor_us"]
    assert floor > 0 and rows[0]["pat_over_floor"] == pytest.approx(100.0 / floor)
    assert rows[0]["pat_graph_over_floor"] == pytest.approx(95.0 / floor)
    assert rows[2]["pat_graph_over_floor"] is None and b_row["pat_graph_over_floor"] == pytest.approx(
        140.0 / b_row["floor_us"])
    table = bench.format_table(rows)
    assert "fa3(g)" in table and "PAT/best" in table and "bestBase" in table and "PATg/flr" in table
    assert len(table.splitlines()) == 1 + len(cases)
    text = bench.write_reports(tmp_path, cases, peers, pat)
    assert f"{cases[0].key} fa3: not run: RuntimeError: no fa3" in text
    assert f"{cases[2].key} fa3: not run: peers phase missing" in text
    assert "CUDA-graph replays: fa3(g), PATgraph" in text
    md = (tmp_path / "results.md").read_text().splitlines()
    assert len(md[2].split("|")) == len(md[4].split("|"))  # header and rows have the same cells
    for f in ("results.json", "results.csv", "results.png"):
        assert (tmp_path / f).exists()
    # a peers phase run with --peers fa3: the others were not asked for, so they are no failure; a requested peer
    # absent from a case still is
    asked = {**peers, "requested": ["fa3"]}
    text = bench.write_reports(tmp_path, cases, asked, pat)
    assert f"{cases[2].key} fa3: not run: peers phase missing" in text
    assert "fi_dec: not run" not in text and "sgl_triton: not run" not in text


def test_check_takes_an_implementations_own_bound(bench: ModuleType) -> None:
    """Every implementation is held to TOL against float64, except one that registered its own bound (fa3 over FP8
    pools, which rounds q and P to FP8): an error between the two passes for it alone; NaN fails everyone."""
    inp = object.__new__(bench.Inputs)  # the check alone: no GPU inputs
    gen = torch.Generator().manual_seed(0)
    inp.sample = [0, 2]
    inp.ref = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)
    inp.refs, inp.tols = {}, {"fa3": bench.FA3_FP8_TOL}
    assert bench.TOL < bench.FA3_FP8_TOL
    noise = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)
    between = (bench.TOL + bench.FA3_FP8_TOL) / 2
    out = torch.zeros(3, 4, 8, dtype=torch.float64)
    out[inp.sample] = inp.ref + noise * (between * inp.ref.norm() / noise.norm())
    assert inp.check(out, "fa3") == pytest.approx(between)
    with pytest.raises(RuntimeError, match="relative error"):
        inp.check(out, "fi_dec_tc")
    out[0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        inp.check(out, "fa3")
