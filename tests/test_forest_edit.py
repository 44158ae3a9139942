"""Last step's forest edited by a batch change (``forest_edit.RadixIndex``) against ``from_paths`` of the new batch.

A synthetic radix tree (node ids, parents, token counts) and a batch of requests on it, each with a published entry
(``ChainEntry``: its path from its last node up) and a pool row. Random steps: requests finish (any of them), join
(on a random node of the tree, often a new child of one, sometimes ending exactly at a node or sharing a node another
request holds alone), radix nodes split (the lower half keeps its id; every request through it gets a new entry, as
the publisher re-reads it), requests are reordered now and then, and every request grows by a token (a joiner may
end exactly at its last node: no leaf). Every edit that is not refused must be exactly ``from_paths``' forest (every
array, node order included); refused steps build from the paths and index them again (no index while some request
has no private leaf). The edit's compiled pieces (``kernels/host_edit.c``'s forest arrays, ``host_batch.c``'s
survivors) are compared with their numpy versions on the same sequences.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from test_decode_step import HEADS

from pat_sglang import host_core
from pat_sglang.config import DeviceSpec
from pat_sglang.decode_step import DecodeStepPlanner, StepBatch
from pat_sglang.forest import PrefixForest
from pat_sglang.forest_edit import EDIT_JOINERS_MIN, RadixIndex, _Kept, _survivors
from pat_sglang.sglang_patches.chain_table import ChainEntry, PublishedBatch, paths_of_entries

ARRAYS = ("tok", "start", "parent", "depth", "req_ptr", "req_flat", "row_base", "request_lengths")
DERIVED = ("q", "rep", "req32", "shared", "entry_node", "ends_here", "ending", "last_node")  # PrefixForest._get's
ROW_STRIDE = 2048


class Tree:
    """Radix nodes: id -> (parent id or 0 for the root, tokens)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: dict[int, tuple[int, int]] = {}
        self.next_id = 1

    def add(self, parent: int) -> int:
        nid = self.next_id
        self.next_id += 1
        self.nodes[nid] = (parent, int(self.rng.integers(1, 40)))
        return nid

    def path(self, last: int) -> list[int]:
        out = []
        while last:
            out.append(last)
            last = self.nodes[last][0]
        return out[::-1]

    def split(self, nid: int) -> bool:
        """Split ``nid``: a new upper node takes its first tokens; ``nid`` keeps its id and the rest."""
        parent, tokens = self.nodes[nid]
        if tokens < 2:
            return False
        cut = int(self.rng.integers(1, tokens))
        upper = self.add(parent)
        self.nodes[upper] = (parent, cut)
        self.nodes[nid] = (upper, tokens - cut)
        return True

    def entry(self, rid: int, last: int) -> ChainEntry:
        sig = tuple((n, 1000 + n, self.nodes[n][1]) for n in reversed(self.path(last)))
        return ChainEntry(rid, 0, sig)


def _fresh(entries: list[ChainEntry], rows: np.ndarray, seq: np.ndarray, pad: int) -> PrefixForest:
    req, key, length = paths_of_entries(entries)
    seq_all = np.concatenate([seq, np.ones(pad, np.int64)])
    rows_all = np.concatenate([rows, np.zeros(pad, np.int64)])
    return PrefixForest.from_paths(req, key, length, seq_all, rows_all * ROW_STRIDE, index=True)


