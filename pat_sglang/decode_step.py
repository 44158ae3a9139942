"""One decode step's host work for the SGLang backend: published radix paths -> prefix forest -> plan.

Role in pack-forward-merge: the per-step *pack* driver. Everything here is host data the scheduler already
holds: the rows (``req_pool_idx``) and request ids of the batch as the scheduler patch published them, the
radix path of each request as (node id, tokens), and SGLang's host copy of the sequence lengths. The plan
addresses KV as token ranges of ``req_to_token`` rows, which the forward kernel reads on the device, so no
step reads anything back from the GPU and the work grows with nodes and requests, never with context length:

* unchanged batch (same published entries and rows; the common decode step): last step's plan itself, the same
  object, while no request has grown by more than ``replan_growth_tokens`` since it was made. Its items that end at
  a request's growing end are open (``planner.ITEM_OPEN_END``): the kernel ends them at the request's length when
  it runs, read from SGLang's ``seq_lens`` and ``req_pool_indices`` on the device, so the plan needs no change and
  the backend no copy. A few numpy comparisons over the batch;
* unchanged batch grown past the bound: last step's forest with every private leaf ending at the new length
  (``PrefixForest.with_lengths``, O(requests) numpy), and last plan re-made for it (``plan_forest(previous=...)``:
  new KV ranges for the same items) unless a pack's split count changed;
* changed batch whose requests only left and joined (every other request in the same row with the very same published
  entry: no radix split on its path): last step's plan re-made for the change, no forest and no planning pass
  (``planner.remade_plan``: the leavers' entries dropped, items re-pointed to a kept member's row, each joiner's whole
  row as private items at the kept split length, partials and merge map renumbered; numpy over the items). A joiner
  shares nothing in it, so it re-reads what it could share: while that stays within ``REMAKE_MAX_EXTRA_FRACTION`` of
  the plan's KV bytes beyond what the full plan it started from read over its unique KV, the planned KV within
  ``SPLIT_KEEP_FRACTION`` of what the split length was chosen for, the chain shorter than ``REMAKE_MAX_CHAIN`` and its
  joiners within ``REMAKE_MAX_JOINED_OF_EDIT`` of what an edit takes, and the plan within the limits and the gate;
  else planned in full (below). The forest and index stay the last full plan's, which the next full plan edits for
  its batch;
* other changed batches (arrivals, finishes, radix splits) whose shared structure did not change (requests finish
  and join under nodes that stay shared): last step's forest edited by the change (``forest_edit``: the joiners'
  paths walked in Python, every member list and leaf from one number per request in compiled passes over the
  batch), the forest ``from_paths`` would build;
* any other changed batch: the forest again from the published paths (``PrefixForest.from_paths``, numpy over the
  paths' nodes), with the index the next step's edit needs;
* a request without a usable path (nothing published for its row, or a stale entry) is planned without
  sharing (its whole row as a private leaf): never wrong, only slower, and counted.

With ``min_saved`` (the dispatch gate, ``pat_sglang.dispatch``) a batch that cannot save that fraction of per-request
KV bytes gets no plan (``None``: the delegate serves it). Most such batches are decided before any forest or plan: no
plan reads fewer bytes than the batch's unique tokens, so ``1 - unique / per-request tokens`` bounds every plan's
saving, and the unique tokens follow from the published paths alone (``unique_tokens``: each node's tokens once, plus
every request's private part; the publisher keeps the first term up to date as requests come and go, so a declined
batch never gathers its paths). The publisher's node counts bound more: a node read by ``r`` requests is read at least
``ceil(r / rows per block)`` times, and requests that share a pack write merge partials (``planner.moved_bound``); a
batch over that bound is declined before its forest too, which on the Mooncake replay is almost every batch the gate
used to decline after planning it. A declined batch stays declined while it is unchanged (its private leaves only grow,
its saving only shrinks), so its next steps cost one batch comparison.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from . import host_core
from .config import DeviceSpec, HeadConfig
from .dispatch import pat_pays
from .forest import PrefixForest
from .forest_edit import RadixIndex, max_edit_joiners, survivors
from .planner import (
    INT32_MAX,
    SPLIT_KEEP_FRACTION,
    PackPlan,
    PlanLimits,
    any_above,
    bound_shape,
    int_stats,
    kv_token_bytes,
    moved_bound,
    plan_forest,
    remade_plan,
    same_ints,
)

PADDING_ROW = 0  # ReqToTokenPool row 0 is SGLang's padding row: CUDA-graph padding and dummy batches use it

# How far the requests of an unchanged batch may grow (tokens since its plan was made) before the plan is made again:
# the larger of REPLAN_MIN_GROWTH_TOKENS and the plan's longest item / REPLAN_GROWTH_DIVISOR (replan_growth_tokens).
# Only open items grow (the last KV split of each request's own leaf), all by the same count (a token per step), and
# the launch runs items longest first, so the step's tail is set by the longest item. Growth of at most 1/8 of the
# longest item keeps every item within 9/8 of the plan's longest, the planner's own tolerance: its split length is
# rounded down to 8 steps per octave (``planner._coarse``, at most 12.5% short), so a fresh plan's items already differ
# from the ideal balance by that much. The floor, 64 tokens = 4 KV tiles of 16 (the tile table's KV tile), is for
# short contexts, where an item is a few tiles and its CTA's fixed cost (Q load, pipeline prologue, write-out) is
# comparable to its KV (re-planning every few steps there would buy nothing measurable).
REPLAN_GROWTH_DIVISOR = 8
REPLAN_MIN_GROWTH_TOKENS = 64


# A changed batch whose requests only left or joined (no request's published path changed) takes last step's plan
# re-made for the change (``planner.remade_plan``) instead of a forest and a planning pass, within these bounds; past
# them it is planned in full. The joiners share nothing in a re-made plan, so it reads their shared prefixes again:
# at most REMAKE_MAX_EXTRA_FRACTION of the plan's KV bytes beyond the excess (planned - unique bytes) of the full plan
# the chain of re-made plans started from, the tolerance the planner allows itself elsewhere (SPLIT_KEEP_FRACTION,
# SPLIT_COST_TOLERANCE are 1/16 too). The planned KV must also stay within SPLIT_KEEP_FRACTION of what the split length
# was chosen for, the rule a full plan keeps a split length by. REMAKE_MAX_CHAIN bounds what the bytes do not show:
# row blocks thinned by leavers (more items than a fresh plan's) and the launch's balance; at 17 req/s (gsp, ~80
# requests) 16 changed steps are ~30 decode steps.
REMAKE_PLANS_ENV = "PAT_SGLANG_REMAKE_PLANS"  # "1": the backend's planner re-makes plans (opt-in, see remake_plans)
REMAKE_MAX_EXTRA_FRACTION = 1 / 16
REMAKE_MAX_CHAIN = 16
# The full plan that ends a chain edits the forest of the one that began it (``forest_edit``), which takes at most
# ``max_edit_joiners`` joiners (else it builds from the paths, ~2x the edit's cost). A chain ends once its joiners
# reach this fraction of that, so the full plan after it still edits (with the step's own joiners on top): without
# this cap, the Mooncake replay at batch 64 x 4k built 12 of its 30 full plans from the paths, at 256 26 of 31.
REMAKE_MAX_JOINED_OF_EDIT = 1 / 2


def replan_growth_tokens(plan: PackPlan) -> int:
    """Tokens each request may grow by, after ``plan`` was made, before its unchanged batch is planned again."""
    longest = plan.stats.max_item_tokens if plan.stats is not None else 0
    return max(REPLAN_MIN_GROWTH_TOKENS, longest // REPLAN_GROWTH_DIVISOR)


@dataclass(frozen=True)
class StepBatch:
    """The host view of one decode batch: ``rows`` and ``seq_lens`` for all ``bs`` entries (padding included, rows
    ``PADDING_ROW``), ``n_real`` real requests first, and the published batch they were matched to, if any."""

    rows: np.ndarray  # int64 [bs]
    seq_lens: np.ndarray  # int64 [bs]
    n_real: int
    published: Any = None  # sglang_patches.chain_table.PublishedBatch, or None


@dataclass(frozen=True, eq=False)
class _BatchKey:
    """Which batch a kept forest or plan was made for: the published entries (the same object while the scheduler's
    batch is unchanged), the rows and the number of real requests."""

    entries: Any
    rows: np.ndarray
    n_real: int

    @staticmethod
    def of(batch: StepBatch) -> _BatchKey | None:
        """The key of ``batch``; ``None`` when nothing is published for it (such a batch is never kept)."""
        pb = batch.published
        if pb is None or pb.entries is None:
            return None
        return _BatchKey(pb.entries, batch.rows.copy(), batch.n_real)

    def matches(self, batch: StepBatch) -> bool:
        pb = batch.published
        return (
            pb is not None
            and pb.entries is self.entries
            and batch.n_real == self.n_real
            and same_ints(batch.rows, self.rows)
        )


@dataclass
class _Reuse:
    """What the last built forest was made from: a step with the same batch reuses its structure."""

    key: _BatchKey
    forest: PrefixForest
    index: RadixIndex | None = None  # where its requests and shared radix keys sit: a changed batch edits it


@dataclass
class StepCounters:
    built: int = 0  # forests made for a changed batch (from the published paths, or edited)
    edited: int = 0  # of them, last step's forest edited by the change (forest_edit)
    reused: int = 0  # forests reused with grown leaves
    unshared: int = 0  # requests planned without sharing (no usable published path)
    coarse: int = 0  # plans coarsened to fit the limits
    plans_reused: int = 0  # steps that took the previous step's plan as it was (unchanged batch, within the bound)
    remade: int = 0  # changed batches given last step's plan re-made for the joiners and leavers (no forest, no pass)
    declined: int = 0  # steps given no plan: the batch saves too little (min_saved), decided on its forest or plan
    declined_unplanned: int = 0  # of those, decided without planning (the forest's bound, or the same batch as before)


@dataclass(eq=False)
class _Planned:
    """The plan handed out last, and the batch it was made for: a step with the same batch takes it again."""

    plan: PackPlan
    key: _BatchKey
    seq_lens: np.ndarray  # the lengths it was made for
    limits: PlanLimits | None
    max_seq_lens: np.ndarray  # seq_lens + replan_growth_tokens(plan): beyond, plan again
    base: PackPlan  # the full plan a chain of re-made plans started from (``plan`` itself for a full plan)
    excess_tokens: int  # base's planned - unique KV tokens: what it reads beyond its batch's distinct KV
    chain: int = 0  # re-made plans since base
    joined: int = 0  # real requests that joined in them (at most: some may have left again)


class _Lengths(NamedTuple):
    """What a changed step reads of its batch's lengths once, for the gate and the forest: the total length (padding
    included; every length checked to lie within the row width) and whether a published path is stale."""

    total: int
    any_stale: bool | None  # None: nothing published for the batch


@dataclass(frozen=True)
class StepPhases:
    """Where one ``DecodeStepPlanner.plan`` call spent its host time (seconds): building or growing the forest and
    ``plan_forest``; both 0 for a step that took last step's plan or was declined before any forest."""

    forest_s: float = 0.0
    plan_s: float = 0.0
    # "built" (from the published paths), "edited" (forest_edit), "reused" (grown leaves), "remade" (no forest: last
    # step's plan re-made for the joiners and leavers, plan_s its time), "none"
    forest: str = "none"
    split_search: bool = False  # plan_forest's cost model compared split lengths (PackPlan.split_searched)


