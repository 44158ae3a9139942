"""Re-made plans (``planner.remade_plan`` through ``DecodeStepPlanner.plan``): a changed batch whose requests only left
and joined takes last step's plan re-made for the change. Over random join / leave sequences on a real SGLang
RadixCache (asymmetric trees of shared templates, page sizes 1 and 16, GQA groups 1, 4 and 8, padding rows that come
and go, leavers whose row a shared item reads through, freed rows handed to a joiner in the same step), every plan,
re-made or full, must equal naive attention over ``req_to_token[row, :seq_len]`` in the float64 reference executor
(fresh random pools, outputs poisoned with NaN), and keep the plan invariants: every (request, KV token) covered
exactly once, partial slots unique and all used, the merge map complete. Full plans after a chain of re-made ones
must see the batch's true sharing (the forest kept from the last full plan, edited or rebuilt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sglang_harness import (
    RadixHarness,
    assert_plan_exact,
    assert_reads_within_rows,
    record_forests,
    rows_flat,
    slot_free_key,
)

from pat_sglang import decode_step
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.decode_step import PADDING_ROW, DecodeStepPlanner, StepBatch
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import (
    ITEM_KV_BEGIN,
    ITEM_KV_END,
    ITEM_REQ_BEGIN,
    ITEM_REQ_END,
    ITEM_TILE_M,
    PlanLimits,
)
from pat_sglang.sglang_patches.chain_table import ChainTable
from pat_sglang.sglang_patches.publish import publish_decode_batch

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


class Sim:
    """Requests on shared templates that join and leave a decode batch, rows freed and handed on at once."""

    def __init__(self, page_size: int, heads: HeadConfig, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.h = RadixHarness(page_size=page_size, max_reqs=48, max_context=1024, num_slots=1 << 15)
        system = self.rng.integers(1000, 2000, size=int(self.rng.integers(40, 200))).tolist()
        self.templates = [system] + [
            system + self.rng.integers(2000 + 500 * t, 2500 + 500 * t, size=int(self.rng.integers(5, 300))).tolist()
            for t in range(4)
        ]
        self.table = ChainTable(enabled=True)
        self.planner = DecodeStepPlanner(heads, DeviceSpec(), self.h.req_to_token, remake_plans=True)
        self.live: list[int] = []
        for _ in range(8):
            self.join()

    def join(self) -> None:
        template = self.templates[int(self.rng.integers(len(self.templates)))]
        suffix = self.rng.integers(5000, 9000, size=int(self.rng.integers(1, 400))).tolist()
        self.h.add_request(template + suffix)
        self.live.append(len(self.h.reqs) - 1)

    def leave(self, i: int) -> None:
        """Request ``live[i]`` finishes; its row goes to the next request admitted."""
        done = self.live.pop(i)
        pool = self.h.req_to_token_pool
        row = self.h.reqs[done].req_pool_idx
        pool.free(self.h.reqs[done])
        pool.free_slots.remove(row)
        pool.free_slots.insert(0, row)

    def read_row_member(self) -> int | None:
        """The live index of a request some shared item of the last plan reads its KV through, if any."""
        kept = self.planner._planned
        if kept is None:
            return None
        plan = kept.plan
        items = plan.items.numpy()
        shared = items[items[:, ITEM_REQ_END] - items[:, ITEM_REQ_BEGIN] > 1]
        if not shared.shape[0]:
            return None
        row = int(shared[0, ITEM_KV_BEGIN]) // plan.row_stride
        rows = [self.h.reqs[i].req_pool_idx for i in self.live]
        return rows.index(row) if row in rows else None

    def step(self, pad: int) -> StepBatch:
        self.h.decode(steps=1, only=self.live)
        publish_decode_batch(self.h.schedule_batch(self.live), self.table)
        pb = self.table.batch
        seq = np.array([self.h.seq_lens[i] for i in self.live] + [1] * pad, dtype=np.int64)
        rows = np.concatenate([np.asarray(pb.rows, dtype=np.int64), np.full(pad, PADDING_ROW, dtype=np.int64)])
        return StepBatch(rows, seq, len(self.live), pb)


def assert_invariants(plan, batch: StepBatch) -> None:
    """Every (request, KV position) covered exactly once; each item inside one row and a tile that holds its rows;
    partial slots unique and all used; each request merges exactly its entries' slots (none: one entry, written
    directly)."""
    rows, seq = batch.rows, batch.seq_lens
    stride = plan.row_stride
    items = plan.items_at(seq, rows)
    item_req = plan.item_req.numpy().astype(np.int64)
    dst = plan.item_dst.numpy().astype(np.int64)
    assert plan.num_requests == rows.shape[0] and plan.num_open == plan.num_requests
    assert items[0, ITEM_REQ_BEGIN] == 0 and (items[1:, ITEM_REQ_BEGIN] == items[:-1, ITEM_REQ_END]).all()
    assert items[-1, ITEM_REQ_END] == item_req.shape[0]
    cover = [np.zeros(int(n), dtype=np.int64) for n in seq]
    for it in items:
        b, e = int(it[ITEM_KV_BEGIN]), int(it[ITEM_KV_END])
        reqs = item_req[it[ITEM_REQ_BEGIN] : it[ITEM_REQ_END]]
        assert it[ITEM_TILE_M] >= reqs.shape[0] * plan.heads.group
        pos = b - b // stride * stride
        for r in reqs.tolist():
            cover[r][pos : pos + e - b] += 1
    assert all((c == 1).all() for c in cover), "a (request, token) is read twice or never"
    slots = dst[dst >= 0]
    assert np.array_equal(np.sort(slots), np.arange(plan.num_partials)), "partial slots not unique or not all used"
    indptr = plan.merge_indptr.numpy()
    merged = plan.merge_partials.numpy()
    per_req = np.bincount(item_req, minlength=plan.num_requests)
    for r in range(plan.num_requests):
        mine = dst[item_req == r]
        want = [] if per_req[r] == 1 else sorted(mine.tolist())
        assert per_req[r] == 1 and (mine == -1).all() or (mine >= 0).all()
        assert sorted(merged[indptr[r] : indptr[r + 1]].tolist()) == want


def true_sharing(sim: Sim, batch: StepBatch) -> tuple:
    """``slot_free_key`` of the batch's req_to_token rows (``from_flat``), padding sharing nothing."""
    indptr, flat = rows_flat(sim.h.req_to_token, batch.rows, batch.seq_lens)
    fake = sim.h.num_slots
    for r in range(batch.n_real, batch.rows.shape[0]):
        n = int(indptr[r + 1] - indptr[r])
        flat[indptr[r] : indptr[r + 1]] = fake + np.arange(n)
        fake += n
    return slot_free_key(PrefixForest.from_flat(indptr, flat))


