"""The radix split counter (``count-radix-splits`` patch on ``RadixCache._split_node``): while it stands still the
publisher re-reads only requests whose row, id, generation or last node changed; a split makes it re-read every
chain. Either way every step's forest and plan are those of the req_to_token rows (checks of test_decode_step)."""

from __future__ import annotations

import pytest
from test_decode_step import plan_and_check, setup, step

from pat_sglang.sglang_patches.core import COUNT_RADIX_SPLITS
from pat_sglang.sglang_patches.publish import radix_splits


@pytest.fixture()
def split_counter():
    applied = COUNT_RADIX_SPLITS.apply()
    yield
    if applied:
        COUNT_RADIX_SPLITS.remove()


def test_published_paths_follow_splits_arrivals_and_finishes(split_counter) -> None:
    s = setup(seed=5)
    cache = s.h.cache
    assert radix_splits(cache) >= 1  # setup's requests share the system prompt: inserting them split nodes
    plan_and_check(s, step(s), seed=0)
    published = s.table.published
    plan_and_check(s, step(s), seed=1)
    assert s.table.published == published  # unchanged batch: nothing re-read
    # An arrival with no split (a new system-prompt continuation): only the newcomer is read.
    s.h.add_request(s.system + s.rng.integers(9000, 9999, size=7).tolist())
    s.live.append(len(s.h.reqs) - 1)
    splits = radix_splits(cache)
    plan_and_check(s, step(s), seed=2)
    assert radix_splits(cache) == splits  # it hangs below the whole system-prompt node
    assert s.table.published == published + 1
    # An arrival that splits the system prompt's node: every chain through it changes and is re-read.
    s.h.add_request(s.system[:21] + s.rng.integers(9000, 9999, size=9).tolist())
    s.live.append(len(s.h.reqs) - 1)
    before = radix_splits(cache)
    assert before is not None and before > splits  # the insert split a node
    published = s.table.published
    plan_and_check(s, step(s), seed=3)
    assert s.table.published - published == len(s.live)  # every request's path moved (all hang below the split)
    # A finish, then steps with nothing new: the counter stands still and nothing is re-read.
    s.live.pop(1)
    plan_and_check(s, step(s), seed=4)
    published = s.table.published
    for i in range(3):
        plan_and_check(s, step(s), seed=5 + i)
    assert s.table.published == published and radix_splits(cache) == before
    assert s.planner.counters.unshared == 0


def test_without_the_patch_nothing_is_assumed() -> None:
    """A cache whose ``_split_node`` is not the counting wrapper: no count, every changed batch re-reads its chains."""
    applied = COUNT_RADIX_SPLITS.is_applied()
    if applied:
        COUNT_RADIX_SPLITS.remove()
    try:
        s = setup(seed=6)
        assert radix_splits(s.h.cache) is None
        plan_and_check(s, step(s), seed=0)
        s.h.add_request(s.system[:17] + s.rng.integers(9000, 9999, size=9).tolist())
        s.live.append(len(s.h.reqs) - 1)
        plan_and_check(s, step(s), seed=1)
        plan_and_check(s, step(s), seed=2)
    finally:
        if applied:
            COUNT_RADIX_SPLITS.apply()
