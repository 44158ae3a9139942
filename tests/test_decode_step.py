"""DecodeStepPlanner directly over a real SGLang RadixCache: batches published by the scheduler patch
(``publish_decode_batch`` into an enabled ``ChainTable``) -> forest (reused with grown leaves, or rebuilt from the
published paths) -> plan over ``req_to_token``. Every step's forest must describe the sharing ``from_flat`` finds in
the ``req_to_token`` rows (requests without a usable path, and padding, sharing nothing), and every plan, run by the
float64 reference executor on fresh random pools, must equal naive attention over ``req_to_token[row, :seq_len]``."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sglang_harness import (
    RadixHarness,
    assert_plan_exact,
    assert_reads_within_rows,
    plan_work,
    record_forests,
    rows_flat,
    slot_free_key,
)

from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.decode_step import PADDING_ROW, DecodeStepPlanner, StepBatch
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import PlanLimits, plan_forest
from pat_sglang.sglang_patches.chain_table import ChainTable
from pat_sglang.sglang_patches.publish import publish_decode_batch

HEADS = HeadConfig(8, 2, 64, torch.bfloat16)
PLAN_TENSORS = ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@dataclasses.dataclass
class Setup:
    h: RadixHarness
    table: ChainTable
    planner: DecodeStepPlanner
    forests: list
    rng: np.random.Generator
    system: list[int]
    live: list[int]


def setup(page_size: int = 1, seed: int = 0, n: int = 6, reuse_plans: bool = False) -> Setup:
    """``reuse_plans`` off by default: these tests follow the forest of every step (a reused plan makes none)."""
    rng = np.random.default_rng(seed)
    h = RadixHarness(page_size=page_size, max_reqs=32, max_context=512, num_slots=1 << 13)
    system = rng.integers(1000, 2000, size=48).tolist()
    for _ in range(n):
        h.add_request(system + rng.integers(2000, 9000, size=int(rng.integers(3, 25))).tolist())
    planner = DecodeStepPlanner(HEADS, DeviceSpec(), h.req_to_token, reuse_plans=reuse_plans)
    return Setup(h, ChainTable(enabled=True), planner, record_forests(planner), rng, system, list(range(n)))


def step(s: Setup, pad: int = 0) -> StepBatch:
    """One scheduler step of the live requests: a new token each, publish, the host view (padded with ``pad``
    requests of row ``PADDING_ROW``, seq_len 1, as CUDA-graph replay pads)."""
    s.h.decode(steps=1, only=s.live)
    publish_decode_batch(s.h.schedule_batch(s.live), s.table)
    pb = s.table.batch
    assert pb is not None and pb.rows.tolist() == [s.h.reqs[i].req_pool_idx for i in s.live]
    seq = np.array([s.h.seq_lens[i] for i in s.live], dtype=np.int64)
    rows = np.asarray(pb.rows, dtype=np.int64)
    if pad:
        rows = np.concatenate([rows, np.full(pad, PADDING_ROW, dtype=np.int64)])
        seq = np.concatenate([seq, np.ones(pad, dtype=np.int64)])
    return StepBatch(rows, seq, len(s.live), pb)


def expected_key(s: Setup, batch: StepBatch, apart: set[int]) -> tuple:
    """The sharing of the batch's req_to_token rows (``from_flat``), with the requests in ``apart`` and padding
    sharing nothing (their slots replaced by unique ones)."""
    indptr, flat = rows_flat(s.h.req_to_token, batch.rows, batch.seq_lens)
    fake = s.h.num_slots
    for r in sorted(apart | set(range(batch.n_real, batch.rows.shape[0]))):
        n = int(indptr[r + 1] - indptr[r])
        flat[indptr[r] : indptr[r + 1]] = fake + np.arange(n)
        fake += n
    return slot_free_key(PrefixForest.from_flat(indptr, flat))


def plan_and_check(s: Setup, batch: StepBatch, seed: int, apart: frozenset[int] = frozenset(), limits=None):
    """Plan ``batch``; its forest has the expected sharing and the plan reads only the batch's rows, exactly."""
    plan = s.planner.plan(batch, limits)
    forest = s.forests[-1]
    assert slot_free_key(forest) == expected_key(s, batch, set(apart))
    assert s.planner.unique_tokens(batch) == forest.unique_tokens()  # the gate's bound, without the forest
    assert forest.request_lengths.tolist() == batch.seq_lens.tolist()
    r2t = s.h.req_to_token
    assert plan.slot_table.data_ptr() == r2t.data_ptr() and plan.max_slot is None
    assert plan.num_requests == batch.rows.shape[0]
    assert_reads_within_rows(plan, batch.rows, batch.seq_lens, r2t.shape[1])
    assert_plan_exact(plan, r2t, batch.rows, batch.seq_lens, seed=seed, num_slots=s.h.num_slots)
    return plan


