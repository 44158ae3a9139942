"""The radix chains of a real SGLang RadixCache describe the same sharing as the req_to_token rows."""

from __future__ import annotations

import numpy as np
import pytest
from sglang_harness import RadixHarness, shared_prompts

from pat_sglang.forest import PrefixForest
from pat_sglang.radix import chain_tail, forest_from_radix, request_chain
from pat_sglang.sglang_patches.chain_table import ChainTable
from pat_sglang.sglang_patches.publish import publish_decode_batch


def flat_key(h: RadixHarness) -> frozenset:
    return PrefixForest.from_flat(*h.rows()).canonical_key()


def radix_key(h: RadixHarness) -> frozenset:
    return forest_from_radix(h.reqs, h.cache.root_node, h.req_to_token, h.seq_lens).canonical_key()


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_radix_forest_matches_flat_rows(page_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = RadixHarness(page_size=page_size)
    for prompt in shared_prompts(rng):
        h.add_request(prompt)
    assert radix_key(h) == flat_key(h)
    h.decode(steps=int(rng.integers(1, 20)))
    h.decode(steps=5, only=[0, 3])  # uneven tails
    assert radix_key(h) == flat_key(h)
    forest = forest_from_radix(h.reqs, h.cache.root_node, h.req_to_token, h.seq_lens)
    assert forest.shared_tokens() > 0  # the system prompt is shared
    if page_size == 1:
        # every request through the system prompt shares it (the 37 tokens are one node or a chain of them)
        assert any(len(n.requests) >= len(h.reqs) - 1 for n in forest.nodes)


@pytest.mark.parametrize("page_size", [1, 16])
def test_chain_is_prefix_of_row(page_size: int) -> None:
    h = RadixHarness(page_size=page_size)
    for prompt in shared_prompts(np.random.default_rng(7)):
        h.add_request(prompt)
    h.decode(steps=3)
    for req, n in zip(h.reqs, h.seq_lens, strict=True):
        chain = request_chain(req.last_node, h.cache.root_node)
        cached = np.concatenate([s for _, s in chain]) if chain else np.zeros(0, np.int64)
        row = h.req_to_token[req.req_pool_idx, :n].numpy()
        assert np.array_equal(cached, row[: cached.shape[0]])
        assert cached.shape[0] % page_size == 0
        assert np.array_equal(chain_tail(chain, h.req_to_token[req.req_pool_idx], n), row[cached.shape[0] :])


@pytest.mark.parametrize("page_size", [1, 16])
def test_published_chains(page_size: int) -> None:
    """The patch's publisher records each request's radix path as (node id, tokens) root first, reuses unchanged
    entries, follows node splits; the path's token ranges of the request's req_to_token row hold the radix nodes'
    slots, and the batch's paths (``PublishedBatch.paths``) give the flat rows' forest."""
    rng = np.random.default_rng(3)
    h = RadixHarness(page_size=page_size)
    prompts = shared_prompts(rng)
    for prompt in prompts:
        h.add_request(prompt)
    h.decode(steps=2)
    table = ChainTable(enabled=True)
    publish_decode_batch(h.schedule_batch(), table)
    gens = h.req_to_token_pool.req_generation

    def check() -> None:
        for req, n in zip(h.reqs, h.seq_lens, strict=True):
            entry = table.entries.get(req.req_pool_idx)
            assert entry is not None and (entry.rid, entry.generation) == (req.rid, int(gens[req.req_pool_idx]))
            want = request_chain(req.last_node, h.cache.root_node)
            assert entry.keys.tolist() == [i for i, _ in want]
            assert entry.lengths.tolist() == [s.shape[0] for _, s in want]
            assert entry.cached_len == sum(s.shape[0] for _, s in want) <= n
            row = h.req_to_token[req.req_pool_idx].numpy()
            at = 0
            for _, slots in want:  # the node's slots are where the path says, in the request's own row
                assert np.array_equal(row[at : at + slots.shape[0]], slots)
                at += slots.shape[0]

    def check_paths() -> None:
        pb = table.batch
        assert pb is not None and pb.rows.tolist() == [r.req_pool_idx for r in h.reqs] and pb.absent == 0
        assert pb.cached.tolist() == [e.cached_len for e in pb.entries]
        req, key, length = pb.paths
        for i, e in enumerate(pb.entries):  # request i's entries, root first
            assert key[req == i].tolist() == e.keys.tolist() and length[req == i].tolist() == e.lengths.tolist()
        stride = h.req_to_token.shape[1]
        forest = PrefixForest.from_paths(
            req, key, length, np.array(h.seq_lens), pb.rows * stride, h.req_to_token.view(-1).numpy()
        )
        assert forest.canonical_key() == flat_key(h)  # same ranges, requests and (read through the rows) slots

    check()
    check_paths()
    copies = table.published
    assert copies == len(h.reqs)
    h.decode(steps=1)
    publish_decode_batch(h.schedule_batch(), table)
    assert table.published == copies  # chains unchanged: nothing copied again
    check_paths()

    # A new prompt that diverges inside the system prompt splits the node the others hang below.
    h.add_request(prompts[0][:21] + [1] * 40)
    publish_decode_batch(h.schedule_batch(), table)
    check()
    assert table.published > copies
    check_paths()


def test_a_reused_row_gets_a_new_entry() -> None:
    """A row handed to another request (new id, new generation) is re-read when the next batch is published; the
    entry always names the request and generation it was read for."""
    h = RadixHarness()
    for prompt in shared_prompts(np.random.default_rng(5))[:3]:
        h.add_request(prompt)
    table = ChainTable(enabled=True)
    publish_decode_batch(h.schedule_batch(), table)
    req = h.reqs[0]
    row = req.req_pool_idx
    pool = h.req_to_token_pool
    before = table.entries[row]
    assert (before.rid, before.generation) == (req.rid, int(pool.req_generation[row]))
    pool.free(req)
    pool.free_slots.remove(row)
    pool.free_slots.insert(0, row)
    newcomer = h.add_request(shared_prompts(np.random.default_rng(6))[0][:30])
    assert newcomer.req_pool_idx == row
    publish_decode_batch(h.schedule_batch([1, 2, len(h.reqs) - 1]), table)
    after = table.entries[row]
    assert after.rid == newcomer.rid and after.generation == int(pool.req_generation[row]) != before.generation
    assert table.batch.rows.tolist() == [h.reqs[1].req_pool_idx, h.reqs[2].req_pool_idx, row]
    disabled = ChainTable(enabled=False)
    publish_decode_batch(h.schedule_batch(), disabled)
    assert not disabled.entries
