"""PATAttnBackend over many consecutive decode steps: the reused forest (last step's, with every private leaf grown
by ``with_lengths``) and the forests rebuilt from the published radix paths must, every step, describe the sharing
``from_flat`` finds in the ``req_to_token`` rows, and the plan over ``req_to_token`` must do a fresh flat plan's work
and be exact; with requests finishing (their rows reused by new ones), new requests admitted, radix-node splits
between steps, eagerly and through the CUDA-graph buffers (padded batches)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sglang_harness import (
    RadixHarness,
    RecordingDelegate,
    assert_plan_exact,
    assert_reads_within_rows,
    decode_batch,
    fake_model_runner,
    plan_of_buffers,
    plan_work,
    record_forests,
    rows_flat,
    slot_free_key,
)

from pat_sglang import decode_step
from pat_sglang.backend import PATAttnBackend
from pat_sglang.config import HeadConfig
from pat_sglang.decode_step import PADDING_ROW
from pat_sglang.forest import PrefixForest
from pat_sglang.kernels import StaticPlanBuffers
from pat_sglang.planner import plan_forest
from pat_sglang.sglang_patches.chain_table import ChainTable

HQ, HKV, D = 8, 2, 64


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


def padded_view(fb, padded: int) -> SimpleNamespace:
    """The ForwardBatch as DecodeCudaGraphRunner replays it: padding rows ``PADDING_ROW`` with seq_len 1, no rids."""
    pad = padded - fb.batch_size
    return SimpleNamespace(
        forward_mode=fb.forward_mode,
        batch_size=padded,
        req_pool_indices=torch.cat([fb.req_pool_indices, torch.full((pad,), PADDING_ROW, dtype=torch.int64)]),
        seq_lens=torch.cat([fb.seq_lens, torch.ones(pad, dtype=torch.int64)]),
        seq_lens_cpu=torch.cat([fb.seq_lens_cpu, torch.ones(pad, dtype=torch.int64)]),
        out_cache_loc=torch.cat([fb.out_cache_loc, torch.zeros(pad, dtype=torch.int64)]),
        num_padding=pad,
    )


def check_step(be: PATAttnBackend, h: RadixHarness, forest: PrefixForest, rows: np.ndarray, seq: np.ndarray,
               heads: HeadConfig, seed: int, graph: bool) -> None:
    """One step's forest and plan against the flat rows: same sharing, a fresh flat plan's work, exact."""
    r2t = h.req_to_token
    indptr, flat = rows_flat(r2t, rows, seq)
    apart = flat.copy()
    if graph:  # padding requests (all reading row PADDING_ROW) share no KV with anyone: each is a private leaf
        pad = rows == PADDING_ROW
        apart[indptr[:-1][pad]] = h.num_slots + np.arange(int(pad.sum()))
    fresh = PrefixForest.from_flat(indptr, apart)
    assert slot_free_key(forest) == slot_free_key(fresh)
    assert forest.request_lengths.tolist() == seq.tolist()
    assert (forest.row_base == rows * r2t.shape[1]).all()
    md = be.forward_metadata
    assert md is not None and md.static == graph
    plan = plan_of_buffers(be.graph_buffers) if graph else md.plan
    assert plan.num_requests == rows.shape[0]
    assert plan.slot_table.data_ptr() == r2t.data_ptr() and plan.fallback == ""
    limits = be.graph_buffers.limits_for(rows.shape[0]) if graph else None  # the padded batch's forward grid
    if graph:
        assert plan.num_items <= limits.max_items and plan.num_partials <= limits.max_partials
        assert plan.item_req.shape[0] <= limits.max_entries
    want = plan_forest(fresh, heads, be.device_spec, limits=limits)
    assert want.fallback == ""
    assert plan_work(plan, r2t.view(-1).numpy(), seq, rows) == plan_work(want, flat)  # padding: its real slot
    assert_reads_within_rows(plan, rows, seq, r2t.shape[1])
    assert_plan_exact(plan, r2t, rows, seq, seed=seed, num_slots=h.num_slots)


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("page_size", [1, 4])
@pytest.mark.parametrize(("reuse", "remake"), [(False, False), (True, False), (True, True)])
def test_many_steps_equal_fresh_plan(graph: bool, page_size: int, reuse: bool, remake: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``reuse``: unchanged steps take last step's plan object (open items); those are checked for exactness at the
    new lengths (a fresh plan may split differently), every other step against a fresh plan. ``remake``: changed
    batches whose requests only left and joined take last step's plan re-made for them (``remade_plan``: a finished
    request's row goes to the next new request in the same step), checked for exactness and the graph limits; the
    quality bounds are lifted (a joiner's 64 shared tokens are more than 1/16 of this small batch's KV)."""
    monkeypatch.setattr(decode_step, "REMAKE_MAX_EXTRA_FRACTION", 0.9)
    monkeypatch.setattr(decode_step, "SPLIT_KEEP_FRACTION", 1.0)
    monkeypatch.delenv(decode_step.REMAKE_PLANS_ENV, raising=False)  # the default, whatever the shell exports
    rng = np.random.default_rng(7)
    h = RadixHarness(page_size=page_size, max_reqs=24, max_context=1024, num_slots=1 << 13)
    system = rng.integers(1000, 2000, size=64).tolist()
    live: list[int] = []
    for _ in range(6):
        h.add_request(system + rng.integers(2000, 9000, size=int(rng.integers(3, 20))).tolist())
        live.append(len(h.reqs) - 1)
    table = ChainTable()
    be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1, torch.bfloat16), delegate=RecordingDelegate(),
                        chain_table=table, min_saved_fraction=0.0)
    max_bs = 8
    if graph:
        be.init_cuda_graph_state(max_bs, max_bs)
    assert not be.planner.remake_plans  # opt-in (PAT_SGLANG_REMAKE_PLANS=1)
    be.planner.reuse_plans = reuse
    be.planner.remake_plans = remake
    forests = record_forests(be.planner)
    heads = HeadConfig(HQ, HKV, D, torch.bfloat16)
    pool = h.req_to_token_pool
    same_plan_steps = []
    changed = 0
    reused_steps = []
    previous, regrown = None, 0
    remade_steps = []
    for step in range(40):
        if step in (8, 21, 30):  # a request finishes; its row goes to the next new request
            done = live.pop(1)
            row = h.reqs[done].req_pool_idx
            pool.free(h.reqs[done])
            pool.free_slots.remove(row)
            pool.free_slots.insert(0, row)
        if step in (8, 14, 21, 27):  # admit one: sometimes splitting the system prompt's radix node
            cut = int(rng.integers(10, 60)) if step in (14, 27) else 64
            h.add_request(system[:cut] + rng.integers(9000, 9999, size=int(rng.integers(2, 30))).tolist())
            live.append(len(h.reqs) - 1)
        if step == 33:
            live = live[::-1]  # same requests, another batch order
        changed += step in (0, 8, 14, 21, 27, 30, 33)
        fb = decode_batch(h, table, only=list(live))
        reused, remade = be.planner.counters.reused, be.planner.counters.remade
        if graph:
            view = padded_view(fb, max_bs)
            be.init_forward_metadata_out_graph(view)
            rows, seq = view.req_pool_indices.numpy(), view.seq_lens_cpu.numpy()
        else:
            be.init_forward_metadata(fb)
            rows, seq = fb.req_pool_indices.numpy(), fb.seq_lens_cpu.numpy()
        if be.planner.counters.reused > reused:
            reused_steps.append(step)
        plan = be.forward_metadata.plan
        if previous is not None and plan is previous:  # last step's plan, run at this step's lengths
            same_plan_steps.append(step)
            if graph:
                assert be.graph_buffers.plan is plan
            r2t = h.req_to_token
            assert_reads_within_rows(plan_of_buffers(be.graph_buffers) if graph else plan, rows, seq, r2t.shape[1])
            assert_plan_exact(plan, r2t, rows, seq, seed=step, num_slots=h.num_slots)
        elif be.planner.counters.remade > remade:  # no forest: the plan must read the rows exactly, within the limits
            remade_steps.append(step)
            r2t = h.req_to_token
            if graph:
                limits = be.graph_buffers.limits_for(rows.shape[0])
                assert plan.num_items <= limits.max_items and plan.num_partials <= limits.max_partials
                assert plan.item_req.shape[0] <= limits.max_entries
            assert_reads_within_rows(plan_of_buffers(be.graph_buffers) if graph else plan, rows, seq, r2t.shape[1])
            assert_plan_exact(plan, r2t, rows, seq, seed=step, num_slots=h.num_slots)
        else:
            assert len(forests) == len(set(range(step + 1)) - set(same_plan_steps) - set(remade_steps))
            check_step(be, h, forests[-1], rows, seq, heads, seed=step, graph=graph)
            regrown += previous is not None and plan.item_req is previous.item_req  # re-made from last step's plan
        previous = plan
    counters = be.planner.counters
    assert counters.built + counters.reused + counters.plans_reused + counters.remade == 40
    assert counters.plans_reused == len(same_plan_steps)
    assert not {0, 8, 14, 21, 27, 30, 33} & set(reused_steps)  # a changed batch is never planned from a stale forest
    assert not {0, 8, 14, 21, 27, 30, 33} & set(same_plan_steps)  # nor served last step's plan
    assert counters.unshared == 0 and counters.coarse == 0
    if reuse:  # every unchanged step (the batch grows 1 token a step, far below the re-plan bound)
        assert counters.plans_reused == 40 - changed and counters.built + counters.remade == changed
        # re-made: the finishes (8, 21: with an arrival in the row, 30) and the reorder (33); 14 and 27 split the
        # system prompt's radix node (the survivors' entries are read again): planned in full
        assert set(remade_steps) == ({8, 21, 30, 33} if remake else set())
    else:
        assert counters.built <= changed and counters.reused > 20 and regrown > 20  # most steps grew the leaves
    assert be.stats.row_reads == 0 and be.stats.delegated == 0 and be.stats.steps == 40