def shares(forest: PrefixForest, r: int) -> bool:
    return bool((forest.q[forest.entry_node[forest.req_flat == r]] > 1).any())


@pytest.mark.parametrize("page_size", [1, 16])
def test_unchanged_batch_reuses_the_forest(page_size: int) -> None:
    """Same batch step after step: one forest built, then grown (``with_lengths``); the plans are re-made from last
    step's (``plan_forest(previous=...)``) and do a fresh plan's work."""
    s = setup(page_size)
    first = None
    previous = None
    regrown = 0
    for i in range(25):
        batch = step(s)
        plan = plan_and_check(s, batch, seed=i)
        fresh = plan_forest(s.forests[-1], HEADS, DeviceSpec(), slot_table=s.planner.slot_table,
                            row_stride=s.planner.row_stride)
        table = s.h.req_to_token.view(-1).numpy()
        at = (batch.seq_lens, batch.rows)
        assert plan_work(plan, table, *at) == plan_work(fresh, table, *at) and plan.stats == fresh.stats
        regrown += previous is not None and plan.item_req is previous.item_req
        previous = plan
        if first is None:
            first = s.forests[-1]
            assert first.shared_tokens() > 0  # the system prompt is shared
        else:  # the same structure, grown leaves: no rebuild
            assert s.forests[-1].req_flat is first.req_flat and s.forests[-1].parent is first.parent
        assert (s.planner.counters.built, s.planner.counters.reused) == (1, i)
    assert s.table.reused == 24  # the publisher saw the same chains, identity checks only
    assert regrown > 12  # most plans re-made from the previous one (a split count change plans afresh)
    assert s.planner.counters.unshared == 0 and s.planner.counters.coarse == 0


def test_arrival_finish_reorder_rebuild() -> None:
    s = setup(seed=1)
    c = s.planner.counters
    plan_and_check(s, step(s), seed=0)
    plan_and_check(s, step(s), seed=1)
    assert (c.built, c.reused) == (1, 1)
    # An arrival that splits the system prompt's radix node.
    s.h.add_request(s.system[:30] + s.rng.integers(9000, 9999, size=9).tolist())
    s.live.append(len(s.h.reqs) - 1)
    plan_and_check(s, step(s), seed=2)
    assert (c.built, c.reused) == (2, 1)
    assert shares(s.forests[-1], len(s.live) - 1)  # the newcomer shares the first 30 tokens
    plan_and_check(s, step(s), seed=3)
    assert (c.built, c.reused) == (2, 2)
    # A finish: the row is freed and goes to the next arrival (same row, another request and generation).
    done = s.live.pop(2)
    row = s.h.reqs[done].req_pool_idx
    s.h.req_to_token_pool.free(s.h.reqs[done])
    plan_and_check(s, step(s), seed=4)
    assert (c.built, c.reused) == (3, 2)
    s.h.req_to_token_pool.free_slots.remove(row)
    s.h.req_to_token_pool.free_slots.insert(0, row)
    s.h.add_request(s.system + s.rng.integers(9000, 9999, size=5).tolist())
    assert s.h.reqs[-1].req_pool_idx == row
    s.live.append(len(s.h.reqs) - 1)
    plan_and_check(s, step(s), seed=5)
    assert (c.built, c.reused) == (4, 2)
    # The same requests in another order: other rows per batch index.
    s.live = s.live[::-1]
    plan_and_check(s, step(s), seed=6)
    assert (c.built, c.reused) == (5, 2)
    plan_and_check(s, step(s), seed=7)
    assert (c.built, c.reused) == (5, 3) and c.unshared == 0


