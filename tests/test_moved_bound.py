"""The dispatch gate's pre-forest bound (``planner.moved_bound``): the compiled version equals the Python one, and on
random radix trees served through SGLang's RadixCache and the publisher it never exceeds what the plan moves (so the
gate declines before planning only batches whose plan it would decline), and meets it where every shared node is its
own pack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sglang_harness import RadixHarness

from pat_sglang import host_core
from pat_sglang.config import DeviceSpec, HeadConfig
from pat_sglang.decode_step import DecodeStepPlanner, StepBatch
from pat_sglang.planner import (
    BoundShape,
    bound_shape,
    count_bound,
    first_node_partials,
    moved_bound,
    node_blocks,
)
from pat_sglang.sglang_patches.chain_table import ChainTable
from pat_sglang.sglang_patches.publish import publish_decode_batch


def _random_counts(rng: np.random.Generator) -> tuple[dict, dict]:
    refs = {(int(rng.integers(0, 1 << 40)), int(rng.integers(0, 3000))): int(rng.integers(1, 300))
            for _ in range(int(rng.integers(0, 60)))}
    firsts = {k: int(rng.integers(1, v + 1)) for k, v in list(refs.items())[: int(rng.integers(0, 8))]}
    return refs, firsts


def test_compiled_bound_equals_python() -> None:
    """``kernels/host_glue.c`` ``count_bound`` and ``moved_bound`` against their Python versions on random counts and
    lengths (with and without every request past its path, row blocks of 1-64 requests); NotImplemented for what they
    do not take."""
    glue = host_core.loaded_glue()
    assert glue is not None, "the extension module did not load"
    rng = np.random.default_rng(3)
    for trial in range(300):
        refs, firsts = _random_counts(rng)
        rpb = int(rng.choice([1, 2, 7, 8, 16, 64]))
        shape = BoundShape(rpb, int(rng.integers(0, 9000)), int(rng.integers(0, 9000)))
        want = (sum(node_blocks(r, t, shape) for (_, t), r in refs.items()),
                sum(first_node_partials(r, t, shape) for (_, t), r in firsts.items()))
        assert glue.count_bound(refs, firsts, *shape) == want == count_bound(refs, firsts, shape), trial
        # first_node_partials: the least over every k, not only the ends it tries
        for (_, t), r in firsts.items():
            rpb, tb, pb = shape
            assert first_node_partials(r, t, shape) == min(t * (k - -(-k // rpb)) * tb + 2 * pb * (r - k)
                                                           for k in range(r + 1)), trial
        n = int(rng.integers(0, 40))
        cached = rng.integers(0, 2000, size=n).astype(np.int64)
        seq = np.concatenate([cached + rng.integers(0 if trial % 3 == 0 else 1, 50, size=n),
                              rng.integers(1, 9, size=int(rng.integers(0, 4)))]).astype(np.int64)
        total = int(seq.sum())
        every_private = bool((seq[:n] > cached).all())
        expect = (total - int(cached.sum()) + want[0]) * shape.token_bytes + (want[1] if every_private else 0)
        assert glue.moved_bound(*want, cached, seq, total, shape.token_bytes) == expect, trial
    assert glue.count_bound([((1, 5), 2)], {}, 16, 4, 8) is NotImplemented
    for bad in ({(1, 5, 0): 2}, {1: 2}, {(1, 5): "2"}, {(1, 5): 0}):
        assert glue.count_bound(bad, {}, 16, 4, 8) is NotImplemented, bad
        assert glue.count_bound({}, bad, 16, 4, 8) is NotImplemented, bad
    assert glue.count_bound({}, {}, 0, 4, 8) is NotImplemented
    cached, seq = np.ones(3, dtype=np.int64), np.full(3, 2, dtype=np.int64)
    assert glue.moved_bound(1, 2, cached.astype(np.int32), seq, 6, 4) is NotImplemented
    assert glue.moved_bound(1, 2, cached, seq[:2], 6, 4) is NotImplemented


HEADS = [
    HeadConfig(8, 2, 64),  # GQA 4
    HeadConfig(32, 8, 128),  # GQA 4 (Llama-3-8B)
    HeadConfig(32, 4, 128),  # GQA 8
    HeadConfig(64, 4, 128),  # GQA 16: 4 requests per 64-row block
    HeadConfig(8, 8, 128),  # MHA
    HeadConfig(16, 2, 256),  # GQA 8 at head dim 256 (long packs on smaller row blocks)
    HeadConfig(32, 8, 128, kv_dtype=torch.float8_e4m3fn),
]


def _tree_prompts(rng: np.random.Generator, n: int) -> list[list[int]]:
    """``n`` prompts over a random radix tree: an optional 1-token common start (a BOS the requests share and little
    else), groups under it with prefixes of 1-700 tokens, sub-groups, private suffixes of 1-150 tokens."""
    bos = [1] if rng.random() < 0.5 else []
    groups = [rng.integers(10, 5000, size=int(rng.choice([1, 3, 17, 64, 300, 700]))).tolist()
              for _ in range(int(rng.integers(1, 5)))]
    subs = [[rng.integers(10, 5000, size=int(rng.choice([1, 5, 40, 200]))).tolist()
             for _ in range(int(rng.integers(1, 4)))] for _ in groups]
    prompts = []
    for _ in range(n):
        g = int(rng.integers(0, len(groups)))
        sub = subs[g][int(rng.integers(0, len(subs[g])))] if rng.random() < 0.7 else []
        own = rng.integers(10, 5000, size=int(rng.choice([1, 2, 30, 150]))).tolist()
        prompts.append(bos + groups[g] + sub + own)
    return prompts


@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"{h.num_q_heads}q{h.num_kv_heads}kv_d{h.head_dim}"
                         f"{'_fp8' if h.kv_dtype == torch.float8_e4m3fn else ''}")
@pytest.mark.parametrize("page_size", [1, 16])
def test_bound_never_exceeds_the_plan(heads: HeadConfig, page_size: int) -> None:
    """On random trees of 2-90 requests (wide nodes past a row block, 1-token shared starts, chains of shared nodes),
    published by the real patch: the bound is at most the plan's KV + partial bytes, every time, and near them in some
    trees; a batch it declines is one the plan's own rule declines at the same fraction."""
    rng = np.random.default_rng(page_size * 100 + heads.num_q_heads + heads.head_dim)
    best = 0.0
    for trial in range(12):
        n = int(rng.choice([2, 5, 20, 40, 90]))
        h = RadixHarness(page_size=page_size, max_reqs=96, max_context=2048, num_slots=1 << 17)
        for prompt in _tree_prompts(rng, n):
            h.add_request(prompt)
        live = list(range(n))
        h.decode(steps=int(rng.integers(1, 4)), only=live)
        table = ChainTable(enabled=True)
        shape = bound_shape(heads, DeviceSpec())
        table.count_bound(shape)
        publish_decode_batch(h.schedule_batch(live), table)
        pb = table.batch
        terms = pb.bound_terms(shape)
        assert terms == count_bound(pb.node_refs(), pb.first_refs(), shape)
        seq = np.array([h.seq_lens[i] for i in live], np.int64)
        batch = StepBatch(np.asarray(pb.rows, np.int64), seq, n, pb)
        planner = DecodeStepPlanner(heads, DeviceSpec(), h.req_to_token, reuse_plans=False)
        plan = planner.plan(batch)
        moved = plan.stats.kv_bytes_planned + plan.stats.partial_bytes
        bound = moved_bound(*terms, pb.cached, seq, int(seq.sum()), shape.token_bytes)
        assert bound <= moved, (trial, bound, moved)
        assert bound >= plan.stats.kv_bytes_unique  # (at least the unique KV: every token read once)
        best = max(best, bound / moved)
        # the gate just below the bound declines the batch before any forest; just above the plan, serves it
        per_request = plan.stats.kv_bytes_per_request
        for threshold, served in ((bound * (1 - 1e-9), False), (moved * (1 + 1e-9), True)):
            fraction = 1.0 - threshold / per_request
            if 0.0 < fraction < 1.0:
                gated = DecodeStepPlanner(heads, DeviceSpec(), h.req_to_token)
                assert (gated.plan(batch, min_saved=fraction) is not None) == served, (trial, served)
                if not served:
                    assert gated.counters.declined_unplanned == 1 and gated.counters.built == 0
    assert best >= 0.95  # near the plan in some tree (every tree: within 4% at d64/d128, 20% at d256's long packs)