def test_static_buffers_double_buffered_and_loaded() -> None:
    h = RadixHarness(max_reqs=8, max_context=256, num_slots=1 << 11)
    rng = np.random.default_rng(3)
    system = rng.integers(1000, 2000, size=40).tolist()
    for _ in range(4):
        h.add_request(system + rng.integers(2000, 9000, size=5).tolist())
    table = ChainTable()
    be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1, torch.bfloat16), delegate=RecordingDelegate(),
                        chain_table=table, min_saved_fraction=0.0)
    be.init_cuda_graph_state(4, 4)
    be.planner.reuse_plans = False  # a new plan (re-made: new items) every step
    buffers = be.graph_buffers
    assert isinstance(buffers, StaticPlanBuffers)
    heads = HeadConfig(HQ, HKV, D, torch.bfloat16)
    r2t = h.req_to_token
    stages = []
    for step in range(5):
        fb = decode_batch(h, table)
        be.init_forward_metadata_out_graph(fb)
        stages.append(id(buffers.host))
        plan = be.forward_metadata.plan
        rows, seq = fb.req_pool_indices.numpy(), fb.seq_lens_cpu.numpy()
        indptr, flat = rows_flat(r2t, rows, seq)
        want = plan_forest(PrefixForest.from_flat(indptr, flat), heads, be.device_spec)
        n, e = plan.num_items, int(plan.item_req.shape[0])
        assert int(buffers.dev["num_items"][0]) == n
        assert torch.equal(buffers.dev["items"][:n], plan.items)
        assert torch.equal(buffers.dev["item_req"][:e], plan.item_req)
        assert torch.equal(buffers.dev["item_dst"][:e], plan.item_dst)
        assert torch.equal(buffers.dev["merge_indptr"][:5], plan.merge_indptr)
        assert torch.equal(buffers.dev["merge_partials"][: plan.merge_partials.shape[0]], plan.merge_partials)
        assert torch.equal(buffers.host["items"][:n], plan.items)  # the staging set just written
        loaded = plan_of_buffers(buffers)
        assert plan_work(loaded, r2t.view(-1).numpy(), seq, rows) == plan_work(want, flat)
        assert_plan_exact(loaded, r2t, rows, seq, seed=step, num_slots=h.num_slots)
    assert len(set(stages)) == 2 and all(a != b for a, b in zip(stages, stages[1:], strict=False))  # alternating
    assert be.planner.counters.reused == 4
    # The graphs captured req_to_token's address: a plan over another table is refused, not served.
    other = plan_forest(PrefixForest.from_flat(indptr, flat), heads, be.device_spec)
    with pytest.raises(ValueError, match="another slot table"):
        buffers.load(other)
    assert buffers.plan is plan