def test_missing_entry_planned_without_sharing() -> None:
    """A request whose radix chain cannot be read when the batch is published (here: a last node cut off from the
    tree) has no entry; the planner gives it its whole row as a private leaf, counts it, and stays exact."""
    s = setup(seed=2)
    plan_and_check(s, step(s), seed=0)
    victim = 3
    req = s.h.reqs[s.live[victim]]
    real = req.last_node
    req.last_node = SimpleNamespace(id=-1, parent=None, value=None)  # reaches no root: unreadable
    try:
        batch = step(s)
    finally:
        req.last_node = real
    assert batch.published.entries[victim] is None and batch.published.absent == 1
    plan_and_check(s, batch, seed=1, apart=frozenset({victim}))
    c = s.planner.counters
    assert c.unshared == 1 and c.built == 2 and not shares(s.forests[-1], victim)
    assert any(shares(s.forests[-1], r) for r in range(len(s.live)) if r != victim)  # the others still share
    plan_and_check(s, step(s), seed=2)  # published again: shares again
    assert c.unshared == 1 and c.built == 3 and shares(s.forests[-1], victim)
    # A batch the table did not record entries for (``entries`` None): nobody shares, everybody counted.
    batch = step(s)
    bare = StepBatch(batch.rows, batch.seq_lens, batch.n_real, dataclasses.replace(batch.published, entries=None))
    plan = plan_and_check(s, bare, seed=3, apart=frozenset(range(len(s.live))))
    assert c.unshared == 1 + len(s.live) and plan.stats.kv_bytes_planned == plan.stats.kv_bytes_per_request
    # No published batch at all (rows read back by the backend): the same.
    plan_and_check(s, StepBatch(batch.rows, batch.seq_lens, batch.n_real, None), seed=4,
                   apart=frozenset(range(len(s.live))))
    assert c.unshared == 1 + 2 * len(s.live)


@pytest.mark.parametrize("reuse", [False, True])
def test_stale_entry_not_trusted(reuse: bool) -> None:
    """A published path longer than the request (cached_len > seq_len) is not used: the request is planned over its
    ``seq_len`` tokens without sharing, exactly; the other requests keep their paths."""
    s = setup(seed=3)
    if reuse:  # the last forest was made from the same entries and rows: with_lengths must not stretch it
        plan_and_check(s, step(s), seed=0)
    batch = step(s)
    victim = 1
    cached = int(batch.published.cached[victim])
    assert cached >= 8
    seq = batch.seq_lens.copy()
    seq[victim] = cached - 5
    stale = StepBatch(batch.rows, seq, batch.n_real, batch.published)
    built = s.planner.counters.built
    plan_and_check(s, stale, seed=1, apart=frozenset({victim}))
    assert s.planner.counters.unshared == 1 and s.planner.counters.built == built + 1
    assert s.forests[-1].num_nodes > len(s.live)  # the others still share


def test_padding_requests() -> None:
    s = setup(seed=4)
    for i in range(4):
        batch = step(s, pad=3)
        assert batch.rows.shape[0] == len(s.live) + 3
        plan_and_check(s, batch, seed=i)
        forest = s.forests[-1]
        for r in range(batch.n_real, batch.rows.shape[0]):  # one private token of the padding row
            assert not shares(forest, r) and int(forest.request_lengths[r]) == 1
    c = s.planner.counters
    assert (c.built, c.reused, c.unshared) == (1, 3, 0)