def run_steps(sim: Sim, steps: int, seed: int, limits: PlanLimits | None = None, read_row: bool = True) -> list[str]:
    """Random joins, leaves (sometimes the member a shared item reads through), both, or nothing, with padding that
    comes and goes; every plan checked. The kinds of step taken (``StepPhases.forest``)."""
    forests = record_forests(sim.planner)
    kinds = []
    for i in range(steps):
        action = int(sim.rng.integers(5))
        if action in (1, 3) and len(sim.live) > 3:
            member = sim.read_row_member() if read_row and sim.rng.random() < 0.5 else None
            for _ in range(int(sim.rng.integers(1, 3))):
                sim.leave(member if member is not None else int(sim.rng.integers(len(sim.live))))
                member = None
        if action in (2, 3) and len(sim.live) < 30:
            for _ in range(int(sim.rng.integers(1, 3))):
                sim.join()
        pad = int(sim.rng.choice([0, 0, 1, 3]))
        batch = sim.step(pad)
        built = len(forests)
        plan = sim.planner.plan(batch, limits)
        kinds.append(sim.planner.phases.forest)
        if len(forests) > built:  # a full plan: its forest has the batch's true sharing
            assert slot_free_key(forests[-1]) == true_sharing(sim, batch)
        if limits is not None:
            assert plan.num_items <= limits.max_items and plan.num_partials <= limits.max_partials
            assert plan.item_req.shape[0] <= limits.max_entries
        assert_invariants(plan, batch)
        assert_reads_within_rows(plan, batch.rows, batch.seq_lens, sim.planner.row_stride)
        assert_plan_exact(plan, sim.h.req_to_token, batch.rows, batch.seq_lens, seed=seed * 1000 + i,
                          num_slots=sim.h.num_slots)
    return kinds