def test_radix_splits_under_an_unchanged_batch() -> None:
    """The same batch step after step, while prompts outside it split the radix nodes its chains run through (an
    ancestor, and a request's own last node): the chain table must see the change although rows, ids and last nodes
    are the same objects, the planner must rebuild the forest then, and every step's forest and plan must equal a
    fresh one of the flat rows."""
    rng = np.random.default_rng(11)
    h = RadixHarness(max_reqs=16, max_context=512, num_slots=1 << 12)
    system = rng.integers(1000, 2000, size=48).tolist()
    prompts = [system + rng.integers(2000, 9000, size=12).tolist() for _ in range(5)]
    for p in prompts:
        h.add_request(p)
    live = list(range(5))
    table = ChainTable()
    be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1), delegate=RecordingDelegate(), chain_table=table,
                        min_saved_fraction=0.0)
    be.planner.reuse_plans = False  # the forest of every step
    forests = record_forests(be.planner)
    heads = HeadConfig(HQ, HKV, D, torch.float32)
    splits = {4: system[:20], 9: prompts[2][:53], 13: system[:33]}  # ancestor, last node, ancestor again
    published, built = [], []
    for step in range(18):
        if step in splits:
            h.add_request(splits[step] + [9999, 9998])  # cached into the tree, never decoded in this batch
        fb = decode_batch(h, table, only=live)
        be.init_forward_metadata(fb)
        rows, seq = fb.req_pool_indices.numpy(), fb.seq_lens_cpu.numpy()
        check_step(be, h, forests[-1], rows, seq, heads, seed=100 + step, graph=False)
        published.append(table.published)
        built.append(be.planner.counters.built)
    for step in splits:
        assert published[step] > published[step - 1], step  # the split chains were copied again
        assert built[step] == built[step - 1] + 1, step  # and the forest rebuilt from them
    assert table.reused >= 18 - 1 - 2 * len(splits)  # the other steps reused the entries with identity checks only
    assert be.planner.counters.reused >= 18 - 1 - 2 * len(splits)
    assert be.planner.counters.built == 1 + len(splits)