def test_planner_never_reads_req_to_token_values() -> None:
    """Planning is host work over published paths and lengths only: a planner over a req_to_token of all -1 makes
    the same plan, and so does one over the real table scribbled (-1) everywhere the plan's kernels do not read
    (positions >= seq_len of the batch's rows, and every other row); the plan then still runs exactly."""
    s = setup(seed=5)
    batch = step(s, pad=2)
    plan = plan_and_check(s, batch, seed=0)
    r2t = s.h.req_to_token
    blank = torch.full_like(r2t, -1)
    other = DecodeStepPlanner(HEADS, DeviceSpec(), blank).plan(batch)
    assert other.slot_table.data_ptr() == blank.data_ptr()
    for name in PLAN_TENSORS:
        assert torch.equal(getattr(other, name), getattr(plan, name)), name
    assert other.num_partials == plan.num_partials
    keep = torch.zeros_like(r2t, dtype=torch.bool)
    for row, n in zip(batch.rows.tolist(), batch.seq_lens.tolist(), strict=True):
        keep[row, :n] = True
    before = r2t.clone()
    r2t[~keep] = -1
    assert not torch.equal(r2t, before)
    again = DecodeStepPlanner(HEADS, DeviceSpec(), r2t).plan(batch)
    for name in PLAN_TENSORS:
        assert torch.equal(getattr(again, name), getattr(plan, name)), name
    assert_plan_exact(plan, r2t, batch.rows, batch.seq_lens, seed=1, num_slots=s.h.num_slots)


def test_plans_fit_limits() -> None:
    """Under limits too small for the shared plan the planner coarsens (``plan.fallback``, counted), and the plan
    still fits and is exact; the forest is reused all the same."""
    s = setup(seed=6)
    batch = step(s)
    shared = plan_and_check(s, batch, seed=0)
    assert shared.num_partials > 0 and shared.fallback == ""
    bs = batch.rows.shape[0]
    limits = PlanLimits(max_items=bs, max_partials=0, max_entries=bs)
    plan = plan_and_check(s, step(s), seed=1, limits=limits)
    assert plan.fallback == "no sharing" and s.planner.counters.coarse == 1 and s.planner.counters.reused == 1
    assert plan.num_items <= bs and plan.num_partials == 0 and plan.item_req.shape[0] <= bs
    roomy = PlanLimits(max_items=10_000, max_partials=10_000, max_entries=10_000)
    plan = plan_and_check(s, step(s), seed=2, limits=roomy)
    assert plan.fallback == "" and s.planner.counters.coarse == 1


def test_bad_inputs() -> None:
    s = setup(seed=7, n=2)
    r2t = s.h.req_to_token
    with pytest.raises(ValueError, match="int32"):
        DecodeStepPlanner(HEADS, DeviceSpec(), r2t.long())
    with pytest.raises(ValueError, match="contiguous"):
        DecodeStepPlanner(HEADS, DeviceSpec(), r2t.t())
    batch = step(s)
    for bad in (0, r2t.shape[1] + 1):
        seq = batch.seq_lens.copy()
        seq[0] = bad
        with pytest.raises(ValueError, match="sequence lengths"):
            s.planner.plan(StepBatch(batch.rows, seq, batch.n_real, batch.published))