HEADS = [HeadConfig(4, 4, 64, torch.bfloat16), HeadConfig(8, 2, 64, torch.bfloat16),
         HeadConfig(16, 2, 64, torch.bfloat16)]


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"group{h.group}")
def test_random_joins_and_leaves_are_exact(page_size: int, heads: HeadConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quality bounds lifted (every such change re-made while it fits), chains capped at 6: re-made and full plans
    interleave, all exact."""
    monkeypatch.setattr(decode_step, "REMAKE_MAX_EXTRA_FRACTION", 0.9)
    monkeypatch.setattr(decode_step, "SPLIT_KEEP_FRACTION", 1.0)
    monkeypatch.setattr(decode_step, "REMAKE_MAX_CHAIN", 6)
    sim = Sim(page_size, heads, seed=page_size + heads.group)
    kinds = run_steps(sim, 24, seed=page_size + heads.group)
    assert kinds.count("remade") >= 6 and kinds.count("remade") == sim.planner.counters.remade
    assert sim.planner.counters.built >= 2  # chains end (the cap, radix splits): full plans in between


@pytest.mark.parametrize("page_size", [1, 16])
def test_default_bounds_stay_exact(page_size: int) -> None:
    """The shipped bounds: fewer re-made plans (a joiner re-reads a shared template), all exact."""
    sim = Sim(page_size, HEADS[1], seed=40 + page_size)
    kinds = run_steps(sim, 16, seed=40 + page_size)
    assert "remade" in kinds


def test_limits_refuse_a_remade_plan_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits as tight as the last plan: a joiner's items do not fit, so the batch is planned in full (fitted by the
    planner's own fallbacks), never handed a plan over the limits."""
    monkeypatch.setattr(decode_step, "REMAKE_MAX_EXTRA_FRACTION", 0.9)
    monkeypatch.setattr(decode_step, "SPLIT_KEEP_FRACTION", 1.0)
    sim = Sim(1, HEADS[1], seed=7)
    first = sim.planner.plan(sim.step(0))
    limits = PlanLimits(first.num_items + 1, first.num_partials + 64, first.item_req.shape[0] + 64)
    sim.planner.forget()
    sim.planner.plan(sim.step(0), limits)
    sim.join()
    sim.join()
    remade = sim.planner.counters.remade
    batch = sim.step(0)
    plan = sim.planner.plan(batch, limits)
    assert sim.planner.counters.remade == remade and plan.num_items <= limits.max_items
    assert_invariants(plan, batch)
    assert_plan_exact(plan, sim.h.req_to_token, batch.rows, batch.seq_lens, seed=3, num_slots=sim.h.num_slots)
    # and with room, the same kind of change is re-made, within the limits
    roomy = PlanLimits(10_000, 10_000, 10_000)
    sim.planner.plan(sim.step(0), roomy)
    sim.leave(0)
    sim.join()
    kinds = run_steps(sim, 6, seed=8, limits=roomy)
    assert "remade" in kinds


def test_remade_plan_bytes_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A joiner that shares a long template re-reads it in a re-made plan: past REMAKE_MAX_EXTRA_FRACTION of the
    plan's KV the batch is planned in full, and a re-made plan's extra bytes over the full plan's excess stay within
    the fraction."""
    monkeypatch.setattr(decode_step, "SPLIT_KEEP_FRACTION", 1.0)
    sim = Sim(1, HEADS[1], seed=11)
    sim.planner.plan(sim.step(0))
    tok = sim.planner.heads.kv_token_bytes
    for _ in range(12):
        sim.join()
        batch = sim.step(0)
        plan = sim.planner.plan(batch)
        kept = sim.planner._planned
        extra = (plan.stats.kv_bytes_planned - plan.stats.kv_bytes_unique) // tok - kept.excess_tokens
        if sim.planner.phases.forest == "remade":
            assert extra <= decode_step.REMAKE_MAX_EXTRA_FRACTION * plan.stats.kv_bytes_planned / tok
        assert_plan_exact(plan, sim.h.req_to_token, batch.rows, batch.seq_lens, seed=5, num_slots=sim.h.num_slots)
    assert sim.planner.counters.built >= 2  # some joiners shared too much to be re-made


@pytest.mark.parametrize("page_size", [1, 16])
def test_joiners_excess_is_a_lower_bound(page_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap refusal (``DecodeStepPlanner._joiners_excess``, from the publisher's node counts) is conservative:
    every re-made plan reads at least the batch's unique KV plus it, so refusing a plan whose unique KV plus it is past
    the bound refuses only what ``remade_plan``'s own bound would refuse. Bounds lifted so every change is re-made and
    each attempt's bound is compared with the plan's real reads; some joiners share (a positive bound, reached)."""
    monkeypatch.setattr(decode_step, "REMAKE_MAX_EXTRA_FRACTION", 0.9)
    monkeypatch.setattr(decode_step, "SPLIT_KEEP_FRACTION", 1.0)
    seen: list[int] = []
    checked: list[tuple[int, int]] = []
    excess_of = DecodeStepPlanner._joiners_excess

    def record_excess(batch: StepBatch, joiners: np.ndarray) -> int:
        value = excess_of(batch, joiners)
        seen.append(value)
        return value

    remade_of = decode_step.remade_plan

    def check_remade(previous, old_index, rows, seq_lens, unique, limits=None, planned_tokens=(0, 1 << 62)):
        plan = remade_of(previous, old_index, rows, seq_lens, unique, limits, planned_tokens)
        if plan is not None and bool((old_index < 0).any()) and seen:
            tok = previous.heads.kv_token_bytes
            checked.append((plan.stats.kv_bytes_planned // tok - unique, seen[-1]))
        return plan

    monkeypatch.setattr(DecodeStepPlanner, "_joiners_excess", staticmethod(record_excess))
    monkeypatch.setattr(decode_step, "remade_plan", check_remade)
    sim = Sim(page_size, HEADS[1], seed=90 + page_size)
    for _ in range(30):
        seen.clear()
        if len(sim.live) > 4 and sim.rng.random() < 0.5:
            sim.leave(int(sim.rng.integers(len(sim.live))))
        for _ in range(int(sim.rng.integers(1, 3))):
            sim.join()
        batch = sim.step(int(sim.rng.choice([0, 1])))
        plan = sim.planner.plan(batch)
        assert_plan_exact(plan, sim.h.req_to_token, batch.rows, batch.seq_lens, seed=9, num_slots=sim.h.num_slots)
    assert len(checked) >= 5
    assert all(extra >= bound for extra, bound in checked), checked
    assert any(bound > 0 for _, bound in checked)


def test_node_refs_only_for_the_batch_just_published() -> None:
    """``PublishedBatch.node_refs`` counts the rows through each radix node of its own batch, and is withheld once the
    publisher has moved on (the planner then refuses nothing early)."""
    sim = Sim(1, HEADS[0], seed=5)
    batch = sim.step(0)
    pb = batch.published
    refs = pb.node_refs()
    assert refs is not None
    expect: dict[tuple[int, int], int] = {}
    for entry in pb.entries:
        for node_id, _, tokens in entry.signature:
            expect[(node_id, tokens)] = expect.get((node_id, tokens), 0) + 1
    assert refs == expect
    sim.join()
    sim.step(0)
    assert pb.node_refs() is None and sim.table.batch.node_refs() is not None
    j = np.array([len(pb.entries) - 1])
    assert DecodeStepPlanner._joiners_excess(batch, j) == 0  # withheld: no bound


LONG_PACKS_HEADS = HeadConfig(16, 4, 256, torch.bfloat16)  # d256: sm_90's least tile m 64, long packs from 600 tokens


@pytest.mark.parametrize(("page_size", "heads"), [(1, 0), (16, 1), (1, 2), (1, 3)])
def test_compiled_remade_plans_equal_numpy(page_size: int, heads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``remade_plan`` through the host extension module (``kernels/host_remade.c``) against its numpy version on every
    re-made step of a join / leave sequence (padding rows, leavers whose row a shared item reads, joiners of several
    splits; limits now and then too tight): the same answer (a plan or None) and, for a plan, the same items, entries,
    merge map, partial count and statistics. The last case plans head dim 256 with its least tile m of 64 and packs
    long from 600 KV tokens: joiners and kept items on both sides of it."""
    from pat_sglang import host_core, planner
    from pat_sglang.config import load_tile_table

    assert host_core.loaded_glue() is not None, "the host core's extension module did not load"
    if heads == 3:
        table = load_tile_table("sm90").with_min_tile_m_tokens(600)
        assert table.least_tile_m(256) == (64, 600)
        monkeypatch.setattr(planner, "load_tile_table", lambda arch: table)
    tile_ms: set[int] = set()
    monkeypatch.setattr(decode_step, "REMAKE_MAX_EXTRA_FRACTION", 0.9)
    monkeypatch.setattr(decode_step, "SPLIT_KEEP_FRACTION", 1.0)
    remade_of = decode_step.remade_plan
    compared: list[bool] = []
    answered: list[object] = []  # what the compiled call gave on each re-made step (a plan's arrays, or None)
    glue_call = host_core.glue_call

    def record(name: str, *args: object) -> object:
        got = glue_call(name, *args)
        if name == "remade_items" and host_core.loaded() is not None:  # (not the numpy reference's call)
            answered.append(got)
        return got

    monkeypatch.setattr(host_core, "glue_call", record)

    def both(previous, old_index, rows, seq_lens, unique, limits=None, planned_tokens=(0, 1 << 62)):
        if compared and len(compared) % 5 == 0:  # now and then limits the plan may not fit
            limits = PlanLimits(int(previous.num_items), int(previous.num_partials), int(previous.item_req.shape[0]))
        plan = remade_of(previous, old_index, rows, seq_lens, unique, limits, planned_tokens)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(host_core, "loaded", lambda: None)
            want = remade_of(previous, old_index, rows, seq_lens, unique, limits, planned_tokens)
        assert (plan is None) == (want is None)
        compared.append(plan is not None)
        if plan is not None:
            for name in ("items", "item_req", "item_dst", "merge_indptr", "merge_partials"):
                a, b = getattr(plan, name), getattr(want, name)
                assert a.dtype == b.dtype and a.tolist() == b.tolist(), name
            assert plan.num_partials == want.num_partials and plan.stats == want.stats
            assert (plan.num_requests, plan.num_open, plan.split_tokens) == (
                want.num_requests, want.num_open, want.split_tokens)
            tile_ms.update(plan.items[:, ITEM_TILE_M].tolist())
        return plan

    monkeypatch.setattr(decode_step, "remade_plan", both)
    sim = Sim(page_size, LONG_PACKS_HEADS if heads == 3 else HEADS[heads], seed=40 + heads)
    for _ in range(40):
        if len(sim.live) > 4 and sim.rng.random() < 0.6:
            sim.leave(int(sim.rng.integers(len(sim.live))))
        for _ in range(int(sim.rng.integers(0, 3))):
            sim.join()
        batch = sim.step(int(sim.rng.choice([0, 1, 3])))
        plan = sim.planner.plan(batch)
        assert_plan_exact(plan, sim.h.req_to_token, batch.rows, batch.seq_lens, seed=3, num_slots=sim.h.num_slots)
    assert sum(compared) >= 8 and not all(compared), compared
    assert NotImplemented not in answered and sum(isinstance(a, tuple) for a in answered) == sum(compared)
    if heads == 3:  # re-made items of short packs on 64 rows (the least tile m), of long ones on 16
        assert {16, 64} <= tile_ms, tile_ms
