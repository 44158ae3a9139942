"""CPU tests of the compiled host work (pat_sglang/host_core.py): the split-search simulation (kernels/host_simulate.c),
the same numbers as the planner's Python simulation, bit for bit, on random runs, on whole candidate searches and on
plans; the flat forest (kernels/host_rows.c), the same arrays and slot maximum as the numpy construction; a plan's
items, partial slots and merge map (kernels/host_items.c), the same arrays as the planner's numpy layout; built once and
cached; the Python/numpy versions where no compiler works (or when turned off)."""

from __future__ import annotations

import functools
import logging
import math
import operator
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pat_sglang
from pat_sglang import host_core, planner
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.forest import PrefixForest, _flat_forest, _read_max
from pat_sglang.planner import (
    ITEM_FIELDS,
    RUN_BATCH_ITEMS,
    PlanLimits,
    _greedy_makespan,
    _launch_costs,
    _plan_items,
    _tile_lut,
    item_layout_defines,
    plan_forest,
)
from pat_sglang.workloads import layout_tree, random_tree

PLAN_TENSORS = ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")


@pytest.fixture(scope="module")
def sim() -> host_core._HostCore:
    compiled = host_core.loaded()
    if compiled is None:  # CI and the GPU machine have a C compiler: its absence is a failure here, not a skip
        pytest.fail("the compiled simulation did not load (see the log for the reason)")
    return compiled


@pytest.fixture(params=["glue", "ctypes"])
def items_of(sim: host_core._HostCore, request: pytest.FixtureRequest) -> Callable[..., tuple | None]:
    """``plan_items`` through the extension module (``kernels/host_glue.c``, what the planner calls where it loads) and
    through the ctypes wrapper (its fallback): every test of it runs on both."""
    if request.param == "glue":
        if sim.glue is None:  # numpy's and Python's headers are there wherever tests run
            pytest.fail("the host core's extension module did not load (see the log for the reason)")
        return sim.plan_items
    return functools.partial(host_core._HostCore.plan_items, sim)


def _python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner's Python simulation from here on (as where no compiler works)."""
    monkeypatch.setattr(host_core, "loaded", lambda: None)


@settings(max_examples=400, deadline=None)
@given(
    runs=st.lists(st.tuples(st.sampled_from([0.5, 1.0, 2.5, 3.0, 7.25, 10.0, 1e5 + 0.125]), st.integers(1, 300)),
                  min_size=1, max_size=40),
    slots=st.integers(1, 200),
    limit_fraction=st.one_of(st.just(math.inf), st.floats(0.0, 1.5)),
)
def test_greedy_makespan_equals_the_python_one(sim: host_core._HostCore, runs: list[tuple[float, int]], slots: int,
                                               limit_fraction: float) -> None:
    values = [v for v, _ in runs]
    counts = [n for _, n in runs]
    limit = limit_fraction * max(values) * sum(counts) / slots if limit_fraction != math.inf else math.inf
    want = _greedy_makespan(values, counts, slots, limit)
    got = sim.greedy_makespan(np.array(values), np.array(counts), slots, limit, RUN_BATCH_ITEMS)
    assert got == want  # bit for bit: the same operations in the same order