# ----------------------------------------------------------------------------------------------- plan reuse
def test_unchanged_steps_take_the_same_plan_until_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unchanged batch gets the very plan object of the step it was planned at (no forest, no planning), exact at
    every later step's lengths (its open items end there), while the requests have grown by at most
    ``replan_growth_tokens``; one token more and it is planned again (then reused again)."""
    import pat_sglang.decode_step as ds

    monkeypatch.setattr(ds, "REPLAN_MIN_GROWTH_TOKENS", 5)
    s = setup(seed=8, reuse_plans=True)
    c = s.planner.counters
    batch = step(s)
    plan = plan_and_check(s, batch, seed=0)
    assert plan.num_open == plan.num_requests and plan.row_stride == s.h.req_to_token.shape[1]
    bound = ds.replan_growth_tokens(plan)
    assert bound == max(5, plan.stats.max_item_tokens // ds.REPLAN_GROWTH_DIVISOR) < 10
    items = plan.items.clone()
    r2t = s.h.req_to_token
    for i in range(1, bound + 1):
        batch = step(s)
        assert s.planner.plan(batch) is plan, i
        assert_reads_within_rows(plan, batch.rows, batch.seq_lens, r2t.shape[1])
        assert_plan_exact(plan, r2t, batch.rows, batch.seq_lens, seed=i, num_slots=s.h.num_slots)
    assert c.plans_reused == bound and (c.built, c.reused) == (1, 0) and len(s.forests) == 1
    batch = step(s)  # grown by bound + 1 since planned
    again = plan_and_check(s, batch, seed=99)
    assert again is not plan and c.plans_reused == bound and (c.built, c.reused) == (1, 1)
    assert torch.equal(plan.items, items)  # never edited
    assert s.planner.plan(step(s)) is again and c.plans_reused == bound + 1


def test_default_bound_scales_with_the_longest_item() -> None:
    from pat_sglang.decode_step import REPLAN_GROWTH_DIVISOR, REPLAN_MIN_GROWTH_TOKENS, replan_growth_tokens

    s = setup(seed=9, reuse_plans=True)
    plan = s.planner.plan(step(s))
    assert replan_growth_tokens(plan) == REPLAN_MIN_GROWTH_TOKENS  # short rows
    longer = dataclasses.replace(plan, stats=dataclasses.replace(plan.stats, max_item_tokens=8000))
    assert replan_growth_tokens(longer) == 8000 // REPLAN_GROWTH_DIVISOR == 1000


def test_changed_batches_are_planned_again() -> None:
    """Arrivals, finishes, reordering, other limits, a stale path, another padding: never last step's plan."""
    s = setup(seed=10, reuse_plans=True)
    s.planner.remake_plans = False  # this test follows the forests of full plans (re-made plans: test_remade_plans)
    c = s.planner.counters
    first = s.planner.plan(step(s))
    assert s.planner.plan(step(s)) is first
    # an arrival
    s.h.add_request(s.system + s.rng.integers(9000, 9999, size=5).tolist())
    s.live.append(len(s.h.reqs) - 1)
    second = plan_and_check(s, step(s), seed=1)
    assert second is not first and s.planner.plan(step(s)) is second
    # a finish
    s.live.pop(0)
    third = plan_and_check(s, step(s), seed=2)
    assert third is not second
    # the same requests in another order
    s.live = s.live[::-1]
    fourth = plan_and_check(s, step(s), seed=3)
    assert fourth is not third and s.planner.plan(step(s)) is fourth
    # other limits (eager vs graph buffers)
    limits = PlanLimits(10_000, 10_000, 10_000)
    fifth = s.planner.plan(step(s), limits)
    assert fifth is not fourth and s.planner.plan(step(s), limits) is fifth
    assert s.planner.plan(step(s)) is not fifth  # no limits again
    # lengths below the planned ones (never in decode): planned again
    batch = step(s)
    last = s.planner.plan(batch)
    seq = s.planner._planned.seq_lens.copy()  # the lengths it was made for
    seq[0] -= 1
    shorter = StepBatch(batch.rows, seq, batch.n_real, batch.published)
    assert s.planner.plan(shorter) is not last
    # a stale path (cached beyond the length) is planned without sharing, never from the kept plan
    batch = step(s)
    kept = s.planner.plan(batch)
    batch = step(s)
    seq = batch.seq_lens.copy()
    seq[1] = int(batch.published.cached[1]) - 3
    stale = StepBatch(batch.rows, seq, batch.n_real, batch.published)
    unshared = c.unshared
    assert plan_and_check(s, stale, seed=4, apart=frozenset({1})) is not kept and c.unshared == unshared + 1
    # capture plans (count=False) are neither reused nor kept
    dummy = s.planner.plan(StepBatch(np.zeros(4, np.int64), np.ones(4, np.int64), 4, None), count=False)
    assert dummy.num_open == 4 and s.planner.plan(StepBatch(np.zeros(4, np.int64), np.ones(4, np.int64), 4, None),
                                                  count=False) is not dummy


