"""PATAttnBackend over many consecutive decode steps: the cached host tails, the incremental forest and the
deferred newest-token slots must give, every step, the forest and plan a fresh ``from_flat`` + ``plan_forest`` of
the ``req_to_token`` rows gives; with requests finishing (their rows reused by new ones), new requests admitted,
and radix-node splits between steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sglang_harness import RadixHarness, RecordingDelegate, decode_batch, fake_model_runner

from pat_sglang.backend import PATAttnBackend
from pat_sglang.config import HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import plan_forest
from patches.chain_table import ChainTable

HQ, HKV, D = 8, 2, 64
PLAN_TENSORS = ("items", "kv_slots", "item_req", "item_dst", "merge_indptr", "merge_partials")


def flat_rows(h: RadixHarness, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    lens = [h.seq_lens[i] for i in idx]
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    rows = [h.req_to_token[h.reqs[i].req_pool_idx, : h.seq_lens[i]].numpy() for i in idx]
    return indptr, np.concatenate(rows).astype(np.int64)


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("page_size", [1, 4])
def test_many_steps_equal_fresh_plan(defer: bool, page_size: int) -> None:
    rng = np.random.default_rng(7)
    h = RadixHarness(page_size=page_size, max_reqs=24, max_context=1024, num_slots=1 << 13)
    system = rng.integers(1000, 2000, size=64).tolist()
    live: list[int] = []
    for _ in range(6):
        h.add_request(system + rng.integers(2000, 9000, size=int(rng.integers(3, 20))).tolist())
        live.append(len(h.reqs) - 1)
    table = ChainTable()
    be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1), delegate=RecordingDelegate(), chain_table=table)
    be.defer = defer  # placeholders for the newest tokens, filled from out_cache_loc (the GPU path), on the CPU
    heads = HeadConfig(HQ, HKV, D, torch.float32)
    pool = h.req_to_token_pool
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
        fb = decode_batch(h, table, only=list(live))
        be.init_forward_metadata(fb)
        md = be.forward_metadata
        assert md is not None and md.forest_source == "radix", step
        indptr, flat = flat_rows(h, live)
        fresh = PrefixForest.from_flat(indptr, flat)
        want = plan_forest(fresh, heads, be.device_spec)
        if not defer:
            assert be._inc is not None
            assert be._inc[3].canonical_key() == fresh.canonical_key(), step
        got = md.plan
        assert got.num_partials == want.num_partials and got.num_requests == want.num_requests, step
        assert got.max_slot <= want.max_slot, step
        for name in PLAN_TENSORS:
            assert torch.equal(getattr(got, name), getattr(want, name)), (step, name)
    assert be.stats.incremental > 20  # most steps only grew the tails
    assert be.stats.tail_reads <= 8  # the first step and the admissions; never the plain growing steps
    assert be.stats.row_reads == 0


def test_static_buffers_double_buffered_and_patched() -> None:
    kernels = pytest.importorskip("pat_sglang.kernels")
    h = RadixHarness(max_reqs=8, max_context=256, num_slots=1 << 11)
    rng = np.random.default_rng(3)
    system = rng.integers(1000, 2000, size=40).tolist()
    for _ in range(4):
        h.add_request(system + rng.integers(2000, 9000, size=5).tolist())
    table = ChainTable()
    be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1, torch.bfloat16), delegate=RecordingDelegate(),
                        chain_table=table)
    be.init_cuda_graph_state(4, 4)
    assert isinstance(be.graph_buffers, kernels.StaticPlanBuffers)
    be.defer = True
    heads = HeadConfig(HQ, HKV, D, torch.bfloat16)
    stages = set()
    for _ in range(5):
        fb = decode_batch(h, table)
        be.init_forward_metadata_out_graph(fb)
        stages.add(id(be.graph_buffers.host))
        indptr, flat = flat_rows(h, list(range(4)))
        want = plan_forest(PrefixForest.from_flat(indptr, flat), heads, be.device_spec)
        n = int(want.kv_slots.shape[0])
        assert torch.equal(be.graph_buffers.dev["kv_slots"][:n], want.kv_slots)  # placeholders filled
        assert torch.equal(be.graph_buffers.dev["items"][: want.num_items], want.items)
    assert len(stages) == 2


def test_radix_splits_under_an_unchanged_batch() -> None:
    """The same batch step after step, while prompts outside it split the radix nodes its chains run through (an
    ancestor, and a request's own last node): the chain table must see the change although rows, ids and last nodes
    are the same objects, and every step's plan must equal a fresh one."""
    rng = np.random.default_rng(11)
    h = RadixHarness(max_reqs=16, max_context=512, num_slots=1 << 12)
    system = rng.integers(1000, 2000, size=48).tolist()
    prompts = [system + rng.integers(2000, 9000, size=12).tolist() for _ in range(5)]
    for p in prompts:
        h.add_request(p)
    live = list(range(5))
    table = ChainTable()
    be = PATAttnBackend(fake_model_runner(h, HQ, HKV, D, 1), delegate=RecordingDelegate(), chain_table=table)
    heads = HeadConfig(HQ, HKV, D, torch.float32)
    splits = {4: system[:20], 9: prompts[2][:53], 13: system[:33]}  # ancestor, last node, ancestor again
    published = []
    for step in range(18):
        if step in splits:
            h.add_request(splits[step] + [9999, 9998])  # cached into the tree, never decoded in this batch
        fb = decode_batch(h, table, only=live)
        be.init_forward_metadata(fb)
        md = be.forward_metadata
        assert md is not None and md.forest_source == "radix", step
        indptr, flat = flat_rows(h, live)
        fresh = PrefixForest.from_flat(indptr, flat)
        assert be._inc[3].canonical_key() == fresh.canonical_key(), step
        want = plan_forest(fresh, heads, be.device_spec)
        for name in PLAN_TENSORS:
            assert torch.equal(getattr(md.plan, name), getattr(want, name)), (step, name)
        published.append(table.published)
    for step in splits:
        assert published[step] > published[step - 1], step  # the split chains were copied again
    assert table.reused >= 18 - 1 - 2 * len(splits)  # the other steps reused the entries with identity checks only
    assert be.stats.incremental >= 18 - 1 - 2 * len(splits)