def _batches(seed: int, steps: int, burst: bool = False):
    """Random batches on a growing radix tree: (entries, rows, lengths) per step (see the module docstring);
    ``burst``: now and then up to half the batch joins in one step (several new kept nodes at once)."""
    rng = np.random.default_rng(seed)
    tree = Tree(rng)
    roots = [tree.add(0) for _ in range(3)]
    for _ in range(6):  # a few shared levels
        tree.add(int(rng.choice(list(tree.nodes))))
    reqs: list[dict] = []  # rid, last node, entry, row, length
    next_rid, free_rows = 0, list(range(1, 200))

    def join() -> None:
        nonlocal next_rid
        r = rng.random()
        if r < 0.15 and reqs:  # through another request's last node (it becomes shared, or it was)
            last = reqs[int(rng.integers(0, len(reqs)))]["last"]
            if rng.random() < 0.5:
                last = tree.add(last)
        elif r < 0.3:  # ending exactly at an existing node
            last = int(rng.choice(list(tree.nodes)))
        else:  # a new private chain under an existing node
            last = tree.add(int(rng.choice(list(tree.nodes)) if rng.random() < 0.8 else rng.choice(roots)))
            for _ in range(int(rng.integers(0, 3))):
                last = tree.add(last)
        cached = sum(tree.nodes[n][1] for n in tree.path(last))
        row = free_rows.pop(int(rng.integers(0, len(free_rows))))
        reqs.append(dict(rid=next_rid, last=last, entry=tree.entry(next_rid, last), row=row,
                         # +0: ends at its last node (no leaf, which an edit refuses: not in bursts, to edit them)
                         length=max(1, cached + int(rng.integers(1 if burst else 0, 4)))))
        next_rid += 1

    for _ in range(12):
        join()
    for _ in range(steps):
        for r in reqs:
            r["length"] += 1
        for _ in range(int(rng.integers(0, 5 if burst else 3))):  # finishes
            if len(reqs) > 2:
                free_rows.append(reqs.pop(int(rng.integers(0, len(reqs))))["row"])
        # a burst: up to one more than an edit of the batch takes (half the batch, at least EDIT_JOINERS_MIN)
        most = max(EDIT_JOINERS_MIN, len(reqs) // 2) + 1
        joins = int(rng.integers(0, most + 1)) if burst and rng.random() < 0.3 else int(rng.integers(0, 3))
        for _ in range(joins):
            if len(reqs) < (80 if burst else 40):
                join()
        if rng.random() < 0.1:  # a radix split: requests through the node are read again (new entries)
            nid = int(rng.choice(list(tree.nodes)))
            if tree.split(nid):
                for r in reqs:
                    if nid in tree.path(r["last"]):
                        r["entry"] = tree.entry(r["rid"], r["last"])
        if rng.random() < 0.05 and len(reqs) > 1:
            i, j = rng.choice(len(reqs), 2, replace=False)
            reqs[i], reqs[j] = reqs[j], reqs[i]
        yield (tuple(r["entry"] for r in reqs), np.array([r["row"] for r in reqs], dtype=np.int64),
               np.array([r["length"] for r in reqs], dtype=np.int64))


def _run(seed: int, steps: int, pad: int, burst: bool = False) -> tuple[int, int, int]:
    """Every step's batch edited from the last index (where it takes it) and compared with ``from_paths``: (edits,
    refusals, the most joiners of one edit)."""
    edits = refused = most = 0
    index = None
    last: set[int] = set()
    for entries, rows, seq in _batches(seed, steps, burst):
        fresh = _fresh(list(entries), rows, seq, pad)
        seq_all = fresh.request_lengths
        rows_all = np.concatenate([rows, np.zeros(pad, np.int64)])
        edited = index.edit(entries, rows_all, seq_all, rows_all * ROW_STRIDE) if index is not None else None
        if edited is not None:
            edits += 1
            most = max(most, sum(id(e) not in last for e in entries))
            for name in ARRAYS:
                assert np.array_equal(getattr(edited.forest, name), getattr(fresh, name)), name
            index = edited
        else:
            refused += index is not None
            index = RadixIndex.of(fresh, entries, rows_all)
        last = {id(e) for e in entries}
    return edits, refused, most


class _Paths:
    """``PublishedBatch.lazy_paths`` read from the entries."""

    def __init__(self, entries: tuple) -> None:
        self.entries = entries

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return paths_of_entries(self.entries)


@pytest.mark.parametrize("seed", range(4))
def test_the_step_planner_edits_changed_batches(seed: int) -> None:
    """``DecodeStepPlanner`` (a forest every step) on published batches, padded to a CUDA-graph size: each changed
    batch's forest is ``from_paths``' of its paths, most of them edited from last step's."""
    pad = 2
    planner = DecodeStepPlanner(HEADS, DeviceSpec(), torch.zeros((200, ROW_STRIDE), dtype=torch.int32),
                                reuse_plans=False)
    for serial, (entries, rows, seq) in enumerate(_batches(seed, 80)):
        pb = PublishedBatch(rows, tuple(e.rid for e in entries), serial, entries,
                            np.array([e.cached_len for e in entries], dtype=np.int64), lazy_paths=_Paths(entries))
        batch = StepBatch(np.concatenate([rows, np.zeros(pad, np.int64)]),
                          np.concatenate([seq, np.ones(pad, np.int64)]), len(entries), pb)
        forest = planner.forest(batch)
        fresh = _fresh(list(entries), rows, seq, pad)
        assert all(np.array_equal(getattr(forest, n), getattr(fresh, n)) for n in ARRAYS)
    c = planner.counters
    assert c.built == 80 and 5 < c.edited < c.built, (c.edited, c.built)


def _edits(seed: int, steps: int, pad: int) -> list[PrefixForest | None]:
    """Per step of ``_batches(seed, steps, burst=True)``: the edited forest, or None where the edit was refused (or
    there was no index: the first step, and after a refusal, the forest of ``from_paths`` is indexed)."""
    out: list[PrefixForest | None] = []
    index = None
    for entries, rows, seq in _batches(seed, steps, burst=True):
        rows_all = np.concatenate([rows, np.zeros(pad, np.int64)])
        seq_all = np.concatenate([seq, np.ones(pad, np.int64)])
        edited = index.edit(entries, rows_all, seq_all, rows_all * ROW_STRIDE) if index is not None else None
        out.append(None if edited is None else edited.forest)
        index = edited if edited is not None else RadixIndex.of(_fresh(list(entries), rows, seq, pad), entries,
                                                                   rows_all)
    return out


@pytest.mark.parametrize("glue", [True, False])
@pytest.mark.parametrize("seed", range(8))
def test_compiled_edits_equal_the_numpy_ones(seed: int, glue: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edit with its compiled pieces (``kernels/host_edit.c`` ``pat_edit_forest``, ``host_batch.c``
    ``pat_survivors``; called through the extension module or the ctypes wrappers) against its numpy versions: every
    step edited or refused alike, the same forests, and the compiled call's derived arrays equal to those
    ``PrefixForest._get`` computes (same values and dtypes)."""
    if host_core.loaded() is None or host_core.loaded_batch() is None:  # a compiler is there wherever tests run
        pytest.fail("the compiled host work did not load (see the log for the reason)")
    _via(glue, monkeypatch)
    compiled = _edits(seed, 120, 2)
    monkeypatch.setattr(host_core, "loaded", lambda: None)
    monkeypatch.setattr(host_core, "loaded_batch", lambda: None)
    numpy_made = _edits(seed, 120, 2)
    assert [f is None for f in compiled] == [f is None for f in numpy_made]
    assert sum(f is not None for f in compiled) > 10
    for got, want in zip(compiled, numpy_made, strict=True):
        if got is None:
            continue
        assert set(got._derived) >= set(DERIVED) and not want._derived
        for name in ARRAYS + DERIVED:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.tolist() == b.tolist(), name


@pytest.mark.parametrize("glue", [True, False])
def test_compiled_forest_refuses_empty_leaves_and_wrong_counts(glue: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``host_core`` ``edit_forest`` gives None, as the numpy version does, for a request no longer than its attach
    node's end and for member counts other than the kept nodes'; arrays it cannot read are refused."""
    core = _via(glue, monkeypatch)
    entries = [ChainEntry(i, 0, ((1, 1001, 10),)) for i in range(3)]  # three requests under one 10-token node
    rows = np.arange(1, 4, dtype=np.int64)
    forest = _fresh(entries, rows, np.array([12, 13, 14], np.int64), 0)
    kept = RadixIndex.of(forest, tuple(entries), rows).kept
    width = kept.ancestors.shape[1]
    attach = np.zeros(3, np.int64)
    seq = np.array([12, 13, 14], np.int64)
    assert core.edit_forest(kept.packed, width, [3], attach, seq) is not None
    assert core.edit_forest(kept.packed, width, [3], attach, np.array([12, 10, 14], np.int64)) is None  # empty leaf
    assert core.edit_forest(kept.packed, width, [2], attach, seq) is None
    assert core.edit_forest(kept.packed, width, [3], np.array([0, 0, 1], np.int64), seq) is None  # no kept node 1
    with pytest.raises(ValueError):
        core.edit_forest(kept.packed, width, [3], attach, seq.astype(np.int32))
    with pytest.raises(ValueError):
        core.edit_forest(kept.packed[:-1], width, [3], attach, seq)


def _via(glue: bool, monkeypatch: pytest.MonkeyPatch) -> host_core._HostCore:
    """The loaded host core, its ``edit_forest``/``edit_places`` the extension module's (``kernels/host_glue.c``, what
    the edit calls where it loads) or, ``glue`` False, the ctypes wrappers (its fallback) for this test."""
    core = host_core.loaded()
    assert core is not None
    if glue:
        assert core.glue is not None  # numpy's and Python's headers are there wherever tests run
    else:
        monkeypatch.setattr(core, "edit_forest", functools.partial(host_core._HostCore.edit_forest, core))
        monkeypatch.setattr(core, "edit_places", functools.partial(host_core._HostCore.edit_places, core))
    return core


@pytest.mark.parametrize("glue", [True, False])
@pytest.mark.parametrize("seed", range(30))
def test_compiled_places_equal_the_numpy_ones(seed: int, glue: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``host_edit.c`` ``pat_edit_places`` against ``RadixIndex._places_numpy``: survivors' attach nodes and first
    private keys carried over, joiners' written, padding as root leaves, and the groups of the joiners' keys that two
    requests or more share (random keys from a small range, so groups of several requests and several groups occur);
    an old index or a joiner out of range is refused."""
    core = _via(glue, monkeypatch)
    rng = np.random.default_rng(seed)
    n_old, n_real = int(rng.integers(1, 80)), int(rng.integers(1, 80))
    n = n_real + int(rng.integers(0, 4))
    old = type("Old", (), {"attach": rng.integers(-1, 6, n_old + 2).astype(np.int64),
                           "first_private": rng.integers(-1, 12, n_old + 2).astype(np.int64),
                           "_groups": staticmethod(RadixIndex._groups)})()
    old_of = rng.permutation(n_old + 2)[:n_real].astype(np.int64) if n_real <= n_old + 2 else \
        rng.integers(0, n_old + 2, n_real).astype(np.int64)
    joiners = sorted(rng.choice(n_real, size=int(rng.integers(0, min(n_real, 10) + 1)), replace=False).tolist())
    old_of[joiners] = -1
    placed = [(int(rng.integers(-1, 6)), int(rng.integers(-1, 12))) for _ in joiners]
    want = RadixIndex._places_numpy(old, old_of, joiners, placed, n)
    got = core.edit_places(old_of, old.attach, old.first_private, joiners, placed, n)
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    assert got[2] == want[2] and list(got[2]) == list(want[2])  # the same groups, keys in the same (ascending) order
    with pytest.raises(ValueError):
        core.edit_places(np.full(n_real, n_old + 2, np.int64), old.attach, old.first_private, [], [], n)
    with pytest.raises(ValueError):
        core.edit_places(old_of, old.attach, old.first_private, [n_real], [(0, 0)], n)


@pytest.mark.parametrize("seed", range(30))
def test_compiled_survivors_equal_the_numpy_ones(seed: int) -> None:
    """``host_batch.c`` ``pat_survivors`` against ``forest_edit._survivors``: old batches of distinct rows, new ones
    with survivors (kept in order or shuffled), joiners in new or reused rows, entries moved to another row (not
    survivors), rows past the scratch table (which grows), and a negative row (None from both)."""
    core = host_core.loaded_batch()
    assert core is not None
    rng = np.random.default_rng(seed)
    for _ in range(4):
        top = int(rng.choice([300, 5000]))
        n_old = int(rng.integers(0, 60))
        old_rows = rng.choice(top, size=n_old, replace=False).astype(np.int64)
        old_entries = tuple(object() for _ in range(n_old))
        stay = sorted(rng.choice(n_old, size=int(rng.integers(0, n_old + 1)), replace=False).tolist())
        new = [(old_entries[k], int(old_rows[k])) for k in stay]
        free = np.setdiff1d(np.arange(top), old_rows)
        for _ in range(int(rng.integers(0, 10))):
            if rng.random() < 0.3 and n_old:  # a new request in a row the old batch used
                new.append((object(), int(old_rows[int(rng.integers(0, n_old))])))
            elif rng.random() < 0.2 and n_old:  # an old entry in another row: not a survivor
                new.append((old_entries[int(rng.integers(0, n_old))], int(free[int(rng.integers(0, free.shape[0]))])))
            else:
                new.append((object(), int(free[int(rng.integers(0, free.shape[0]))])))
        if rng.random() < 0.5:
            rng.shuffle(new)
        seen: set[int] = set()
        new = [(e, r) for e, r in new if not (r in seen or seen.add(r))]  # distinct rows
        entries = tuple(e for e, _ in new)
        rows = np.array([r for _, r in new], dtype=np.int64)
        if rng.random() < 0.1 and rows.shape[0]:
            rows[int(rng.integers(0, rows.shape[0]))] = -1
        want = _survivors(entries, old_entries, rows, old_rows)
        got = core.survivors(entries, old_entries, rows, old_rows)
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert got[0].tolist() == want[0].tolist() and got[1:] == want[1:]
    assert (core._table == -1).all()


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("pad", [0, 3])
def test_edited_forests_equal_from_paths(seed: int, pad: int) -> None:
    """Every edit equals ``from_paths`` of the new batch; both edits and refusals happen (the test can fail)."""
    edits, refused, _ = _run(seed, 120, pad)
    assert edits > 10 and refused > 5, (edits, refused)


@pytest.mark.parametrize("seed", range(6))
def test_bursts_of_joiners_are_edited_like_from_paths(seed: int) -> None:
    """Steps where up to half the batch joins at once (the most an edit takes beyond ``EDIT_JOINERS_MIN``): several new
    kept nodes in one edit, each equal to ``from_paths``' forest."""
    edits, refused, _ = _run(seed, 120, 2, burst=True)
    assert edits > 10 and refused > 5, (edits, refused)


def test_edits_of_more_joiners_than_the_minimum() -> None:
    """Over longer burst runs, edits of more than ``EDIT_JOINERS_MIN`` joiners (taken up to half the batch) happen, and
    each equals ``from_paths`` (most random bursts are refused for their structure: a joiner ending at a node, a
    split)."""
    most = max(_run(seed, 300, 0, burst=True)[2] for seed in range(10, 14))
    assert most > EDIT_JOINERS_MIN, most


def _groups_of_joiners(joiners: int) -> tuple[list[ChainEntry], list[ChainEntry], np.ndarray, np.ndarray]:
    """Three prompts, each under one request of the first batch (no kept node), and ``joiners`` more requests spread
    over them (one prompt through a shared second node too): (first batch, joiners, rows, lengths of all)."""
    tree = Tree(np.random.default_rng(2))
    prompts = [tree.add(0) for _ in range(3)]
    under = [prompts[0], prompts[1], tree.add(prompts[2])]  # the third prompt's requests share two radix nodes
    lasts = [tree.add(under[i % 3]) for i in range(3 + joiners)]
    entries = [tree.entry(i, last) for i, last in enumerate(lasts)]
    seq = np.array([sum(tree.nodes[m][1] for m in tree.path(last)) + 2 for last in lasts])
    return entries[:3], entries[3:], np.arange(3 + joiners, dtype=np.int64) * 3 + 1, seq


def test_joiners_make_several_kept_nodes_at_once() -> None:
    """``EDIT_JOINERS_MIN`` requests join three lone requests, each group on its own prompt: one edit makes the three
    prompts kept nodes (one of them a chain of two radix nodes), exactly ``from_paths``' forest; one joiner more is
    refused before any walk (built from the paths instead)."""
    first, new, rows, seq = _groups_of_joiners(EDIT_JOINERS_MIN)
    index = RadixIndex.of(_fresh(first, rows[:3], seq[:3], 0), tuple(first), rows[:3])
    assert index is not None and not index.q
    both = tuple(first + new)
    edited = index.edit(both, rows, seq, rows * ROW_STRIDE)
    want = _fresh(list(both), rows, seq, 0)
    assert want.num_nodes == 3 + len(both)
    assert edited is not None and all(np.array_equal(getattr(edited.forest, n), getattr(want, n)) for n in ARRAYS)
    first, new, rows, seq = _groups_of_joiners(EDIT_JOINERS_MIN + 1)
    index = RadixIndex.of(_fresh(first, rows[:3], seq[:3], 0), tuple(first), rows[:3])
    assert index is not None and index.edit(tuple(first + new), rows, seq, rows * ROW_STRIDE) is None


def test_an_edit_keeps_the_kept_nodes_and_moves_the_members() -> None:
    """One shared prompt (node 1) under two requests' own nodes: a third joins with its own node under the prompt (an
    edit: the prompt keeps its range, gains a member, and the joiner gets a leaf); then the first two finish, the
    prompt keeps one request and turns private (an edit too: it joins that request's leaf, whose private part now
    starts at the prompt's radix node)."""
    tree = Tree(np.random.default_rng(0))
    prompt = tree.add(0)
    a, b, c = tree.add(prompt), tree.add(prompt), tree.add(prompt)
    ea, eb, ec = tree.entry(0, a), tree.entry(1, b), tree.entry(2, c)
    cached = {n: sum(tree.nodes[m][1] for m in tree.path(n)) for n in (a, b, c)}
    rows = np.array([5, 9, 7])
    seq = np.array([cached[a] + 3, cached[b] + 1, cached[c] + 2])
    first = _fresh([ea, eb], rows[:2], seq[:2], 0)
    index = RadixIndex.of(first, (ea, eb), rows[:2])
    assert index is not None and first.num_nodes == 3 and first.q.tolist() == [2, 1, 1]
    grown = index.edit((ea, eb, ec), rows, seq, rows * ROW_STRIDE)
    assert grown is not None and grown.forest.q.tolist() == [3, 1, 1, 1]
    want = _fresh([ea, eb, ec], rows, seq, 0)
    assert all(np.array_equal(getattr(grown.forest, n), getattr(want, n)) for n in ARRAYS)
    alone = grown.edit((ec,), rows[2:], seq[2:], rows[2:] * ROW_STRIDE)  # node 1 keeps one request: its leaf
    want = _fresh([ec], rows[2:], seq[2:], 0)
    assert alone is not None and alone.forest.num_nodes == 1 and alone.first_private.tolist() == [prompt]
    assert all(np.array_equal(getattr(alone.forest, n), getattr(want, n)) for n in ARRAYS)
    assert grown.edit((eb, ea, ec), rows[[1, 0, 2]], seq[[1, 0, 2]], rows[[1, 0, 2]] * ROW_STRIDE) is None  # reordered


def test_nested_kept_nodes_dissolve_into_the_last_request_leaf() -> None:
    """A prompt (node P, three requests) with a shared child (node C, two of them): when two requests finish, both
    keep one request, and the survivor's leaf starts at 0 with its private part at P (the topmost node gone). A
    joiner through P then shares P again: a new kept node (P's chain, as ``from_paths`` makes it), where a private
    part recorded at C would have let the edit miss the sharing."""
    tree = Tree(np.random.default_rng(1))
    p = tree.add(0)
    c = tree.add(p)
    a, b, x, y = tree.add(c), tree.add(c), tree.add(p), tree.add(p)
    es = [tree.entry(i, n) for i, n in enumerate((a, b, x))]
    ey = tree.entry(3, y)
    seq = np.array([sum(tree.nodes[m][1] for m in tree.path(n)) + 2 for n in (a, b, x, y)])
    rows = np.array([3, 4, 5, 6])
    first = _fresh(es, rows[:3], seq[:3], 0)
    index = RadixIndex.of(first, tuple(es), rows[:3])
    assert index is not None and first.q.tolist()[:2] == [3, 2]
    alone = index.edit((es[0],), rows[:1], seq[:1], rows[:1] * ROW_STRIDE)
    assert alone is not None and alone.forest.num_nodes == 1 and alone.first_private.tolist() == [p]
    want = _fresh(es[:1], rows[:1], seq[:1], 0)
    assert all(np.array_equal(getattr(alone.forest, n), getattr(want, n)) for n in ARRAYS)
    both = (es[0], ey)
    again = alone.edit(both, rows[[0, 3]], seq[[0, 3]], rows[[0, 3]] * ROW_STRIDE)
    want = _fresh(list(both), rows[[0, 3]], seq[[0, 3]], 0)
    assert want.q.tolist()[0] == 2  # P is shared again
    assert again is not None and all(np.array_equal(getattr(again.forest, n), getattr(want, n)) for n in ARRAYS)


@pytest.mark.parametrize("seed", range(30))
def test_kept_nodes_made_alike_with_and_without_the_extension(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_Kept.make`` through ``host_glue.c`` ``kept_pack`` and in Python: the same lineages, packed array and views
    (values, dtypes, shapes, the views reading the packed array) on random kept-node trees (parents first), none at
    all included; a parent that is not an earlier node is refused."""

    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 40))
    parents = [int(rng.integers(-1, i)) if i and rng.random() < 0.8 else -1 for i in range(k)]
    depth = [0] * k
    for i, p in enumerate(parents):
        depth[i] = 0 if p < 0 else depth[p] + 1
    tok = rng.integers(1, 5000, k).tolist()
    start = rng.integers(0, 20000, k).tolist()
    args = (tok, start, parents, depth, {}, list(range(k)), [(d, i) for i, d in enumerate(depth)], list(range(k)))
    made = {}
    for glue in (True, False):
        with monkeypatch.context() as m:
            if not glue:
                m.setattr(host_core, "loaded_glue", lambda: None)
            else:
                assert host_core.loaded_glue() is not None
            made[glue] = _Kept.make(*args)
    a, b = made[True], made[False]
    assert a.lineage == b.lineage and a.parents == b.parents
    for name in ("tok", "start", "parent", "depth", "end", "num_ancestors", "ancestors", "packed"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tolist() == y.tolist(), name
    assert a.ancestors.base is a.packed or a.ancestors.base.base is a.packed
    if k:
        a.packed[0] += 1  # the views share the packed array's memory
        assert a.tok[0] == b.tok[0] + 1
        with pytest.raises(IndexError):
            _Kept.make([1] * k, [0] * k, [k] * k, [0] * k, {}, [0] * k, [(0, 0)] * k, [0] * k)


def _index_steps(seed: int, pad: int, common: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list[str]]:
    """Per step of ``_batches(seed, 120, burst=True)`` the edited index (or None), with ``host_glue.c``
    ``edit_common`` serving the changes it takes (``common``) or answering NotImplemented (the step-by-step edit with
    its other compiled pieces); and what it answered per call: "kept" (the forest's arrays, the kept nodes unchanged),
    "remade" (new kept nodes: some made, some dissolved, or both, or some to fuse), "refused" or "python", and
    "fused" for each edit in which ``_Kept.fused`` fused kept nodes."""
    glue = host_core.loaded_glue()
    assert glue is not None  # numpy's and Python's headers are there wherever tests run
    real = glue.edit_common
    served: list[str] = []
    real_fused = _Kept.fused

    def fused(kept: _Kept, q: list[int]) -> object:
        got = real_fused(kept, q)
        if got is not None:
            served.append("fused")
        return got

    def counted(*args: object) -> object:
        if not common:
            return NotImplemented
        got = real(*args)
        served.append("python" if got is NotImplemented else "refused" if got is None
                      else "kept" if isinstance(got[0], dict) else "remade")
        return got

    out = []
    index = None
    with monkeypatch.context() as m:
        m.setattr(glue, "edit_common", counted)
        m.setattr(_Kept, "fused", fused)
        for entries, rows, seq in _batches(seed, 120, burst=True):
            rows_all = np.concatenate([rows, np.zeros(pad, np.int64)])
            seq_all = np.concatenate([seq, np.ones(pad, np.int64)])
            edited = index.edit(entries, rows_all, seq_all, rows_all * ROW_STRIDE) if index is not None else None
            out.append(edited)
            index = edited if edited is not None else RadixIndex.of(_fresh(list(entries), rows, seq, pad), entries,
                                                                       rows_all)
    return out, served


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("pad", [0, 2])
def test_the_common_change_in_one_call_equals_the_step_by_step_edit(seed: int, pad: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``host_glue.c`` ``edit_common`` (the leavers' and joiners' member counts, the joiners' places, every request's
    attach node and first private key, new kept nodes for requests that come to share a radix node, kept nodes left
    with one request dissolved, the fusion check and the forest's arrays in one call) against the edit's step-by-step
    path on the same random sequences: every step refused or edited alike, and every edited index equal (forest arrays
    and derived arrays with their dtypes, attach nodes, first private keys, member counts, the kept nodes). The one
    call answers every change of these sequences itself (those that fuse a kept node into its parent too: it places
    them, ``_Kept.fused`` fuses)."""
    one_call, served = _index_steps(seed, pad, True, monkeypatch)
    stepwise, _ = _index_steps(seed, pad, False, monkeypatch)
    assert [i is None for i in one_call] == [i is None for i in stepwise]
    edits = sum(i is not None for i in one_call)
    taken = served.count("kept") + served.count("remade")  # (a few are then refused by the forest: an empty leaf)
    assert taken > 10 and taken >= edits // 2 and "python" not in served, (served, edits)
    for got, want in zip(one_call, stepwise, strict=True):
        if got is None:
            continue
        for name in ARRAYS + DERIVED:
            a, b = getattr(got.forest, name), getattr(want.forest, name)
            assert a.dtype == b.dtype and a.tolist() == b.tolist(), name
        assert got.attach.dtype == want.attach.dtype and got.attach.tolist() == want.attach.tolist()
        assert got.first_private.tolist() == want.first_private.tolist()
        assert got.q == want.q and got.rows.tolist() == want.rows.tolist() and got.entries == want.entries
        assert got.kept.packed.tolist() == want.kept.packed.tolist() and got.kept.chain == want.kept.chain
        assert (got.kept.deepest, got.kept.rank, got.kept.top, got.kept.parents, got.kept.lineage) == (
            want.kept.deepest, want.kept.rank, want.kept.top, want.kept.parents, want.kept.lineage)


def test_the_common_change_refuses_a_joiner_off_the_kept_chains() -> None:
    """A joiner whose path leaves a kept chain before its kept node, or passes its radix keys with other token counts:
    the one call refuses the edit (None), as ``RadixIndex._place`` does; arguments of another shape are left to the
    Python edit (NotImplemented)."""
    entries = [ChainEntry(i, 0, ((10 + i, 2000 + i, 3), (2, 1002, 5), (1, 1001, 10))) for i in range(3)]
    rows = np.arange(1, 4, dtype=np.int64)
    seq = np.array([20, 21, 22], np.int64)
    index = RadixIndex.of(_fresh(entries, rows, seq, 0), tuple(entries), rows)
    assert index is not None and len(index.q) == 1  # one kept node: radix nodes 1 and 2
    glue = host_core.loaded_glue()
    assert glue is not None
    kept = index.kept
    off = ChainEntry(9, 0, ((30, 2030, 3), (1, 1001, 10)))  # through node 1 but not node 2: off the kept chain
    on = ChainEntry(9, 0, ((30, 2030, 3), (2, 1002, 5), (1, 1001, 10)))
    old_of = np.array([0, 1, 2, -1], np.int64)
    seq4 = np.array([21, 22, 23, 19], np.int64)

    def call(joiner: ChainEntry, **change: object) -> object:
        args = dict(old_of=old_of, joiners=[3], leavers=[], entries=(*entries, joiner), attach=index.attach,
                    first=index.first_private, packed=kept.packed, width=kept.ancestors.shape[1], chain=kept.chain,
                    deepest=kept.deepest, q=index.q, seq=seq4, top=kept.top, rank=kept.rank)
        args.update(change)
        return glue.edit_common(*args.values())

    assert call(off) is None
    longer = ChainEntry(9, 0, ((30, 2030, 3), (2, 1002, 6), (1, 1001, 10)))  # the kept chain's ids, not its tokens
    assert call(longer) is None
    rows4 = np.arange(1, 5, dtype=np.int64)
    assert index.edit((*entries, longer), rows4, seq4, rows4 * ROW_STRIDE) is None  # as the step-by-step edit
    # joiners sharing request 0's private node: a new kept node; the same node id with other tokens: refused
    same = ChainEntry(9, 0, ((31, 2031, 2), (10, 2010, 3), (2, 1002, 5), (1, 1001, 10)))
    other = ChainEntry(9, 0, ((31, 2031, 2), (10, 2010, 4), (2, 1002, 5), (1, 1001, 10)))
    seq_joined = np.array([21, 22, 23, 24], np.int64)
    grown = call(same, seq=seq_joined)
    assert grown is not None and grown is not NotImplemented and not isinstance(grown[0], dict)
    assert grown[1].tolist() == [1, 0, 0, 1] and grown[2].tolist() == [-1, 11, 12, 31] and grown[3] == [4, 2]
    assert grown[4] is False  # no kept node with all of its parent's requests
    assert call(other, seq=seq_joined) is None
    rootless = ChainEntry(9, 0, ((31, 2031, 2), (10, 2010, 3)))  # request 0's private node, but at the root
    assert call(rootless, seq=np.array([21, 22, 23, 6], np.int64)) is None  # two attach nodes under one key
    assert index.edit((*entries, rootless), rows4, np.array([21, 22, 23, 6], np.int64), rows4 * ROW_STRIDE) is None
    assert index.edit((*entries, other), rows4, seq_joined, rows4 * ROW_STRIDE) is None  # as the step-by-step edit
    made = call(on)
    assert made is not None and made is not NotImplemented
    arrays, attach, first, q, fuses = made
    assert attach.tolist() == [0, 0, 0, 0] and first.tolist() == [10, 11, 12, 30] and q == [4] and fuses is False
    assert call(on, entries=tuple(entries)) is NotImplemented  # entries not one per request of old_of
    assert call(on, seq=seq4.astype(np.int32)) is NotImplemented


def test_the_one_call_makes_and_dissolves_kept_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the random sequences the one call edits changes that keep the kept nodes, changes that make new ones
    (radix keys no kept node had before) and changes that dissolve some, and refuses some: each kind occurs (the
    comparison above covers every one of them)."""
    served: list[str] = []
    made = dissolved = 0
    for seed in range(4):
        indexes, answers = _index_steps(seed, 0, True, monkeypatch)
        served += answers
        for before, after in itertools.pairwise(indexes):
            if before is not None and after is not None:
                made += bool(set(after.kept.chain) - set(before.kept.chain))
                dissolved += bool(set(before.kept.chain) - set(after.kept.chain))
    assert served.count("remade") > 10 and served.count("kept") > 10 and served.count("refused") > 0, served
    assert made > 5 and dissolved > 5, (made, dissolved)
    assert served.count("fused") > 0, served  # kept nodes fused (the sequences also reach that case)
