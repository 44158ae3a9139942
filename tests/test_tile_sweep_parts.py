"""``bench/tile_sweep.py``'s tree parts (``tree_parts``, ``PART_CASES``): a tree's shared levels and its private
suffixes as batches of their own. Together they must hold the tree's distinct KV (plus the one token per request the
shared part keeps), so that timing them beside the tree splits its time between the wide items and the private ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scripts import load_script

from pat_sglang.workloads import STANDARD_WORKLOADS, tree_batch

SWEEP = load_script(Path(__file__).resolve().parent.parent / "bench" / "tile_sweep.py")


def _distinct(levels: list[tuple[int, int]]) -> tuple[int, int]:
    """(requests, distinct KV slots) of the batch the levels lay out."""
    b = tree_batch(levels, rng=3)
    return b.kv_indptr.shape[0] - 1, int(np.unique(b.kv_indices.numpy()).shape[0])


@pytest.mark.parametrize("name", ["a32", "a128", "b", "e"])
def test_parts_hold_the_tree(name: str) -> None:
    levels = STANDARD_WORKLOADS[name]
    shared, private = SWEEP.tree_parts(levels)
    requests, whole = _distinct(levels)
    shared_requests, shared_slots = _distinct(shared)
    private_requests, private_slots = _distinct(private)
    assert shared_requests == private_requests == requests
    assert shared_slots - requests + private_slots == whole
    assert private_slots == requests * levels[-1][1]  # nothing shared in the private part


def test_part_cases_are_named_parts() -> None:
    for tree in ("a128", "a256", "b"):
        shared, private = SWEEP.tree_parts(STANDARD_WORKLOADS[tree])
        assert SWEEP.PART_CASES[f"{tree[0]}p{tree[1:]}"] == shared
        assert SWEEP.PART_CASES[f"{tree[0]}s{tree[1:]}"] == private
        assert f"{tree[0]}p{tree[1:]}" in SWEEP.MORE_CASES