NO_PHASES = StepPhases()  # a step with no forest and no plan_forest (one object: the common step allocates nothing)


@dataclass
class DecodeStepPlanner:
    """Plans decode steps of one backend instance (one TP rank): its heads, its GPU, its ``req_to_token``."""

    heads: HeadConfig
    device_spec: DeviceSpec
    req_to_token: torch.Tensor
    counters: StepCounters = field(default_factory=StepCounters)
    reuse_plans: bool = True  # False: every step is planned (tests and benchmarks of the forest and re-made plans)
    # True: a changed batch whose requests only left and joined gets last step's plan re-made (below); False (the
    # default): every changed batch gets a forest and a full plan. The backend turns it on with REMAKE_PLANS_ENV=1.
    # On the H200 a re-made plan's GPU time is the full plan's on Mooncake batches (geomean 0.997x) and 1.008x (up to
    # 1.039x) on shared-prefix ones (bench/remade_gpu_cost.py; docs/perf/host/2026-12-04-h200-remade-gpu-cost/): it
    # trades host time, hidden behind the GPU under SGLang's overlap scheduler, for GPU time, so it stays opt-in.
    remake_plans: bool = False
    _reuse: _Reuse | None = None
    _last_plan: PackPlan | None = None
    _planned: _Planned | None = None
    _declined: _BatchKey | None = None  # the last batch given no plan by the gate
    phases: StepPhases = NO_PHASES  # the last plan call's (the backend reports its slowest)

    def __post_init__(self) -> None:
        table = self.req_to_token
        if table.dtype != torch.int32 or table.dim() != 2 or not table.is_contiguous():
            raise ValueError(f"req_to_token must be a contiguous 2-D int32 tensor, got {table.dtype} {table.shape}")
        if table.numel() > INT32_MAX:
            raise ValueError(f"req_to_token has {table.numel()} entries; PAT plans address at most {INT32_MAX}")
        self.slot_table = table.view(-1)
        self.row_stride = int(table.stride(0))
        self.max_len = int(table.shape[1])
        self.bound_shape = bound_shape(self.heads, self.device_spec)  # what the publisher counts for the gate
        # Load the compiled host work (the split search's cost model) now: its first load (the compiler's version
        # check, a subprocess, and the library's dlopen: 3-4 ms on the H200's host) would otherwise land in the first
        # step that searches, the start's first wave, and set the stats line's maximum.
        host_core.loaded()

    def forget(self) -> None:
        """Drop what is kept between steps (the last forest, plan and declined batch): the next step is planned from
        scratch, as a changed batch is (``bench/backend_host_time.py --replan``)."""
        self._reuse = self._last_plan = self._planned = self._declined = None

    def _check_lengths(self, batch: StepBatch) -> int:
        """The batch's total length (padding included), every length checked to lie within 1..``max_len``."""
        stats = int_stats(batch.seq_lens)
        if stats is None:
            return 0
        lo, hi, total = stats
        if lo < 1 or hi > self.max_len:
            raise ValueError(f"sequence lengths outside 1..{self.max_len} (req_to_token row width)")
        return total

    @staticmethod
    def _stale(batch: StepBatch) -> np.ndarray | None:
        """Per real request, whether its published path is longer than the request (a path never trusted, reused or
        not); ``None`` when nothing is published for the batch."""
        pb = batch.published
        if pb is None or pb.entries is None:
            return None
        return pb.cached > batch.seq_lens[: batch.n_real]

    @staticmethod
    def _any_stale(batch: StepBatch) -> bool | None:
        """``_stale(batch).any()`` without the array (every step asks; the array is made where a path is dropped)."""
        pb = batch.published
        if pb is None or pb.entries is None:
            return None
        return any_above(pb.cached, batch.seq_lens)

    def _lengths(self, batch: StepBatch) -> _Lengths:
        """The batch's total length (``ValueError`` for a length outside the row width) and whether a path is stale."""
        return _Lengths(self._check_lengths(batch), self._any_stale(batch))

    def unique_tokens(self, batch: StepBatch, lengths: _Lengths | None = None) -> int:
        """The batch's distinct KV tokens, from its published paths alone: each radix node's tokens once, plus every
        request's tokens past its path (a whole request where its path is missing or stale). Equals the unique tokens
        of ``forest(batch)``, without building it. ``lengths``: ``_lengths(batch)``, where the caller has it."""
        total, any_stale = lengths if lengths is not None else self._lengths(batch)
        if any_stale is None:
            return total
        pb = batch.published
        if pb.distinct_cached is not None and not any_stale:  # counted by the publisher: no paths needed
            stats = int_stats(pb.cached)
            return total - (stats[2] if stats is not None else 0) + pb.distinct_cached
        req, key, length = pb.paths
        if any_stale:
            keep = ~self._stale(batch)[req]
            req, key, length = req[keep], key[keep], length[keep]
        if key.shape[0] == 0:
            return total
        _, first = np.unique(key, return_index=True)
        return total - int(length.sum()) + int(length[first].sum())

    def _moves_over(self, batch: StepBatch, lengths: _Lengths, min_saved: float) -> bool:
        """Whether every plan of ``batch`` moves more than ``pat_pays`` lets it (``planner.moved_bound``: its row blocks
        and merge partials, from the publisher's node terms): the gate then declines it without a forest or a plan.
        False where the terms do not cover the batch (a path missing or stale, the publisher moved on or keeps no terms
        for these heads: ``ChainTable.count_bound``)."""
        pb = batch.published
        if lengths.any_stale is not False or pb.absent:
            return False
        terms = pb.bound_terms(self.bound_shape)
        if terms is None:
            return False
        token_bytes = self.bound_shape.token_bytes
        bound = moved_bound(*terms, pb.cached, batch.seq_lens, lengths.total, token_bytes)
        # the very comparison pat_pays makes of the plan's bytes, which are at least the bound
        return bound > (1.0 - min_saved) * (lengths.total * token_bytes)

    def forest(self, batch: StepBatch, lengths: _Lengths | None = None) -> PrefixForest:
        """The batch's forest (reused, edited or built). ``lengths``: ``_lengths(batch)``, where the caller has it."""
        any_stale = (lengths if lengths is not None else self._lengths(batch)).any_stale
        last = self._reuse
        # a matching key means the batch is published (any_stale is a bool): the same entries, rows and real count
        if last is not None and last.key.matches(batch) and not any_stale:
            grown = last.forest.with_lengths(batch.seq_lens)
            if grown is not None:
                self.counters.reused += 1
                last.forest = grown
                return grown
        key = _BatchKey.of(batch)
        pb = batch.published
        # every real request's path published and usable: such a forest can be edited, and is indexed for the next edit
        whole = key is not None and not any_stale and not pb.absent
        index = None
        if whole and last is not None and last.index is not None:
            index = last.index.edit(pb.entries, batch.rows, batch.seq_lens, batch.rows * self.row_stride)
        if index is not None:
            self.counters.built += 1
            self.counters.edited += 1
            forest = index.forest
        else:
            forest = self._build(batch, self._stale(batch), index=whole)
            if whole:
                index = RadixIndex.of(forest, pb.entries, batch.rows)
        self._reuse = _Reuse(key, forest, index) if key is not None else None
        return forest

    def _build(self, batch: StepBatch, stale: np.ndarray | None, index: bool = False) -> PrefixForest:
        """The forest from the published paths, without those of ``stale`` requests (bool per real request);
        ``index``: recorded for the next step's edit (``from_paths(index=True)``)."""
        seq, n_real = batch.seq_lens, batch.n_real
        row_base = batch.rows * self.row_stride
        self.counters.built += 1
        if stale is None:  # nothing published for this batch
            self.counters.unshared += n_real
            return PrefixForest.private(seq, row_base)
        req, key, length = batch.published.paths
        n_stale = int(stale.sum())
        if n_stale:
            keep = ~stale[req]
            req, key, length = req[keep], key[keep], length[keep]
        self.counters.unshared += batch.published.absent + n_stale
        return PrefixForest.from_paths(req, key, length, seq, row_base, index=index)

    def plan(
        self, batch: StepBatch, limits: PlanLimits | None = None, count: bool = True, min_saved: float = 0.0
    ) -> PackPlan | None:
        """The step's plan, with open ends (run it with the batch's device ``seq_lens`` and ``req_pool_indices``).
        The same object as last step's for an unchanged batch that has not grown past ``replan_growth_tokens``;
        otherwise last step's is handed to the planner, which re-makes it cheaply when only the private leaves grew
        (``plan_forest(previous=...)``). ``None`` when the batch cannot save ``min_saved`` of per-request KV bytes
        (``dispatch.pat_pays``). ``count=False``: a dummy batch (CUDA-graph capture), planned without sharing, not
        counted and not kept for reuse."""
        if not count:
            forest = PrefixForest.private(batch.seq_lens, batch.rows * self.row_stride)
            return plan_forest(forest, self.heads, self.device_spec, limits=limits, slot_table=self.slot_table,
                               row_stride=self.row_stride)
        self.phases = NO_PHASES
        last = self._planned
        if last is not None and self.reuse_plans and self._same_step_plan(last, batch, limits):
            self.counters.plans_reused += 1
            return last.plan
        declined = self._declined
        if min_saved > 0.0 and declined is not None and self.reuse_plans and declined.matches(batch):
            return self._decline(batch, planned=False)
        lengths = self._lengths(batch)  # (the gate's bounds and the forest read them: once per changed step)
        unique = None
        if min_saved > 0.0:
            unique = self.unique_tokens(batch, lengths)
            if unique > (1.0 - min_saved) * lengths.total or self._moves_over(batch, lengths, min_saved):
                return self._decline(batch, planned=False)  # no plan of this batch could save min_saved
        if last is not None and self.reuse_plans and self.remake_plans:
            plan = self._remade(last, batch, limits, min_saved, unique, lengths)
            if plan is not None:
                return plan
        built, edited = self.counters.built, self.counters.edited
        start = time.perf_counter()
        forest = self.forest(batch, lengths)
        forest_done = time.perf_counter()
        plan = plan_forest(
            forest, self.heads, self.device_spec, limits=limits, slot_table=self.slot_table, previous=self._last_plan,
            row_stride=self.row_stride,
        )
        kind = "reused" if self.counters.built == built else "edited" if self.counters.edited != edited else "built"
        self.phases = StepPhases(forest_done - start, time.perf_counter() - forest_done, kind, plan.split_searched)
        if plan.fallback:
            self.counters.coarse += 1
        self._last_plan = plan  # plan_forest re-makes it only for this forest's structure and arguments
        if not pat_pays(plan.stats, min_saved):
            return self._decline(batch, planned=True)
        self._declined = None
        # Kept for unchanged steps only if every request ends in an open item (each then has exactly one): a request
        # ending in a shared node has a closed end, which its growth would outrun.
        key = self._forest_key() if plan.num_open == plan.num_requests else None
        if key is not None:
            excess = (plan.stats.kv_bytes_planned - plan.stats.kv_bytes_unique) // kv_token_bytes(plan.heads)
            self._keep(plan, key, batch, limits, plan, excess, 0)
        else:
            self._planned = None
        return plan

    def _keep(self, plan: PackPlan, key: _BatchKey, batch: StepBatch, limits: PlanLimits | None, base: PackPlan,
              excess_tokens: int, chain: int, joined: int = 0) -> None:
        """Keep ``plan`` for the batch's unchanged steps (``_same_step_plan``) and for re-making (``_remade``)."""
        seq = batch.seq_lens.copy()
        cap = np.minimum(seq + replan_growth_tokens(plan), self.max_len)  # never past the row's width
        self._planned = _Planned(plan, key, seq, limits, cap, base, excess_tokens, chain, joined)

    def _remade(
        self, last: _Planned, batch: StepBatch, limits: PlanLimits | None, min_saved: float, unique: int | None,
        lengths: _Lengths,
    ) -> PackPlan | None:
        """Last step's plan re-made for ``batch`` (``planner.remade_plan``) when only requests left and joined since
        it and the re-made plan stays within the bounds (``REMAKE_MAX_*``, the split length's, ``limits``, the gate's
        ``min_saved``), kept for the next steps as a planned one is; ``None``: plan it in full. The forest and its
        index stay those of the last full plan: the next full plan edits them for its batch (or builds), as it would
        after any changed batch."""
        if last.chain >= REMAKE_MAX_CHAIN or last.plan.fallback:
            return None
        start = time.perf_counter()
        # end the chain while the full plan can still edit the forest (forest_edit): checked in _survivors as soon as
        # the joiners are known, before the rest of its arrays
        max_joined = int(max_edit_joiners(batch.n_real) * REMAKE_MAX_JOINED_OF_EDIT) - last.joined
        old_index = self._survivors(last, batch, max_joined)
        if old_index is None:
            return None
        joiners = np.flatnonzero(old_index[: batch.n_real] < 0)
        joined = last.joined + joiners.shape[0]
        if unique is None:
            unique = self.unique_tokens(batch, lengths)
        bounds = self._planned_bounds(last, lengths.total, unique, min_saved)
        # A re-made plan reads about the batch's unique KV plus the full plan's excess (plus what its joiners re-read):
        # outside the bounds already, it is not made (a full plan after a failed attempt was the replay's slowest step)
        if not bounds[0] <= unique + last.excess_tokens <= bounds[1]:
            return None
        # It reads at least the unique KV plus what its joiners re-read for certain: past the bound, not made either (a
        # joiner that shares a system prompt with the batch, on gsp, before its plan's arrays were made and refused)
        if joiners.shape[0] and unique + self._joiners_excess(batch, joiners) > bounds[1]:
            return None
        plan = remade_plan(last.plan, old_index, batch.rows, batch.seq_lens, unique, limits, bounds)
        if plan is None or not pat_pays(plan.stats, min_saved):  # (partials: only known with the plan)
            return None
        self.counters.remade += 1
        self._declined = None
        self._keep(plan, _BatchKey.of(batch), batch, limits, last.base, last.excess_tokens, last.chain + 1, joined)
        self.phases = StepPhases(0.0, time.perf_counter() - start, "remade", False)
        return plan

    @staticmethod
    def _planned_bounds(last: _Planned, total: int, unique: int, min_saved: float) -> tuple[int, int]:
        """The KV tokens a re-made plan of a batch of ``total`` tokens (padding included) and ``unique`` distinct ones
        may read (``remade_plan``'s ``planned_tokens``): at most its unique tokens plus the full plan's excess plus
        ``REMAKE_MAX_EXTRA_FRACTION`` of itself (planned - unique - excess <= fraction * planned), within
        ``SPLIT_KEEP_FRACTION`` of the KV the split length was chosen for, and no more than the gate lets a plan read
        (``min_saved``; ``pat_pays`` adds the partials afterwards)."""
        hi = int((unique + last.excess_tokens) / (1.0 - REMAKE_MAX_EXTRA_FRACTION))
        lo = 0
        regrow = last.base.regrow
        chosen_for = regrow.chosen_for_tokens if regrow is not None else 0
        if chosen_for:
            lo = math.ceil((1.0 - SPLIT_KEEP_FRACTION) * chosen_for)
            hi = min(hi, int((1.0 + SPLIT_KEEP_FRACTION) * chosen_for))
        if min_saved > 0.0:
            hi = min(hi, int((1.0 - min_saved) * total))
        return lo, hi

    @staticmethod
    def _joiners_excess(batch: StepBatch, joiners: np.ndarray) -> int:
        """KV tokens that any re-made plan of ``batch`` reads beyond its unique tokens because ``joiners`` (real
        requests, private in it) share nothing: a lower bound of ``remade_plan``'s planned tokens - ``unique_tokens``,
        0 where it cannot be told. Every kept request's KV is read at least once (each radix node of theirs once at
        least) and each joiner reads its whole row, so a node on ``n`` joiners' paths is read ``n`` times where a kept
        request's path passes through it too, else ``n - 1`` times, more than ``unique_tokens`` counts it. From the
        publisher's node counts (``PublishedBatch.node_refs``), a dict look-up per node of the joiners' paths; 0 when
        it has none for the batch or a path is stale (``unique_tokens`` then counts that request's whole row)."""
        pb = batch.published
        refs = pb.node_refs() if pb is not None and pb.entries is not None else None
        if refs is None or DecodeStepPlanner._any_stale(batch):
            return 0
        held: dict[tuple[int, int], int] = {}
        entries = pb.entries
        for j in joiners.tolist():
            for node_id, _, tokens in entries[j].signature:
                key = (node_id, tokens)
                held[key] = held.get(key, 0) + 1
        return sum(key[1] * (n if refs.get(key, 0) > n else n - 1) for key, n in held.items())

    @staticmethod
    def _survivors(last: _Planned, batch: StepBatch, max_joined: int = INT32_MAX) -> np.ndarray | None:
        """Per request of ``batch`` (padding included), its index in ``last``'s batch, or -1 for a joiner;
        ``None`` when the batch cannot be re-made from it, or has more than ``max_joined`` real joiners. A survivor
        is the same request (request id) in the same pool row with the very same published entry: a request whose
        chain was read again (a radix split on its path) counts as leaving and joining, and joiners are planned without
        sharing, so no change to the shared structure reaches a re-made plan. Order does not matter (``remade_plan``
        renumbers)."""
        pb = batch.published
        key = last.key
        n_real, n_old = batch.n_real, key.n_real
        # a published batch without absent entries has no None to match below (with some, it is planned in full)
        if pb is None or pb.entries is None or pb.absent or key.entries is None or not n_real or not n_old:
            return None
        found = survivors(pb.entries, key.entries, batch.rows, key.rows)
        if found is None or len(found[1]) > max_joined:
            return None
        old_index = np.full(batch.rows.shape[0], -1, dtype=np.int64)
        old_index[:n_real] = found[0]
        # padding requests (row PADDING_ROW, a constant length) stand for each other: as many as both batches have
        # keep their items, the rest come or go
        padding = min(batch.rows.shape[0] - n_real, key.rows.shape[0] - n_old)
        old_index[n_real : n_real + padding] = np.arange(n_old, n_old + padding)
        stay = old_index >= 0
        seq, old = batch.seq_lens[stay], old_index[stay]
        if (seq < last.seq_lens[old]).any() or (seq > last.max_seq_lens[old]).any():
            return None  # shorter than planned (never in decode), or grown past the bound: plan in full
        return old_index

    def _forest_key(self) -> _BatchKey | None:
        """``_BatchKey.of`` the batch ``forest`` was just given: the key its kept forest holds (made for that batch, or
        matching it), without another copy of the rows."""
        return self._reuse.key if self._reuse is not None else None

    def _decline(self, batch: StepBatch, planned: bool) -> None:
        """Count a batch given no plan, and remember it (published batches only) so its next unchanged steps are
        declined at once."""
        self.counters.declined += 1
        self.counters.declined_unplanned += not planned
        self._planned = None
        self._declined = _BatchKey.of(batch)
        return None

    def _same_step_plan(self, last: _Planned, batch: StepBatch, limits: PlanLimits | None) -> bool:
        """``last.plan`` serves ``batch``: the same published entries, rows and limits, no path stale, and every
        request at least as long as planned and grown by at most the bound."""
        if not last.key.matches(batch):
            return False
        if limits is not last.limits and limits != last.limits:
            return False
        seq = batch.seq_lens
        return not (any_above(last.seq_lens, seq) or any_above(seq, last.max_seq_lens) or self._any_stale(batch))