def test_padding_rows_reuse_and_change() -> None:
    """Padded batches (CUDA-graph replay views) reuse their plan while the padding stays; the padding requests'
    open items end at their one token of row ``PADDING_ROW``. Other padding: planned again."""
    s = setup(seed=11, reuse_plans=True)
    plan = plan_and_check(s, step(s, pad=3), seed=0)
    assert plan.num_open == plan.num_requests == len(s.live) + 3
    for i in range(3):
        batch = step(s, pad=3)
        assert s.planner.plan(batch) is plan
        assert_plan_exact(plan, s.h.req_to_token, batch.rows, batch.seq_lens, seed=1 + i, num_slots=s.h.num_slots)
    other = plan_and_check(s, step(s, pad=1), seed=5)
    assert other is not plan
    assert s.planner.counters.plans_reused == 3


def test_a_request_ending_in_a_shared_node_keeps_nothing() -> None:
    """A plan whose requests do not all end in open items (a request whose whole row is shared) is never handed out
    again: that request's end is closed."""
    s = setup(seed=12, reuse_plans=True)
    batch = step(s)
    plan = s.planner.plan(batch)
    assert s.planner._planned is not None and s.planner._planned.plan is plan
    # Two requests with the same row: both end in one shared node (no private leaf).
    rows = np.concatenate([batch.rows, batch.rows[:1]])
    seq = np.concatenate([batch.seq_lens, batch.seq_lens[:1]])
    twin = StepBatch(rows, seq, batch.n_real + 1, None)
    forest = PrefixForest.from_flat(*rows_flat(s.h.req_to_token, rows, seq))
    shared = plan_forest(PrefixForest(forest.tok, forest.start, forest.parent, forest.depth, forest.req_ptr,
                                      forest.req_flat, rows * s.planner.row_stride, seq),
                         HEADS, DeviceSpec(), slot_table=s.planner.slot_table, row_stride=s.planner.row_stride)
    assert shared.num_open == shared.num_requests - 2  # the twins end in a shared node: closed
    assert s.planner.plan(twin).num_open == twin.rows.shape[0]  # unpublished: planned without sharing, all open
    assert s.planner._planned is None  # nothing published: nothing kept


def test_forget_plans_the_next_step_from_scratch() -> None:
    """``DecodeStepPlanner.forget`` (``bench/backend_host_time.py --replan``): the next step of an unchanged batch
    builds its forest from the published paths and plans without the last plan, as a changed batch's step does, and
    that plan does the work a fresh plan does."""
    s = setup(seed=8, reuse_plans=True)
    c = s.planner.counters
    plan = plan_and_check(s, step(s), seed=0)
    batch = step(s)
    assert s.planner.plan(batch) is plan and (c.built, c.plans_reused) == (1, 1)
    s.planner.forget()
    batch = step(s)
    again = plan_and_check(s, batch, seed=1)
    assert again is not plan and (c.built, c.reused, c.plans_reused) == (2, 0, 1)
    fresh = plan_forest(s.forests[-1], HEADS, DeviceSpec(), slot_table=s.planner.slot_table,
                        row_stride=s.planner.row_stride)
    table = s.h.req_to_token.view(-1).numpy()
    at = (batch.seq_lens, batch.rows)
    assert plan_work(again, table, *at) == plan_work(fresh, table, *at) and again.stats == fresh.stats