def test_static_buffers_are_aligned_disjoint_views_of_one_allocation() -> None:
    """A load is one copy of one span: every buffer is a view of one flat tensor (device, and each staging set), at an
    aligned offset, the buffers disjoint, the items last (the one buffer every new plan changes)."""
    from pat_sglang.kernels import _ALIGN, _LOAD_ORDER

    heads = HeadConfig(HQ, HKV, D, torch.bfloat16)
    buffers = StaticPlanBuffers(heads, max_batch=6, max_items=40, max_partials=30, device="cpu")
    assert _LOAD_ORDER[-1] == "items" and set(_LOAD_ORDER) == set(buffers.dev)
    for views, flat in [(buffers.dev, buffers._dev_flat), *zip(buffers._stages, buffers._stage_flat, strict=True)]:
        ends = 0
        for name in _LOAD_ORDER:
            view = views[name]
            start = (view.data_ptr() - flat.data_ptr()) // flat.element_size()
            assert start == buffers._offsets[name] and start % _ALIGN == 0 and start >= ends
            assert view.is_contiguous() and view.dtype == torch.int32
            ends = start + view.numel()
        assert ends <= flat.numel()


def test_static_buffers_hold_each_plan_of_fresh_remade_and_reloaded_plans() -> None:
    """Loads of plans of other batches (every buffer changes), re-made plans (all but the items shared: a load copies
    the items' span only) and a plan loaded again after others, in turn: each time the buffers (``plan_of_buffers``,
    what the graph's kernels read) compute that plan's batch's attention."""
    from pat_sglang.config import DeviceSpec
    from pat_sglang.reference import naive_decode, run_reference
    from pat_sglang.workloads import make_qkv, same_stride_row_batches

    rng = np.random.default_rng(11)
    n, hq, hkv, d = 12, 4, 2, 64
    # batches of n requests over other trees (other shapes, partials and merges), one row stride (the graphs captured
    # one table)
    batches = same_stride_row_batches(rng, n, 3, room=4, max_depth=4, max_len=96, max_request_tokens=600,
                                      p_inner_request=0.2, p_duplicate=0.1)
    stride = batches[0].row_stride
    heads = HeadConfig(hq, hkv, d, torch.bfloat16)
    q, k, v = make_qkv(n, hq, hkv, d, max(b.num_slots for b in batches) + 4 * n, torch.bfloat16, "cpu", seed=2)
    spec = DeviceSpec()
    table = torch.zeros((n + 1, stride), dtype=torch.int32)
    flat_table = table.view(-1)
    buffers = StaticPlanBuffers(heads, n, 2 * n + 2 * spec.sm_count, 4 * n + 2 * spec.sm_count, "cpu")
    plans = []
    for batch in batches:
        plan = plan_forest(batch.forest, heads, spec, slot_table=flat_table, row_stride=stride, limits=buffers.limits)
        grown = batch.grow(np.ones(n, dtype=np.int64))
        remade = plan_forest(batch.forest.with_lengths(grown.seq_lens), heads, spec, slot_table=flat_table,
                             row_stride=stride, limits=buffers.limits, previous=plan)
        assert remade.item_req is plan.item_req and remade.items is not plan.items  # re-made: new items only
        plans += [(batch, plan), (grown, remade)]
    plans.append(plans[0])
    for i, (batch, plan) in enumerate(plans):
        table.copy_(torch.from_numpy(batch.table))
        buffers.load(plan)
        seq, rows = torch.from_numpy(batch.seq_lens.copy()), torch.from_numpy(batch.rows.copy())
        got = run_reference(plan_of_buffers(buffers), q, k, v, 0.125, torch.float64, 1.0, 1.0, seq, rows)
        indptr, flat = batch.kv_flat()
        want = naive_decode(q, k, v, indptr, flat, 0.125)
        assert ((got.double() - want.double()).norm() / want.double().norm()).item() < 1e-6, i


def test_the_backend_remakes_plans_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    h = RadixHarness(page_size=1, max_reqs=8, max_context=256, num_slots=1 << 10)
    for value, want in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv(decode_step.REMAKE_PLANS_ENV, value)
        be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1, torch.bfloat16), delegate=RecordingDelegate(),
                            chain_table=ChainTable(), min_saved_fraction=0.0)
        assert be.planner.remake_plans is want