def _search_inputs(rng: np.random.Generator) -> tuple:
    """Random ``_launch_costs`` inputs: packs of random sizes and row blocks, candidate split counts, shared
    requests (some in several packs)."""
    num_packs = int(rng.integers(1, 120))
    num_requests = int(rng.integers(num_packs, num_packs * 3 + 1))
    pack_req_count = rng.integers(1, 9, size=num_packs)
    pack_req = np.concatenate([rng.choice(num_requests, size=int(n), replace=False) for n in pack_req_count])
    pack_tokens = rng.integers(16, 8192, size=num_packs)
    lengths = np.array(sorted({int(x) for x in rng.integers(64, 8192, size=int(rng.integers(2, 12)))}, reverse=True))
    splits = np.maximum(1, (pack_tokens[None, :] + lengths[:, None] - 1) // lengths[:, None])
    full = np.maximum(0, (pack_req_count + 3) // 4 - 1)
    # a token's cost per block: some blocks costlier per token than their bytes (planner.MEASURED_ITEM_COSTS)
    token_bytes = (int(rng.choice([256, 320])), rng.choice([256, 320], size=num_packs))
    overheads = (float(48 << 10), rng.choice([48 << 10, 72 << 10, 192 << 10], size=num_packs).astype(np.float64))
    slots = int(rng.integers(4, 160))
    chain_cost = float(rng.choice(list(planner.MERGE_CHAIN_COST_SLOT_BYTES.values())))  # either KV element's price
    return splits, pack_tokens, full, token_bytes, overheads, pack_req, pack_req_count, num_requests, slots, chain_cost


@pytest.mark.parametrize("seed", range(60))
def test_launch_costs_equal_with_and_without_the_compiled_simulation(sim: host_core._HostCore, seed: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    args = _search_inputs(np.random.default_rng(seed))
    cost, items = _launch_costs(*args)
    _python(monkeypatch)
    want_cost, want_items = _launch_costs(*args)
    assert np.array_equal(items, want_items)
    assert np.array_equal(cost, want_cost)  # inf where a candidate was not simulated, on both sides


def _edge_inputs(case: str) -> tuple:
    """``_launch_costs`` inputs at the edges: one CTA slot; one pack; no full blocks; every candidate alike (ties);
    packs of equal size where only the request counts differ, every request in one pack; candidates whose items all
    start at once."""
    rng = np.random.default_rng(5)
    packs = {"one slot": 7, "one pack": 1, "no full blocks": 9, "ties": 6, "equal packs": 8, "all at once": 3}[case]
    pack_req_count = np.full(packs, 4) if case != "equal packs" else rng.integers(1, 12, size=packs)
    num_requests = int(pack_req_count.sum()) + (0 if case == "equal packs" else 3)  # 0: each request in one pack
    pack_req = rng.permutation(num_requests)[: int(pack_req_count.sum())]
    pack_tokens = np.full(packs, 2048) if case in ("ties", "equal packs") else rng.integers(64, 4096, size=packs)
    lengths = np.array([4096, 2048, 1024, 512, 256])
    splits = np.maximum(1, (pack_tokens[None, :] + lengths[:, None] - 1) // lengths[:, None])
    if case == "ties":
        splits = np.repeat(splits[:1], 4, axis=0)
    full = np.zeros(packs, dtype=np.int64) if case == "no full blocks" else np.maximum(0, (pack_req_count + 3) // 4 - 1)
    overheads = (float(48 << 10), np.full(packs, float(72 << 10)))
    slots = {"one slot": 1, "all at once": 10_000}.get(case, 40)
    return splits, pack_tokens, full, (256, np.full(packs, 256)), overheads, pack_req, pack_req_count, num_requests, \
        slots, planner.MERGE_CHAIN_COST_SLOT_BYTES["16bit"]


@pytest.mark.parametrize("case", ["one slot", "one pack", "no full blocks", "ties", "equal packs", "all at once"])
def test_launch_costs_equal_at_the_edges(sim: host_core._HostCore, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = _edge_inputs(case)
    cost, items = _launch_costs(*args)
    _python(monkeypatch)
    want_cost, want_items = _launch_costs(*args)
    assert np.array_equal(items, want_items)
    assert np.array_equal(cost, want_cost)
    assert np.isfinite(cost).any()  # the cheapest candidate always has a real cost


def test_launch_costs_refuses_fractional_tokens_or_token_bytes(sim: host_core._HostCore) -> None:
    splits, pack_tokens, *rest = _edge_inputs("one pack")
    full, (full_tb, last_tb), (full_overhead, last_overhead), pack_req, pack_req_count, num_requests, slots, \
        chain = rest

    def call(tokens: np.ndarray, full_token_bytes: float, last_token_bytes: np.ndarray, req: np.ndarray) -> None:
        sim.launch_costs(splits, tokens, full, full_token_bytes, last_token_bytes, full_overhead, last_overhead, req,
                         pack_req_count, num_requests, slots, chain, 1 / 16, RUN_BATCH_ITEMS)

    for bad in ((pack_tokens + 0.5, full_tb, last_tb), (pack_tokens, full_tb + 0.5, last_tb),
                (pack_tokens, full_tb, last_tb + 0.5)):
        with pytest.raises(ValueError, match="integers"):
            call(*bad, pack_req)
    with pytest.raises(ValueError, match="per-pack"):
        call(pack_tokens, full_tb, last_tb, pack_req[:-1])
    with pytest.raises(ValueError, match="per-pack"):
        call(pack_tokens, full_tb, np.r_[last_tb, 256], pack_req)


@pytest.mark.parametrize("seed", range(12))
def test_plans_are_the_same_with_and_without_it(sim: host_core._HostCore, seed: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1000 + seed)
    tree = random_tree(rng, max_depth=5, max_requests=256, max_len=4096, max_request_tokens=400_000)
    batch = layout_tree(tree, rng=rng)
    forest = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = DeviceSpec(sm_count=int(rng.choice([78, 132])))
    searched = plan_forest(forest, heads, device)
    _python(monkeypatch)
    want = plan_forest(forest, heads, device)
    assert searched.split_tokens == want.split_tokens
    assert all(torch.equal(getattr(searched, n), getattr(want, n)) for n in PLAN_TENSORS)


def _block_tables(rpb: int, wide_tokens_cost_more: bool) -> tuple[np.ndarray, np.ndarray]:
    """(fixed costs, token costs) of row blocks of 0..rpb requests in a short pack, then in a long one (as
    ``planner._block_costs`` lays them out): the larger blocks cost more; a long pack's smaller blocks less (16-row
    items where a short pack's take the least tile m). ``wide_tokens_cost_more``: the larger blocks' tokens too (FP8
    wide items)."""
    small, large = rpb // 2 + 1, rpb - rpb // 2
    wide_token = 320 if wide_tokens_cost_more else 256
    overheads = np.array([float(48 << 10)] * small + [float(72 << 10)] * large
                         + [float(24 << 10)] * small + [float(72 << 10)] * large)
    token_bytes = np.array([256] * small + [wide_token] * large + [240] * small + [wide_token] * large, dtype=np.int64)
    return overheads, token_bytes


@pytest.mark.parametrize("seed", range(150))
def test_split_length_equals_the_numpy_one(sim: host_core._HostCore, seed: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``planner._split_length`` with ``pat_split_length`` against its numpy/Python path on random packs (few distinct
    sizes, so that some lengths cut every pack alike; some seeds all alike: the uniform model, on both sides)."""
    rng = np.random.default_rng(seed)
    num_packs = int(rng.integers(1, 120))
    num_requests = int(rng.integers(num_packs, num_packs * 3 + 1))
    counts = rng.integers(1, 9, size=num_packs) if seed % 10 else np.full(num_packs, 3)
    pack_req_count = np.minimum(num_requests, counts)
    pack_req = np.concatenate([rng.choice(num_requests, size=int(n), replace=False) for n in pack_req_count])
    pack_tokens = rng.choice(rng.integers(16, 9000, size=int(rng.integers(1, 6))), size=num_packs)
    if seed % 10 == 0:
        pack_tokens[:] = pack_tokens[0]
    rpb = int(rng.choice([2, 4, 8]))
    pack_blocks = (pack_req_count + rpb - 1) // rpb
    longest = int(pack_tokens.max())
    candidates = sorted({int(x) for x in rng.integers(64, 2 * longest + 64, size=int(rng.integers(1, 16)))},
                        reverse=True)
    overheads, token_bytes = _block_tables(rpb, seed % 2 == 1)
    # on some seeds the packs of one of their lengths or more are long: their blocks priced by the second half
    long_tokens = int(rng.choice(pack_tokens)) if seed % 4 == 1 else planner.INT64_MAX
    args = (candidates, pack_tokens.astype(np.int64), pack_blocks.astype(np.int64), pack_req.astype(np.int32),
            pack_req_count.astype(np.int64), num_requests, 8, int(rng.integers(40, 1200)), token_bytes, overheads,
            planner.MERGE_CHAIN_COST_SLOT_BYTES["fp8" if seed % 3 == 0 else "16bit"], long_tokens)
    got = planner._split_length(*args)
    _python(monkeypatch)
    assert got == planner._split_length(*args)


@pytest.mark.parametrize("seed", range(60))
def test_split_length_of_the_extension_module_equals_the_ctypes_one(sim: host_core._HostCore, seed: int) -> None:
    """The extension module's ``split_length`` (bound on the loaded core) and the ctypes wrapper it replaces choose the
    same length on random packs; both refuse arrays they cannot read with the same error."""
    if sim.glue is None:
        pytest.skip("the extension module did not build here")
    rng = np.random.default_rng(seed)
    packs = int(rng.integers(2, 150))
    pack_req_count = rng.integers(1, 9, size=packs).astype(np.int64)
    num_requests = int(pack_req_count.max() + rng.integers(0, 50))
    pack_req = np.concatenate([rng.choice(num_requests, size=int(n), replace=False) for n in pack_req_count])
    pack_tokens = rng.choice(rng.integers(16, 9000, size=int(rng.integers(2, 8))), size=packs).astype(np.int64)
    rpb = int(rng.choice([2, 4, 8]))
    pack_blocks = ((pack_req_count + rpb - 1) // rpb).astype(np.int64)
    longest = int(pack_tokens.max())
    candidates = sorted({int(x) for x in rng.integers(64, 2 * longest + 64, size=int(rng.integers(2, 16)))},
                        reverse=True)
    overheads, token_bytes = _block_tables(rpb, True)
    long_tokens = int(rng.choice(pack_tokens)) if seed % 2 else planner.INT64_MAX
    args = (candidates, longest, pack_tokens, pack_blocks, pack_req_count, pack_req.astype(np.int32), num_requests,
            int(rng.integers(40, 600)), token_bytes, overheads, long_tokens, float(rng.choice([1536.0, 16384.0])),
            planner.SPLIT_COST_TOLERANCE, planner.RUN_BATCH_ITEMS)
    got = sim.glue.split_length(*args)
    assert got == host_core._HostCore.split_length(sim, *args) and got in candidates
    for bad in ((2, pack_tokens.astype(np.int32)), (5, pack_req.astype(np.int64)), (3, pack_blocks[:-1]),
                (9, overheads.astype(np.float32))):
        broken = list(args)
        broken[bad[0]] = bad[1]
        for fn in (sim.glue.split_length, lambda *a: host_core._HostCore.split_length(sim, *a)):
            with pytest.raises(ValueError, match="split_length: per-pack arrays"):
                fn(*broken)
    for fn in (sim.glue.split_length, lambda *a: host_core._HostCore.split_length(sim, *a)):
        with pytest.raises(ValueError, match="no candidate lengths"):
            fn([], *args[1:])


def _item_inputs(rng: np.random.Generator) -> tuple:
    """Random ``_plan_items`` inputs: packs of few distinct lengths and begins (ties in the launch order), requests in
    one pack or several, row blocks of 1..8 requests, 1..5 KV splits per pack, open ends or none, a least tile m or
    none, with some packs long (from one of the packs' lengths on) or none."""
    num_packs = int(rng.integers(1, 60))
    num_requests = int(rng.integers(1, 3 * num_packs + 2))
    pack_req_count = rng.integers(1, min(num_requests, 20) + 1, size=num_packs)
    pack_req = np.concatenate([rng.choice(num_requests, size=int(n), replace=False) for n in pack_req_count])
    pack_tokens = rng.choice(rng.integers(1, 5000, size=4), size=num_packs)
    kv_offset = rng.choice(rng.integers(0, 50_000, size=5), size=num_packs)
    splits = rng.integers(1, 6, size=num_packs) if rng.random() < 0.7 else np.ones(num_packs, dtype=np.int64)
    group = int(rng.choice([1, 4, 8]))
    tile_ms = (16, 32, 64)
    reqs_per_block = int(rng.integers(1, 9)) if rng.random() < 0.7 else max(1, 64 // group)
    least_m = int(rng.choice([0, 32, 64]))
    tile_of_size, tile_m_of_size = _tile_lut(tile_ms, group, reqs_per_block, least_m)
    long_tokens = int(rng.choice(pack_tokens)) if least_m and rng.random() < 0.7 else planner.INT64_MAX
    pack_blocks = (pack_req_count + reqs_per_block - 1) // reqs_per_block
    leaf_pack = rng.random(num_packs) < 0.5 if rng.random() < 0.6 else None
    return (pack_tokens.astype(np.int64), kv_offset.astype(np.int64), pack_req_count.astype(np.int64),
            pack_req.astype(np.int32), pack_blocks, splits.astype(np.int64), reqs_per_block, tile_of_size,
            tile_m_of_size, long_tokens, leaf_pack, num_requests, len(tile_ms), int((kv_offset + pack_tokens).max()))


@pytest.mark.parametrize("seed", range(200))
def test_plan_items_equal_the_numpy_ones(items_of: Callable[..., tuple | None], seed: int) -> None:
    """``pat_plan_items`` against ``planner._plan_items`` on random packs: every array equal (dtype too), the same
    counts, and the same refusal when the partial slots exceed a limit (tight limits on some seeds)."""
    rng = np.random.default_rng(seed)
    (pack_tokens, kv_offset, pack_req_count, pack_req, pack_blocks, splits, rpb, tile_of_size, tile_m_of_size,
     long_tokens, leaf_pack, num_requests, num_tiles, kv_limit) = _item_inputs(rng)
    num_items = int(splits @ pack_blocks)
    num_entries = int(splits @ pack_req_count)
    max_partials = int(rng.integers(0, num_entries + 1)) if seed % 3 == 0 else None
    limits = None if max_partials is None else PlanLimits(num_items, max_partials, num_entries)
    pack_ptr = np.concatenate([[0], np.cumsum(pack_req_count)])
    want = _plan_items(pack_tokens, kv_offset, pack_req_count, pack_ptr, pack_req, pack_blocks, splits, rpb,
                       tile_of_size, tile_m_of_size, long_tokens, leaf_pack, num_requests, limits, num_tiles,
                       kv_limit)
    got = items_of(pack_tokens, kv_offset, pack_req_count, pack_req, splits, rpb, tile_of_size, tile_m_of_size,
                   long_tokens, leaf_pack, num_requests, num_items, num_entries, max_partials, ITEM_FIELDS)
    assert (got is None) == (want is None)
    if want is None:
        return
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        else:
            assert a == b


def test_plan_items_refuses_arrays_it_cannot_read(items_of: Callable[..., tuple | None]) -> None:
    args = _item_inputs(np.random.default_rng(3))
    pack_tokens, kv_offset, pack_req_count, pack_req, pack_blocks, splits, rpb, tiles, tile_ms, long_, _, n, _, _ = args
    counts = (int(splits @ pack_blocks), int(splits @ pack_req_count))
    with pytest.raises(ValueError, match="int64"):
        items_of(pack_tokens.astype(np.int32), kv_offset, pack_req_count, pack_req, splits, rpb, tiles, tile_ms, long_,
                 None, n, *counts, None, ITEM_FIELDS)
    with pytest.raises(ValueError, match="int32"):
        items_of(pack_tokens, kv_offset, pack_req_count, pack_req.astype(np.int64), splits, rpb, tiles, tile_ms, long_,
                 None, n, *counts, None, ITEM_FIELDS)
    with pytest.raises(ValueError, match="int64"):  # a per-pack array of another length
        items_of(pack_tokens, kv_offset[:-1], pack_req_count, pack_req, splits, rpb, tiles, tile_ms, long_,
                 None, n, *counts, None, ITEM_FIELDS)
    with pytest.raises(ValueError, match="bool"):
        items_of(pack_tokens, kv_offset, pack_req_count, pack_req, splits, rpb, tiles, tile_ms, long_,
                 np.ones(pack_tokens.shape[0], np.int64), n, *counts, None, ITEM_FIELDS)


def test_glue_arrays_outlive_the_call(sim: host_core._HostCore) -> None:
    """The extension module's outputs are views of buffers they keep alive: read after everything else of the call
    was dropped and the heap reused, they still hold the ctypes wrapper's values."""
    rng = np.random.default_rng(11)
    (pack_tokens, kv_offset, pack_req_count, pack_req, pack_blocks, splits, rpb, tile_of_size, tile_m_of_size,
     long_tokens, leaf_pack, num_requests, _, _) = _item_inputs(rng)
    args = (pack_tokens, kv_offset, pack_req_count, pack_req, splits, rpb, tile_of_size, tile_m_of_size, long_tokens,
            leaf_pack,
            num_requests, int(splits @ pack_blocks), int(splits @ pack_req_count), None, ITEM_FIELDS)
    want = [a.copy() if isinstance(a, np.ndarray) else a for a in host_core._HostCore.plan_items(sim, *args)]
    merge_partials = sim.plan_items(*args)[4]  # the rest of the tuple (and its other views) dropped
    junk = [np.full(4096, -7, np.int32) for _ in range(64)]
    assert merge_partials.tolist() == want[4].tolist() and len(junk) == 64


def test_item_layout_comes_from_the_planner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """host_items.c writes item rows in the planner's layout, passed as -D options (``host_core.layout_flags``, the
    same ``planner.item_layout_defines`` the forward kernel is built with): without them the library does not build,
    so no second copy of the layout can drift."""
    monkeypatch.setenv("PAT_SGLANG_CACHE_DIR", str(tmp_path))
    assert host_core.layout_flags() == tuple(item_layout_defines())
    with pytest.raises(RuntimeError, match="item layout"):
        host_core.library_path(extra_flags=())


def test_built_once_then_loaded_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAT_SGLANG_CACHE_DIR", str(tmp_path))
    path = host_core.library_path()
    assert path.parent == tmp_path / "host" and path.exists()
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(host_core.subprocess, "run", _only_version(host_core.subprocess.run))
    assert host_core.library_path() == path and path.stat().st_mtime_ns == stamp  # no second compile


def _only_version(run):  # noqa: ANN001, ANN202
    def guarded(cmd, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        assert cmd[-1] == "--version", f"compiled again: {cmd}"
        return run(cmd, *args, **kwargs)

    return guarded


def test_without_a_compiler_the_planner_still_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PAT_SGLANG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    host_core.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="pat_sglang.host_core"):
            assert host_core.loaded() is None
            assert host_core.loaded_batch() is None  # the publisher's piece too: its tuples are picked in Python
        assert "Python simulation" in caplog.text and "/bin/false" in caplog.text
        assert "picked in Python" in caplog.text
        monkeypatch.delenv("CC")
        monkeypatch.setenv(host_core.DISABLE_ENV, "0")
        host_core.reset()
        assert host_core.loaded() is None  # turned off: the Python simulation, said at info level
        args = _search_inputs(np.random.default_rng(7))
        cost, _ = planner._launch_costs(*args)
        assert np.isfinite(cost).any()
    finally:
        host_core.reset()


def test_a_step_planner_loads_it_before_its_first_step(host_core_loads: dict[str, int]) -> None:
    """The backend's planner loads the simulation when it is made, so that the load (a compiler version check in a
    subprocess and a dlopen, milliseconds) never lands in a served step: its first split search finds it loaded."""
    from pat_sglang.decode_step import DecodeStepPlanner

    DecodeStepPlanner(HeadConfig(32, 8, 128), DeviceSpec(), torch.zeros(4, 64, dtype=torch.int32))
    assert host_core_loads["_load"] == 1
    rng = np.random.default_rng(3)
    cost, _ = planner._launch_costs(*_search_inputs(rng))  # the search's call: no second load
    assert np.isfinite(cost).any() and host_core_loads["_load"] == 1

FOREST_ARRAYS = ("tok", "start", "parent", "depth", "req_ptr", "req_flat", "q", "rep", "req32", "shared", "entry_node",
                 "ends_here", "ending", "last_node")


def _numpy_flat_forest(ind: np.ndarray, indptr: np.ndarray) -> tuple[PrefixForest, int | None]:
    """The numpy construction (``forest._flat_forest``, ``_read_max``): the forest and its slot maximum, or None where
    it refuses a negative slot."""
    lengths = indptr[1:] - indptr[:-1]
    forest = _flat_forest(ind, indptr, lengths)
    try:
        return forest, _read_max(forest, ind, "kv_indices")
    except ValueError:
        return forest, None


def _rows_sharing_prefixes(rng: np.random.Generator, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Flat rows that copy a prefix of an earlier row (or of two: runs of three-level sharing) and diverge at a random
    position (inside a memcmp chunk, on its boundary, at the row's end), some of equal length, sometimes with a
    negative or a huge slot, and padding past the last row."""
    rows: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 40))):
        length = int(rng.integers(1, 400))
        row = rng.integers(0, 2**31 - 1, length).astype(np.int64)
        if rows and rng.random() < 0.8:
            src = rows[int(rng.integers(0, len(rows)))]
            cut = int(rng.choice([rng.integers(0, src.shape[0] + 1), 64, 128, src.shape[0]]))
            cut = min(cut, src.shape[0], length)
            row[:cut] = src[:cut]
        if rng.random() < 0.05:
            row[int(rng.integers(0, length))] = -int(rng.integers(1, 5))
        if dtype == np.int64 and rng.random() < 0.2:
            row[int(rng.integers(0, length))] = 2**40 + int(rng.integers(0, 9))
        rows.append(row)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([r.shape[0] for r in rows], out=indptr[1:])
    pad = rng.integers(-5, 5, int(rng.integers(0, 3)))
    return indptr, np.concatenate([*rows, pad]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed", range(40))
def test_flat_forest_equals_the_numpy_one(sim: host_core._HostCore, dtype: type, seed: int) -> None:
    """``pat_flat_forest`` against the numpy construction: the same arrays (canonical node order) and the same slot
    maximum, or a maximum above the signed range where the numpy one refuses a negative slot."""
    indptr, ind = _rows_sharing_prefixes(np.random.default_rng(seed), dtype)
    want, want_max = _numpy_flat_forest(ind, indptr)
    arrays, top = sim.flat_forest(ind, indptr[:-1], indptr[1:] - indptr[:-1])
    assert sorted(arrays) == sorted(FOREST_ARRAYS)
    for name, got in arrays.items():  # the forest's arrays and the derived ones its planner reads (PrefixForest._get)
        expected = getattr(want, name)
        assert got.dtype == expected.dtype and got.tolist() == expected.tolist(), name
    signed_max = np.iinfo(dtype).max
    assert top == want_max if want_max is not None else top > signed_max
    with pytest.raises(ValueError):
        sim.flat_forest(ind[::2], indptr[:-1] // 2, np.ones(indptr.shape[0] - 1, np.int64))  # not contiguous: refused
    with pytest.raises(ValueError):
        sim.flat_forest(ind, indptr[:-1] + 1, indptr[1:] - indptr[:-1] + ind.shape[0])  # rows past ind: refused


def test_flat_forest_deep_paths_need_more_entries(sim: host_core._HostCore) -> None:
    """Rows nested ten deep (each a prefix of the next) have up to ten entries per request, more than the first guess
    of room: called again with enough, the same forest as numpy's."""
    base = np.arange(1000, 1100, dtype=np.int32)
    rows = [np.concatenate([base[: 10 * (k + 1)], [5000 + k]]).astype(np.int32) for k in range(10)]
    rows.append(np.array([7777], np.int32))  # an odd number of entries: the int32 and byte arrays after them align
    indptr = np.zeros(12, dtype=np.int64)
    np.cumsum([r.shape[0] for r in rows], out=indptr[1:])
    ind = np.concatenate(rows)
    want, want_max = _numpy_flat_forest(ind, indptr)
    got, top = sim.flat_forest(ind, indptr[:-1], indptr[1:] - indptr[:-1])
    assert got["req_flat"].shape[0] > 4 * 11 and got["req_flat"].shape[0] % 2  # more entries than the first guess
    for name in FOREST_ARRAYS:
        assert got[name].tolist() == getattr(want, name).tolist(), name
    assert top == want_max


def test_from_flat_builds_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PrefixForest.from_flat`` builds its forest through the compiled construction where it loads, and finds the
    forest its numpy construction finds."""
    sim = host_core.loaded()  # as loaded now (other tests reset it), not the module fixture's
    assert sim is not None
    batch = layout_tree(random_tree(np.random.default_rng(5), max_depth=4, max_requests=48, max_len=512, page_size=16),
                        page_size=16, rng=np.random.default_rng(6))
    calls: list[int] = []
    real = sim.flat_forest_scanning

    def counted(*args: np.ndarray) -> tuple:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(sim, "flat_forest_scanning", counted)
    compiled = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    assert calls, "the compiled construction was not used"
    _python(monkeypatch)
    numpy_built = PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices)
    assert compiled.canonical_key() == numpy_built.canonical_key()
    assert compiled.slot_max == numpy_built.slot_max


def _pick_inputs(rng: np.random.Generator) -> tuple[np.ndarray, list, list, np.ndarray | None]:
    """Random ``_pick_batch`` inputs: per-row lists with some rows empty (None), a batch of rows (sometimes with a row
    twice), the last batch's distinct rows (some not rows of the lists, some negative), or None."""
    size = int(rng.integers(1, 300))
    row_entry: list = [None if rng.random() < 0.2 else object() for _ in range(size)]
    row_rid: list = [f"r{i}" if rng.random() < 0.9 else None for i in range(size)]
    rows = rng.choice(size, size=int(rng.integers(1, size + 1)), replace=rng.random() < 0.2).astype(np.int64)
    if rng.random() < 0.15:
        return rows, row_entry, row_rid, None
    keys = rng.choice(size + 20, size=int(rng.integers(0, size + 1)), replace=False).tolist()
    if rng.random() < 0.2:
        keys.append(-3)
    return rows, row_entry, row_rid, np.array(keys, dtype=np.int64)


@pytest.mark.parametrize("seed", range(40))
def test_pick_batch_equals_the_python_one(seed: int) -> None:
    """``kernels/host_batch.c`` gives ``chain_table._pick_batch``'s tuples (the very objects), absent count and joined
    and left rows (as sets: their order is not part of the contract), call after call on one scratch array."""
    from pat_sglang.sglang_patches.chain_table import _pick_batch

    picker = host_core.loaded_batch()
    if picker is None:  # as for the simulation: a compiler is there wherever the tests run
        pytest.fail("the compiled publisher piece did not load (see the log for the reason)")
    rng = np.random.default_rng(seed)
    mark = np.full(320, -1, dtype=np.int64)
    for call in range(5):
        rows, row_entry, row_rid, before = _pick_inputs(rng)
        want = _pick_batch(rows, row_entry, row_rid, before)
        got = picker.pick_batch(rows, row_entry, row_rid, before, mark, 2 * (call + 1))
        assert all(map(operator.is_, got[0], want[0])) and len(got[0]) == len(want[0])
        assert got[1] == want[1] and got[2] == want[2]
        assert sorted(got[3]) == sorted(want[3]) and len(got[3]) == len(set(got[3]))
        assert sorted(got[4]) == sorted(want[4]) and len(got[4]) == len(set(got[4]))


def test_pick_batch_refuses_rows_it_cannot_index() -> None:
    picker = host_core.loaded_batch()
    assert picker is not None
    mark = np.full(4, -1, dtype=np.int64)
    with pytest.raises(IndexError):  # a row past the per-row lists
        picker.pick_batch(np.array([1, 3], np.int64), [None] * 3, ["a"] * 4, None, mark, 2)
    with pytest.raises(IndexError):  # a row past the scratch array
        picker.pick_batch(np.array([5], np.int64), [None] * 8, ["a"] * 8, np.zeros(0, np.int64), mark, 4)
    with pytest.raises(TypeError):  # not int64
        picker.pick_batch(np.array([1], np.int32), [None] * 3, ["a"] * 3, np.zeros(0, np.int64), mark, 6)
    with pytest.raises(TypeError):  # the last batch's rows not int64
        picker.pick_batch(np.array([1], np.int64), [None] * 3, ["a"] * 3, np.zeros(1, np.int32), mark, 8)



def test_address_is_the_data_pointer() -> None:
    """``host_core._address`` (ctypes' buffer view, numpy's pointer where that view is refused) gives each array's data
    address: writable, read-only, strided, empty, offset views and 2-D arrays."""
    base = np.arange(24, dtype=np.int64)
    read_only = base.copy()
    read_only.flags.writeable = False
    for arr in (base, base[3:], base[::2], base.reshape(4, 6), read_only, np.empty(0), base.view(np.int32)[1:]):
        assert host_core._address(arr) == arr.ctypes.data


# ---------------------------------------------------------------------------------------------- the worker thread
# ~480k slots, rows of 4500-5500, ~75 sharing a prefix: past SCAN_MIN_THREADED_ELEMS (64k slots) and, for the group's
# comparisons, COMPARE_THREADED_ELEMS (256k: pairs x its shortest row)
BIG_ROWS, BIG_ROW_TOKENS = 96, 5000


def _unsigned_max(ind: np.ndarray, begins: np.ndarray, counts: np.ndarray) -> int:
    """What a scan must return: the largest slot of the ranges as an unsigned integer, 0 for none."""
    unsigned = ind.view(np.uint32 if ind.dtype == np.int32 else np.uint64)
    return max([int(unsigned[b : b + c].max()) for b, c in zip(begins, counts, strict=True) if c] + [0])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed", range(12))
def test_scan_equals_numpy(sim: host_core._HostCore, dtype: type, seed: int) -> None:
    """``pat_scan_start``/``pat_scan_finish``: the unsigned maximum of the ranges (chunks split across the worker and
    the caller), a negative slot above the signed range; empty ranges and no ranges at all."""
    rng = np.random.default_rng(seed)
    ind = rng.integers(0, 2**31 - 1, int(rng.integers(1, 400_000))).astype(dtype)
    if seed % 3 == 0:
        ind[int(rng.integers(0, ind.shape[0]))] = -int(rng.integers(1, 9))
    n_ranges = int(rng.integers(0, 6))
    begins = rng.integers(0, ind.shape[0], n_ranges)
    counts = np.minimum(rng.integers(0, 200_000, n_ranges), ind.shape[0] - begins)
    counts[rng.random(n_ranges) < 0.2] = 0
    scan = sim.scan(ind, begins, counts)
    assert scan.posted == (int(counts.sum()) >= 1 << 16)  # the worker is free between tests
    assert scan.result() == _unsigned_max(ind, begins, counts)
    assert scan.result() == _unsigned_max(ind, begins, counts)  # joined once, then the number kept


def test_scan_refuses_ranges_outside(sim: host_core._HostCore) -> None:
    ind = np.arange(100, dtype=np.int32)
    for begins, counts in (([0], [101]), ([-1], [5]), ([3], [-1]), ([100], [1])):
        with pytest.raises(ValueError, match="within ind"):
            sim.scan(ind, np.array(begins), np.array(counts))
    with pytest.raises(ValueError, match="C-contiguous"):
        sim.scan(ind[::2], np.array([0]), np.array([1]))


def test_a_dropped_scan_is_joined(sim: host_core._HostCore) -> None:
    """A scan dropped without its result is finished when collected (the worker never reads a freed table), and the
    worker is free for the next one."""
    ind = np.random.default_rng(1).integers(0, 2**31 - 1, 1 << 20).astype(np.int32)
    scan = sim.scan(ind, np.array([0]), np.array([ind.shape[0]]))
    assert scan.posted
    del scan, ind
    again = np.arange(1 << 18, dtype=np.int64)
    scan = sim.scan(again, np.array([0]), np.array([again.shape[0]]))
    assert scan.posted and scan.result() == again.shape[0] - 1


def _big_shared_rows(rng: np.random.Generator, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """BIG_ROWS rows of about BIG_ROW_TOKENS slots: groups that share a long prefix (their comparisons go to the
    worker), sub-groups, private tails (the long ones to the leaf scan), sometimes a negative slot in a tail or in a
    prefix."""
    prefix = rng.integers(0, 2**31 - 1, BIG_ROW_TOKENS).astype(np.int64)
    rows = []
    for r in range(BIG_ROWS):
        row = rng.integers(0, 2**31 - 1, BIG_ROW_TOKENS + int(rng.integers(-500, 500))).astype(np.int64)
        shared = int(rng.choice([0, 700, 1500, 1500 + r % 3, 2000, -1]))
        if shared < 0:  # most of the row shared: its leaf short (its maximum taken in the walk, not the scan)
            shared = min(BIG_ROW_TOKENS, row.shape[0]) - int(rng.integers(1, 900))
        row[:shared] = prefix[:shared]
        rows.append(row)
    if rng.random() < 0.3:
        rows[int(rng.integers(0, BIG_ROWS))][-1] = -3
    if rng.random() < 0.2:
        for row in rows:
            row[5] = -2 if row[5] == prefix[5] else row[5]
    indptr = np.zeros(BIG_ROWS + 1, dtype=np.int64)
    np.cumsum([r.shape[0] for r in rows], out=indptr[1:])
    return indptr, np.concatenate(rows).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed", range(10))
def test_flat_forest_scanning_equals_flat_forest(sim: host_core._HostCore, dtype: type, seed: int) -> None:
    """``pat_flat_forest`` with a leaf scan (comparisons on two threads, private leaves on the worker): the same
    arrays as without, and the shared nodes' maximum with the leaves' is the maximum of every node."""
    indptr, ind = _big_shared_rows(np.random.default_rng(seed), dtype)
    want, want_top = sim.flat_forest(ind, indptr[:-1], indptr[1:] - indptr[:-1])
    got, shared_top, scan = sim.flat_forest_scanning(ind, indptr[:-1], indptr[1:] - indptr[:-1])
    for name in FOREST_ARRAYS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert max(shared_top, scan.result()) == want_top
    assert want_top == _unsigned_max(ind, np.array([0]), indptr[-1:])  # the rows tile the table: every slot they hold


def test_plans_made_on_two_threads_at_once() -> None:
    """Two threads planning at once (one finds the worker busy with the other's scan and scans alone): the same plans
    as one after the other."""
    import threading

    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    inputs = [_big_shared_rows(np.random.default_rng(s), np.int32) for s in range(40, 46)]
    inputs = [(torch.from_numpy(p), torch.from_numpy(i)) for p, i in inputs]

    def plan_or_error(p: torch.Tensor, i: torch.Tensor) -> tuple:
        try:
            made = pat_sglang.plan(p, i, heads)
            return made.max_slot, made.items.numpy().tobytes(), made.item_req.numpy().tobytes()
        except ValueError as e:
            return ("error", str(e))

    want = [plan_or_error(*x) for x in inputs]
    got: dict[int, list] = {0: [], 1: []}

    def run(k: int) -> None:
        for _ in range(5):
            got[k].append([plan_or_error(*x) for x in inputs[k::2]])

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        assert all(rnd == want[k::2] for rnd in got[k])


def _child_max_slot(indptr: np.ndarray, ind: np.ndarray, out: object) -> None:
    out.put(pat_sglang.plan(torch.from_numpy(indptr), torch.from_numpy(ind), HeadConfig(32, 8, 128,
                                                                                      torch.bfloat16)).max_slot)


def test_a_forked_child_plans() -> None:
    """The worker thread is not copied by fork: a child of a process that used it starts its own and plans."""
    import multiprocessing

    indptr, ind = _big_shared_rows(np.random.default_rng(3), np.int32)
    ind = np.abs(ind)
    want = pat_sglang.plan(torch.from_numpy(indptr), torch.from_numpy(ind), HeadConfig(32, 8, 128, torch.bfloat16))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_max_slot, args=(indptr, ind, out))
    child.start()
    got = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == want.max_slot == int(ind[: indptr[-1]].max())


def _glue_or_numpy(glue: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publisher's row passes (``chain_table.gens_at``, ``_rows_to_read``, ``_batch_arrays``) through the extension
    module (``glue``) or their numpy versions (``host_core.loaded_glue`` None) for the rest of the test."""
    if glue:
        assert host_core.loaded_glue() is not None, "the host core's extension module did not load"
    else:
        monkeypatch.setattr(host_core, "loaded_glue", lambda: None)


def _row_pass_inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's rows (some repeated), a per-row table holding generations (most equal to the batch's, some not), and
    the batch's generations read from another table."""
    size = int(rng.integers(1, 400))
    rows = rng.choice(size, size=int(rng.integers(0, min(size, 300) + 1)), replace=rng.random() < 0.2).astype(np.int64)
    table = rng.integers(-2, 5, size).astype(np.int64)
    gens = table[rows].copy()
    flip = rng.random(rows.shape[0]) < rng.random() * 0.3
    gens[flip] += rng.integers(1, 3, int(flip.sum()))
    return rows, table, gens


@pytest.mark.parametrize("seed", range(60))
def test_row_passes_equal_their_numpy_versions(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``host_glue.c``'s ``gens_at``, ``rows_to_read`` and ``batch_arrays`` against their numpy versions in
    ``chain_table``: the same values, dtypes and read-only flags; None for a negative row or no rows; arrays they do not
    take (int32, strided, 2-D) still answered by numpy; rows past a table refused alike."""
    from pat_sglang.sglang_patches import chain_table as ct

    rng = np.random.default_rng(seed)
    rows, table, gens = _row_pass_inputs(rng)
    if rows.shape[0] and rng.random() < 0.2:
        rows[int(rng.integers(0, rows.shape[0]))] = -1
    variants = [rows, rows.astype(np.int32), np.repeat(rows, 2)[::2]]  # the last: a strided view
    got: dict[bool, list] = {}
    for glue in (True, False):
        with monkeypatch.context() as m:
            _glue_or_numpy(glue, m)
            out = []
            for r in variants:
                out.append(ct.gens_at(r, table))
            ok = rows.shape[0] and rows.min() >= 0
            if ok:
                out.append(ct._rows_to_read(rows, gens, table))
                out.append(ct._batch_arrays(rows, gens, table))
                out.append(ct._batch_arrays(rows[::-1], gens[::-1], table))  # negative strides
                with pytest.raises(IndexError):
                    ct._rows_to_read(rows, gens, table[: int(rows.max())])
                with pytest.raises(IndexError):
                    ct._batch_arrays(rows, gens, table[: int(rows.max())])
            got[glue] = out
    assert len(got[True]) == len(got[False])
    for a, b in zip(got[True], got[False], strict=True):
        if isinstance(b, tuple):
            assert len(a) == len(b)
            pairs = list(zip(a, b, strict=True))
        else:
            pairs = [(a, b)]
        for x, y in pairs:
            if y is None or isinstance(y, list):
                assert x == y
            else:
                assert x.dtype == y.dtype == np.int64 and x.tolist() == y.tolist()
                assert not x.flags.writeable and not y.flags.writeable and x.flags.c_contiguous



@pytest.mark.parametrize("seed", range(40))
def test_step_checks_equal_their_numpy_versions(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``planner.same_ints``, ``int_stats`` and ``any_above`` (every decode step's checks over the batch's rows and
    lengths) through ``host_glue.c`` and through numpy: the same answers on random arrays (equal, one entry changed,
    other lengths, empty, a longer second array; int32 and strided ones, which the extension module leaves to numpy)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    a = rng.integers(-5, 9000, n).astype(np.int64)
    b = a.copy()
    if n and rng.random() < 0.5:
        b[int(rng.integers(0, n))] += int(rng.integers(-2, 3))
    longer = np.concatenate([b, rng.integers(-5, 9000, int(rng.integers(0, 5)))]).astype(np.int64)
    cases = [(a, b), (a, longer), (a, a[: n // 2]), (a, b.astype(np.int32)), (np.repeat(a, 2)[::2], b)]
    answers: dict[bool, list] = {}
    for glue in (True, False):
        with monkeypatch.context() as m:
            _glue_or_numpy(glue, m)
            out: list = []
            for x, y in cases:
                out.append(planner.same_ints(x, y))
                out.append(planner.int_stats(x))
                if y.shape[0] >= x.shape[0]:
                    out.append(planner.any_above(x, y))
                    out.append(planner.any_above(y[: x.shape[0]], x))
            answers[glue] = out
    assert answers[True] == answers[False]
    assert all(isinstance(v, (bool, tuple)) or v is None for v in answers[True])
    if n:
        assert planner.int_stats(a) == (int(a.min()), int(a.max()), int(a.sum()))


@pytest.mark.parametrize("seed", range(40))
def test_pass_numbers_equal_their_numpy_versions(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A planning pass's numbers over its packs (``planner._pack_numbers``, ``_split_numbers``, ``_packs_all_pay``,
    ``_all_multiples``) through ``host_glue.c`` and through numpy: the same arrays (dtype too) and numbers on random
    packs, split lengths and shared-node flags; int32 and empty arrays left to numpy alike."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    tok = rng.integers(1, 40000, n).astype(np.int64)
    off = rng.integers(0, 1 << 30, n).astype(np.int64)
    cnt = rng.integers(1, 300, n).astype(np.int64)
    rpb = int(rng.integers(1, 17))
    split = int(rng.choice([1, 7, 64, 1000, 1 << 20]))
    fa = type("Forest", (), {"q": cnt, "tok": tok, "shared": rng.random(n) < rng.random()})()
    stride = int(rng.choice([1, 3, 4096]))
    base = rng.integers(0, 64, n).astype(np.int64) * stride + (rng.random(n) < 0.05) * int(rng.integers(0, 2))
    answers: dict[bool, list] = {}
    for glue in (True, False):
        with monkeypatch.context() as m:
            _glue_or_numpy(glue, m)
            out: list = [
                planner._pack_numbers(tok, off, cnt, rpb),
                planner._split_numbers(tok, split, cnt // rpb + 1, cnt),
                planner._packs_all_pay(fa, rpb, 2048, 520),
                planner._packs_all_pay(fa, rpb, 16, 1 << 20),
                planner._all_multiples(base, stride),
                planner._pack_numbers(tok.astype(np.int32), off, cnt, rpb),
            ]
            answers[glue] = out
    for a, b in zip(answers[True], answers[False], strict=True):
        if isinstance(b, tuple):
            for x, y in zip(a, b, strict=True):
                if isinstance(y, np.ndarray):
                    assert x.dtype == y.dtype and x.tolist() == y.tolist()
                else:
                    assert x == y and type(x) is int
        else:
            assert a == b and isinstance(a, bool)
    with pytest.raises(ValueError):  # no packs: numpy's max of nothing, both ways
        planner._pack_numbers(tok[:0], off[:0], cnt[:0], rpb)


def test_glue_calls_leave_no_references_behind() -> None:
    """Every ``host_glue.c`` entry point, called many times on valid and refused inputs, leaves its inputs' reference
    counts as they were and holds no memory afterwards (a missed DECREF would leak a buffer per decode step)."""
    import tracemalloc

    from pat_sglang.sglang_patches import chain_table as ct

    core = host_core.loaded()
    assert core is not None and core.glue is not None
    glue = core.glue
    rng = np.random.default_rng(5)
    (pt, ko, prc, pr, pb, sp, rpb, tos, tms, lt, lp, nreq, _, _) = _item_inputs(rng)
    counts = (int(sp @ pb), int(sp @ prc))
    rows = rng.permutation(300)[:256].astype(np.int64)
    table = rng.integers(0, 5, 300).astype(np.int64)
    gens = table[rows].copy()
    gens[::7] += 1
    kept = ([5, 6, 7, 8], [0, 5, 11, 18], [-1, 0, 1, -1], [0, 1, 2, 0])
    attach, seq = np.array([0, 0, 1, 1, 3, 3, 2, 2], np.int64), np.full(8, 100, np.int64)
    old_of, old_attach = np.array([0, -1, 1, -1, 2, 3], np.int64), np.arange(4, dtype=np.int64)
    old_first = np.arange(7, 11, dtype=np.int64)

    def calls() -> None:
        core.plan_items(pt, ko, prc, pr, sp, rpb, tos, tms, lt, lp, nreq, *counts, None, ITEM_FIELDS)
        core.plan_items(pt, ko, prc, pr, sp, rpb, tos, tms, lt, lp, nreq, *counts, 0, ITEM_FIELDS)
        _, packed, *_, ancestors = glue.kept_pack(*kept)
        core.edit_forest(packed, ancestors.shape[1], [2, 2, 2, 2], attach, seq)
        core.edit_forest(packed, ancestors.shape[1], [3, 2, 2, 2], attach, seq)
        core.edit_places(old_of, old_attach, old_first, [1, 3], [(0, 5), (1, 5)], 6)
        ct.gens_at(rows, table), ct._rows_to_read(rows, gens, table), ct._batch_arrays(rows, gens, table)
        glue.same_ints(rows, rows), glue.int_stats(rows), glue.any_above(rows, gens)
        glue.pack_numbers(pt, ko, prc, 4), glue.split_numbers(pt, 100, pb, prc), glue.all_multiples(rows, 3)
        with pytest.raises(IndexError):
            glue.rows_to_read(rows, gens, table[:10])
        with pytest.raises(ValueError):
            core.plan_items(pt.astype(np.int32), ko, prc, pr, sp, rpb, tos, tms, lt, lp, nreq, *counts, None,
                            ITEM_FIELDS)

    held = (pt, ko, prc, pr, sp, rows, table, gens, *kept, tos, tms, attach, seq, old_of)
    calls()
    refs = [sys.getrefcount(x) for x in held]
    tracemalloc.start()
    try:
        calls()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            calls()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(x) for x in held] == refs
    assert grown < 64 * 1024, grown


@pytest.mark.parametrize("seed", range(30))
def test_row_paths_flush_equals_its_numpy_version(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_RowPaths.flush`` and ``paths`` through ``host_glue.c``'s ``write_paths`` and ``gather_paths`` against their
    numpy versions: pending rows of random signatures (depths 0 to the table's width, rows set twice, node ids past 32
    bits) leave the same tables, and a batch of rows (some without a path, one twice) gathers the same flat paths
    (values, dtypes, read-only); ``write_paths`` writes nothing and answers NotImplemented for what it does not take (a
    row past the table, a signature deeper than it, an item that is not three ints, int32 rows), and so does
    ``gather_paths`` (a row past the table, int32 rows), so that numpy answers those."""
    from pat_sglang.sglang_patches import chain_table as ct

    assert host_core.loaded_glue() is not None, "the host core's extension module did not load"
    rng = np.random.default_rng(seed)

    def entry(depth: int) -> ct.ChainEntry:
        sig = tuple((int(rng.integers(0, 1 << 40)), int(rng.integers(1, 1 << 47)), int(rng.integers(1, 5000)))
                    for _ in range(depth))
        return ct.ChainEntry(int(rng.integers(0, 1000)), 0, sig)

    sets = [(int(rng.integers(0, 300)), entry(int(rng.integers(0, 9)))) for _ in range(int(rng.integers(1, 120)))]
    batch = rng.permutation(320)[: int(rng.integers(1, 200))].astype(np.int64)  # rows with and without a path
    batch = np.append(batch, batch[0])
    tables, gathered = {}, {}
    for glue in (True, False):
        with monkeypatch.context() as m:
            if not glue:
                m.setattr(host_core, "loaded_glue", lambda: None)
            paths = ct._RowPaths()
            paths.room(1)
            for row, e in sets:
                paths.set(row, e)
            paths.keys[:] = paths.lengths[:] = -7  # poisoned: every cell read below is written by the flush
            paths.flush()
            tables[glue] = paths
            gathered[glue] = paths.paths(batch)
    for a, b in zip(gathered[True], gathered[False], strict=True):
        assert a.dtype == b.dtype == np.int64 and not a.flags.writeable and a.tolist() == b.tolist()
    a, b = tables[True], tables[False]
    for row in {r for r, _ in sets}:
        d = int(b.depth[row])
        assert d == a.depth[row]
        assert a.keys[row, :d].tolist() == b.keys[row, :d].tolist()
        assert a.lengths[row, :d].tolist() == b.lengths[row, :d].tolist()
    keys = np.full((4, 3), -1, np.int64)
    lengths = keys.copy()
    glue = host_core.loaded_glue()
    good = ((1, 2, 3), (4, 5, 6))
    assert glue.write_paths(keys, lengths, np.array([2], np.int64), [good]) is None
    assert keys[2].tolist() == [4, 1, -1] and lengths[2].tolist() == [6, 3, -1]  # root first
    for rows, sigs in (
        (np.array([4], np.int64), [good]),  # past the table
        (np.array([1], np.int64), [good + good]),  # deeper than its width
        (np.array([1], np.int64), [((1, 2),)]),  # not three ints
        (np.array([1], np.int64), [((1, 2, "3"),)]),
        (np.array([1], np.int32), [good]),
        (np.array([1, 2], np.int64), [good]),  # one signature per row
    ):
        before = keys.copy()
        assert glue.write_paths(keys, lengths, rows, sigs) is NotImplemented
        assert keys.tolist() == before.tolist()
    depth = np.array([0, 1, 2, 3], np.int64)
    assert [a.tolist() for a in glue.gather_paths(keys, lengths, depth, np.array([2, 0, 3], np.int64))] == [
        [0, 0, 2, 2, 2], [4, 1, -1, -1, -1], [6, 3, -1, -1, -1]]
    assert glue.gather_paths(keys, lengths, depth, np.array([4], np.int64)) is NotImplemented
    assert glue.gather_paths(keys, lengths, depth, np.array([1], np.int32)) is NotImplemented
