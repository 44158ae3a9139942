"""The pack planner: from a prefix forest to a launch-ready ``PackPlan``.

Role in pack-forward-merge: this is *pack*. It runs once per decode step on the CPU and does all the
data-dependent work, so that the forward and merge launches only read flat int32 tensors.

Packs. A pack is a range of KV token positions plus the requests that read it. Every forest node is
either packed on its own (its KV leaves HBM once for all its requests) or inlined into its children (each
child's pack reads it again). A pack's range (its node plus its inlined ancestors) is contiguous in every
member's row, so an item names it as ``[kv_begin, kv_end)``, positions in the slot table (SGLang's
``req_to_token``, or the caller's ``kv_indices``) through one member's row: the kernel reads the slot indices
there, on the device, and the plan never holds one index per token.

The decision is a memory-centric profit model, in bytes per decode step per layer:

    kv_token_bytes = 2 * num_kv_heads * head_dim * kv_elem_bytes         (K and V of one token; FP8 pools: 1 byte)
    row_blocks     = ceil(q / requests_per_block)   q = requests through the node,
                                                     requests_per_block = max_tile_m // gqa_group
    saved_bytes    = (q - row_blocks) * tokens * kv_token_bytes          tokens = inherited + own slots
    cost_bytes     = q * partial_bytes,  partial_bytes = 2 * num_q_heads * (head_dim * 2 + 4)
                     (each request gets one more partial row in the 16-bit q dtype + an fp32 log-sum-exp: written,
                     then merged)

A node is packed when saved_bytes > cost_bytes; single-request nodes are always packed (they are the
leaves). So the plan never reads more KV than per-request decode (each request's tokens are read at
most once per request), and a shared pack only exists where it saves more than it costs.

Items. A pack is cut into work items, one CTA each per KV head: row blocks of at most
``requests_per_block`` requests (the tile's query rows are requests x the q heads of one KV group), and
KV splits so the grid fills the GPU without a long tail. One split length serves the whole step (a pack of
``t`` tokens is cut into ``ceil(t / split_tokens)`` items of about equal KV), chosen by a cost model of the launch
among a few candidates (``_split_candidates``: no split, multiples of one wave's split ``sum_items(tokens) *
num_kv_heads / target_ctas`` from 2x to 1/4x, and each whole number of waves up to ``MAX_WAVES``):

    cost     = makespan + chain cost * max partials of a request   (MEASURED_CHAIN_COSTS[configuration], else
               MERGE_CHAIN_COST_SLOT_BYTES[KV element])
    makespan = the launch simulated on target_ctas / num_kv_heads item slots: items in launch order, each to the
               slot that frees first (the hardware's in-order CTA dispatch), an item taking
               ITEM_OVERHEAD_SLOT_BYTES[tile m] + its KV bytes of one slot's streaming time (configurations
               with a measured entry, MEASURED_ITEM_COSTS: that entry's fixed and per-token costs)
    target_ctas = sm_count * min_ctas_per_sm(head_dim)   (the kernel variant's occupancy, tile table)

Splitting finer evens out the slots (a step of 64 requests of ~2.3k tokens in pairs of shared 2k prompts runs
1.9 waves of ~1.1k-token items at one wave's split: its slots carry 1.37x their mean) but adds items, each with
its fixed cost (6 us for a 16-row tile, 23 us for a 64-row one in a per-CTA fit; the 64-row figure is mostly its
longer per-token path, folded into the intercept), and merge work. Every candidate length is on the ``coarse``
grid (8 steps per octave), so it stays put while the leaves grow by a token per step, and a re-made plan
(``plan_forest(previous=...)``) keeps last step's length while every pack keeps its split count. The search
simulates candidates in the order of a lower bound of their cost and stops once none left could be more than
``SPLIT_COST_TOLERANCE`` (1/16) cheaper than the best found: its pick is predicted at most that much slower than the
best candidate, for about half the simulations (each a few hundred heap steps of Python). One length still leaves
a launch whose last wave holds a few CTAs of long items (tree c: 2176 CTAs on 528 slots, its last 64 streaming whole
1024-token items with 88% of the slots idle): where that wave is at most 1/``TAIL_WAVE_DIVISOR`` of the resident
CTAs, its packs are cut ``TAIL_SPLIT_FACTOR`` times finer (``_tail_split``; none under ``MIN_SPLIT_TOKENS``), which
moves their items to the launch's end and spreads them over the idle slots.

Partials. Every (item, request) writes either straight to the output (the request's only partial) or
to its own partial slot; two items never share a slot. The merge map lists each request's slots.

Tiles. Each item gets the smallest tile m (from ``configs/tiles``) that holds its rows, at least the head dim's
``min_tile_m`` where the table gives one, unless its pack is long (``min_tile_m_tokens`` KV tokens or more:
``TileTable.least_tile_m``); items are ordered longest KV first for the single forward launch.

Limits. ``PlanLimits`` (the CUDA-graph buffers' capacities) is an input: a plan that would exceed it is made
with one KV split per pack, and if that still does not fit, without sharing (one item per request, no
partials), which fits any buffers sized for the batch. A plan is never edited after it is made.

Re-made plans. For a batch that differs from a planned one only by requests that left and joined,
``remade_plan`` makes a new plan from the old one's items instead of from a forest: the leavers' entries go (and
items left empty), every kept item reads through its first kept member's row (a freed row can hold a joiner
already), each joiner reads its whole row in private items cut at the plan's split length, and tiles, launch order,
partial slots and the merge map are made afresh for the new entries. Its output equals a fresh plan's; it reads more
KV where a joiner could have shared, which the caller (``decode_step``) bounds.

Implementation. All of this is numpy over the forest's flat arrays: the profit
model for every node at once (iterated only where inlining passes tokens down), then packs, row blocks,
splits, items, partial numbering and the merge map as array ops, with no per-item Python but the split choice's
launch simulation (a heap over the item slots per candidate; runs of equal items dealt a round at a time, losing
candidates cut off early). Where the compiled host work loads (``host_core``), the split choice past its candidates
(``_split_length``: split counts, its cost model and the pick) and the items' layout (``_plan_items``: row blocks,
splits, launch order, entries, partial slots, merge map) are one C call each, with the same results: numpy pays 1-5 us
a call on arrays this small, and those two were most of a pass's calls. ``PackInfo`` records are built on the first
read of ``PackPlan.packs`` (they are for printing and statistics only).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import math
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from . import host_core
from .config import DeviceSpec, HeadConfig, TileTable, load_tile_table
from .forest import PrefixForest

# Columns of PackPlan.items (one int32 row per work item). The one definition of the layout: the kernel
# build receives it as -D defines (``item_layout_defines``) and the CUDA source has no copy of its own.
ITEM_COLUMNS = ("ITEM_KV_BEGIN", "ITEM_KV_END", "ITEM_REQ_BEGIN", "ITEM_REQ_END", "ITEM_TILE", "ITEM_TILE_M")
ITEM_KV_BEGIN, ITEM_KV_END, ITEM_REQ_BEGIN, ITEM_REQ_END, ITEM_TILE, ITEM_TILE_M = range(len(ITEM_COLUMNS))
ITEM_FIELDS = 8  # padded to 32 bytes: one aligned load per CTA
# ITEM_KV_END of an open item: the item ends where its (one) request's row ends when the kernel runs, at
# ``row * row_stride + seq_len`` of that request, read on the device (``PackPlan.items_at`` on the host). Closed ends
# are >= 1, so the sentinel cannot be a real end. Passed to the kernel with the columns (``item_layout_defines``).
ITEM_OPEN_END = -1

MIN_SPLIT_TOKENS = 256
# The launch's last wave: where it holds at most 1/TAIL_WAVE_DIVISOR of the resident CTAs, the items that make it (the
# last in launch order) are cut TAIL_SPLIT_FACTOR times finer (pieces of at least MIN_SPLIT_TOKENS), so that the step
# does not end on a few CTAs streaming whole items alone. H200, tree c (16 x 16 requests, 1024 shared + 1024 own): the
# last 64 of 2176 CTAs (8 items x 8 KV heads) started at 250 us and ran 28-33 us each, with 88% of the CTA slots idle,
# ~25 us of a 285 us kernel (docs/perf/kernels/2026-12-03-h200-c-phases/). PAT_SGLANG_TAIL_SPLIT=0 turns it off.
TAIL_WAVE_DIVISOR = 4
TAIL_SPLIT_FACTOR = 4
TAIL_SPLIT_ENV = "PAT_SGLANG_TAIL_SPLIT"
MAX_WAVES = 4  # finest split: CTAs for this many resident waves
SPLIT_LADDER = (2.0, 1.41, 1.0, 0.71, 0.5, 0.35, 0.25)  # candidate split lengths, x one wave's split
SPLIT_STEPS_UP = 2  # each whole number of waves: also try split lengths this many coarse steps longer
# The split choice's cost model (H200, d128 bf16, 32/8 heads), in bytes one CTA slot streams in the same time
# (61.5 us per 1000 tokens of 512 B: 1 us ~ 8.3 KB). Each CTA's duration is its tile's fixed cost plus its KV,
# measured per CTA by bench/item_costs.py (16 / 32 / 64 rows: 6.0 / 8.9 / 23.0 us + 54-67 us per 1000 tokens);
# with them the simulated launch picks, of the fixed split lengths timed on 9-12 trees in four runs, one 1.005x the
# fastest on average, 1.06x at worst (bench/split_model_check.py; docs/perf/kernels/2026-11-29-h200-item-costs/).
ITEM_OVERHEAD_SLOT_BYTES = {16: 48 << 10, 32: 72 << 10, 64: 192 << 10, 128: 384 << 10}  # 128 rows: not measured
# Each partial of the request with the most partials, by KV element ("16bit" or "fp8", as MEASURED_ITEM_COSTS' keys):
# the price of cutting finer. Fitted on every candidate split length timed on random and benchmark trees
# (bench/split_regret.py; docs/perf/kernels/2026-12-02-h200-split-regret/): with 16-bit pools 16 KB (~2 us) takes the
# picks' mean regret from 1.029-1.037 to 1.012-1.018 on two sets of trees under five head configs; FP8 pools keep
# 1536 B (~0.2 us, the merge running a chain in turn): no other value or fixed-cost or token-cost scale lowered theirs
# on both sets (their picks 1.033 the fastest candidate).
MERGE_CHAIN_COST_SLOT_BYTES = {"16bit": 16 << 10, "fp8": 1536}
# The same price fitted for one configuration (keyed as MEASURED_ITEM_COSTS), beside its item costs, where it lowered
# the picks' regret on all three measured sets of trees. FP8 64/8 (with its 64-row token cost 303 -> 333, below): mean
# regret 1.043/1.024/1.039 -> 1.034/1.023/1.026 (docs/perf/kernels/2026-12-02-h200-split-regret/ regret, regret2,
# heldout; grid in docs/perf/kernels/2026-12-02-fp8-64x8-chain/), and the benchmark's tree b picks 1920 tokens (its
# fastest timed candidate) instead of 3328 (1.069x).
MEASURED_CHAIN_COSTS: dict[tuple[str, int, int], int] = {("fp8", 128, 8): 8 << 10}
# Per-CTA costs measured for configurations the fit above does not describe: (KV element, head dim, GQA group) -> tile
# m -> (fixed cost, cost per KV token of one KV head), both in slot bytes (SLOT_BYTES_PER_US per microsecond of a CTA;
# ``bench/item_costs.py --heads/--head-dim/--kv-dtype ... --costs`` prints an entry from its fit). A configuration or
# tile m not listed takes the fit above: ITEM_OVERHEAD_SLOT_BYTES and the token's own bytes. FP8 items do not cost
# their bytes at the 16-bit rate (64-row ones convert K and V CTA-wide; 16-row ones read them from the FP8 stage).
# An entry is listed only where it lowered the picks' regret on both measured sets of trees (bench/split_regret.py,
# docs/perf/kernels/2026-12-02-h200-split-regret/): FP8 d256 1.045/1.057 -> 1.018/1.028, FP8 64/8 1.049/1.029 ->
# 1.043/1.024, 16-bit d64 1.035/1.050 -> 1.021/1.027; and 16-bit GQA 7 (Qwen2.5-7B, 28/4) 1.035/1.035 -> 1.014/1.026
# and GQA 5 (Qwen2.5-14B/32B, 40/8) 1.020/1.027 -> 1.012/1.026 (docs/perf/kernels/2026-12-02-h200-oddgqa-costs/); FP8
# GQA 12 (GLM-4.5-Air at TP 2, 48/4) 1.035/1.024 -> 1.021/1.015 and GQA 16 (Qwen3-235B-A22B, 64/4) 1.035/1.022 ->
# 1.017/1.020 (docs/perf/kernels/2026-12-02-h200-widegqa-costs/). The fits for FP8 32/8 d128, 16-bit 64/8, 32/32
# and d256, FP8 GQA 7 and 5 and 16-bit GQA 12 and 16 were measured too and left out (no better on one set or worse
# on both; item-costs/ in those folders).
SLOT_BYTES_PER_US = 8325  # the fit's unit: 512-byte tokens streamed at 61.5 us per 1000 by one CTA slot
MEASURED_ITEM_COSTS: dict[tuple[str, int, int], dict[int, tuple[int, int]]] = {
    ("fp8", 128, 8): {16: (40427, 298), 32: (86016, 443), 64: (159173, 333)},  # 64: 303 fitted, 333 with its chain
    ("fp8", 256, 4): {16: (50498, 296), 32: (114074, 468), 64: (135031, 426)},
    ("16bit", 64, 4): {16: (36024, 343), 32: (58893, 391), 64: (98806, 249)},
    ("16bit", 128, 7): {16: (36142, 444), 32: (108940, 427), 64: (96109, 277)},
    ("16bit", 128, 5): {16: (22080, 469), 32: (77238, 471), 64: (68685, 311)},
    ("fp8", 128, 12): {16: (58853, 286), 32: (174576, 275), 64: (135572, 305)},
    ("fp8", 128, 16): {16: (65366, 294), 32: (155252, 333), 64: (143583, 317)},
}
# A changed batch re-planned from scratch keeps the split length last chosen while its planned KV stays within this
# fraction of the KV it was chosen for (and the length is still a candidate, or still cuts no pack as the no-split
# candidate): one request joining or leaving rarely moves the best length, and the cost model is most of a full plan's
# host time.
SPLIT_KEEP_FRACTION = 1 / 16
# The split search stops simulating candidates once none left could be this fraction cheaper than the best one found
# (``_simulated_costs``: candidates go in the order of a lower bound of their cost). So its choice is predicted at most
# this much slower than the best candidate, at about half the simulations (the bounds sit ~10% below the costs; on
# the Mooncake replay at batch 64 x 4k: 6.5 of 12.5 simulated, predicted regret p50 0, p90 1.1%, max 2.0%). The cost
# model itself picks 1.005x the measured fastest length on average and 1.06x at worst (above), so the tolerance stays
# within its own accuracy.
SPLIT_COST_TOLERANCE = 1 / 16
MAX_ITEMS = 65535  # the forward grid's y dimension
INT32_MAX = int(np.iinfo(np.int32).max)
INT16_MAX = int(np.iinfo(np.int16).max)
INT64_MAX = int(np.iinfo(np.int64).max)
_T = TypeVar("_T")


def item_layout_defines() -> list[str]:
    """NVRTC options carrying the item layout into kernels/pat_decode.cu."""
    return [f"-D{name}={i}" for i, name in enumerate(ITEM_COLUMNS)] + [
        f"-DITEM_FIELDS={ITEM_FIELDS}",
        f"-DITEM_OPEN_END={ITEM_OPEN_END}",
    ]


@dataclass
class PackInfo:
    """Host-side description of one pack, for printing and statistics."""

    nodes: list[int]
    num_tokens: int
    requests: list[int]
    splits: int
    row_blocks: int
    tile_m: int


@dataclass
class PlanStats:
    kv_bytes_planned: int  # KV bytes the items read (all layers' one layer, all KV heads)
    kv_bytes_per_request: int  # KV bytes per-request decode reads
    kv_bytes_unique: int  # each distinct slot once: the floor
    partial_bytes: int  # merge traffic: partial rows written and read back
    num_items: int
    num_partials: int
    max_item_tokens: int = 0  # the longest item's KV tokens when planned (open items at the planned lengths)


class _LazyPacks:
    """``PackPlan.packs`` as a data descriptor: holds a list, or a builder that makes the list on first read.

    ``PackInfo`` objects are host-side only (printing, statistics); building one per pack would cost more than
    the rest of the plan, so ``plan_forest`` hands over a builder and the serving path never pays for it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, obj: object, objtype: type | None = None) -> list[PackInfo] | None:
        if obj is None:
            return None  # the dataclass default: no packs
        value = obj.__dict__[self.attr]
        if isinstance(value, _PackBuilder):
            value = value()
            obj.__dict__[self.attr] = value
        return value

    def __set__(self, obj: object, value: list[PackInfo] | _PackBuilder | None) -> None:
        obj.__dict__[self.attr] = [] if value is None else value


# The tensor made of each plan array that some plan has read as one, by the array's id: the tensor keeps its array
# alive, so an id here is never that of another array
_TENSOR_OF: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


class _PlanArray:
    """A plan's int32 array (``PackPlan.items``, ``item_req``, ``item_dst``, ``merge_indptr``, ``merge_partials``) as a
    data descriptor: it holds the value it is given, the planner's host numpy array or a tensor, and is read as a torch
    tensor, made from the array once (``torch.from_numpy``: the same memory). The decode step's host path reads the
    arrays themselves (``plan_array``): a changed step's plan goes into the CUDA-graph buffers' staging set without a
    tensor made of each array and an array made back of each tensor (eight such calls, ~40 us of a changed step run
    cold on the project's 2-core VM)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name
        self.tensor_attr = "_" + name + "_tensor"

    def __get__(self, obj: object, objtype: type | None = None) -> torch.Tensor:
        if obj is None:
            raise AttributeError(self.attr)  # no class-level value: a dataclass field without a default
        value = obj.__dict__[self.attr]
        if not isinstance(value, np.ndarray):
            return value
        tensor = obj.__dict__.get(self.tensor_attr)
        if tensor is None:
            # one tensor per array, so plans that share an array (a re-made plan keeps its predecessor's) share it
            tensor = _TENSOR_OF.get(id(value))
            if tensor is None:
                tensor = _TENSOR_OF[id(value)] = torch.from_numpy(value)
            obj.__dict__[self.tensor_attr] = tensor
        return tensor

    def __set__(self, obj: object, value: np.ndarray | torch.Tensor) -> None:
        obj.__dict__[self.attr] = value
        obj.__dict__.pop(self.tensor_attr, None)


def plan_array(plan: PackPlan, name: str) -> np.ndarray:
    """The host array of a plan's ``name`` (a ``_PlanArray`` field) without making a tensor of it: the planner's array
    itself, or a host tensor's memory."""
    value = plan.__dict__["_" + name]
    return value if isinstance(value, np.ndarray) else value.numpy()


def same_plan_array(a: PackPlan, b: PackPlan, name: str) -> bool:
    """Whether two plans hold the very same ``name`` array (one plan re-made from the other shares what it keeps)."""
    return a.__dict__["_" + name] is b.__dict__["_" + name]


@dataclass(frozen=True)
class PlanLimits:
    """Capacities a plan must fit (the CUDA-graph static buffers): work items, partial slots, (item, request)
    entries. ``max_entries`` >= the batch size and ``max_items`` >= the batch size guarantee the no-sharing
    fallback fits."""

    max_items: int
    max_partials: int
    max_entries: int


@dataclass
class PackPlan:
    heads: HeadConfig
    num_requests: int
    tile_ms: tuple[int, ...]
    # The plan's arrays (``_PlanArray``: given as host numpy arrays or tensors, read as tensors)
    items: torch.Tensor = _PlanArray()  # type: ignore[assignment]  # int32 [num_items, ITEM_FIELDS]
    slot_table: torch.Tensor  # int32, 1-D: the KV slot of each (row, position); items address it
    item_req: torch.Tensor = _PlanArray()  # type: ignore[assignment]  # int32: request index of each (item, request)
    item_dst: torch.Tensor = _PlanArray()  # type: ignore[assignment]  # int32: partial slot, or -1 = write the output
    merge_indptr: torch.Tensor = _PlanArray()  # type: ignore[assignment]  # int32 [num_requests + 1]
    merge_partials: torch.Tensor = _PlanArray()  # type: ignore[assignment]  # int32: each request's partial slots
    num_partials: int
    max_slot: int | None  # largest KV slot the plan can read (None: the table is SGLang's own req_to_token)
    packs: list[PackInfo] = _LazyPacks()  # type: ignore[assignment]  # built on first read
    stats: PlanStats | None = None
    fallback: str = ""  # "" or why the plan is coarser than asked (limits): "coarser split", "one split", "no sharing"
    regrow: _Regrow | None = field(default=None, repr=False, compare=False)  # see plan_forest(previous=...)
    # Open items (``ITEM_OPEN_END``): the slot table's row stride they are resolved with (None: every item is
    # closed), and how many there are (one per request whose KV ends in its own private leaf).
    row_stride: int | None = None
    num_open: int = 0
    split_tokens: int = 0  # the KV split length the packs were cut with (the cost model's choice, or the caller's)
    # The cost model compared candidate split lengths in this pass (``_split_length``): the planning pass's costliest
    # part, so the backend names it in its slowest step. False when the length was given, kept from last step
    # (SPLIT_KEEP_FRACTION), the only candidate, or the plan was re-made (``plan_forest(previous=...)``).
    split_searched: bool = False
    # The tile rule the items were made by (``TileTable.least_tile_m``), which a re-made plan's new items follow: row
    # blocks of packs of fewer than ``long_pack_tokens`` KV tokens take at least ``least_tile_m`` rows.
    least_tile_m: int = 0
    long_pack_tokens: int = INT64_MAX

    @property
    def num_items(self) -> int:
        return int(self.__dict__["_items"].shape[0])

    def items_at(self, seq_lens: object, rows: object) -> np.ndarray:
        """The items as the kernel resolves them when the batch's requests have lengths ``seq_lens`` and rows
        ``rows`` (per request, host or device tensors or arrays): every open end replaced by its request's
        ``rows[r] * row_stride + seq_lens[r]``. A new int32 array; the plan is not changed. ``ValueError`` if an
        open item would be empty (a length below what the plan was made for)."""
        items = self.items.cpu().numpy().copy()
        if not self.num_open:
            return items
        seq = host_int64(seq_lens)
        row = host_int64(rows)
        if seq.shape[0] < self.num_requests or row.shape[0] < self.num_requests:
            raise ValueError(f"open ends need lengths and rows of {self.num_requests} requests")
        is_open = items[:, ITEM_KV_END] == ITEM_OPEN_END
        req = self.item_req.cpu().numpy()[items[is_open, ITEM_REQ_BEGIN]]
        end = row[req] * self.row_stride + seq[req]
        if (end <= items[is_open, ITEM_KV_BEGIN]).any():
            raise ValueError("a request is shorter than its plan's open item begins: the plan was made for longer")
        items[is_open, ITEM_KV_END] = end
        return items

    def to(self, device: torch.device | str) -> PackPlan:
        """The plan with its tensors on ``device`` (the slot table too, unless it is there already)."""
        moved = {
            name: getattr(self, name).to(device, non_blocking=True)
            for name in ("items", "slot_table", "item_req", "item_dst", "merge_indptr", "merge_partials")
        }
        return PackPlan(
            heads=self.heads,
            num_requests=self.num_requests,
            tile_ms=self.tile_ms,
            num_partials=self.num_partials,
            max_slot=self.max_slot,
            packs=self.__dict__["_packs"],  # keep it lazy
            stats=self.stats,
            fallback=self.fallback,
            regrow=self.regrow,
            row_stride=self.row_stride,
            num_open=self.num_open,
            split_tokens=self.split_tokens,
            split_searched=self.split_searched,
            least_tile_m=self.least_tile_m,
            long_pack_tokens=self.long_pack_tokens,
            **moved,
        )

    def describe(self) -> str:
        lines = [f"{'pack':>4} {'tokens':>7} {'reqs':>5} {'rowblk':>6} {'splits':>6} {'tile_m':>6}"]
        for i, p in enumerate(self.packs):
            lines.append(
                f"{i:>4} {p.num_tokens:>7} {len(p.requests):>5} {p.row_blocks:>6} {p.splits:>6} {p.tile_m:>6}"
            )
        return "\n".join(lines)


def host_int64(x: object) -> np.ndarray:
    """Per-request integers (a host or device tensor, or a sequence) as a host int64 array: a host int64 tensor's own
    memory. The publisher and the backend call it every decode step, so a host tensor goes through one torch call
    (``Tensor.numpy``; ``detach`` and ``cpu`` cost a dispatch each), a device tensor or one that requires grad through
    ``detach().cpu()``."""
    if isinstance(x, torch.Tensor):
        try:
            x = x.numpy()
        except (TypeError, RuntimeError):  # on a device, or requires grad (or not a numpy dtype: raises again below)
            x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False)


# The per-step checks over a batch's rows and lengths below run on every decode step, between two of which the
# scheduler's own work evicts numpy's code and data: each numpy call then costs 3-8 us on the 2-core VM for a loop over
# 256 integers. Where the host core's extension module loads (``host_core.loaded_glue``, ``kernels/host_glue.c``) each
# is one C call; the numpy expressions are the fallback (and answer for arrays it does not take: NotImplemented).


def same_ints(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` for two integer arrays, without its conversions (checked every decode step)."""
    got = host_core.glue_call("same_ints", a, b)
    if got is not NotImplemented:
        return got
    return a.shape == b.shape and bool((a == b).all())


def int_stats(a: np.ndarray) -> tuple[int, int, int] | None:
    """(min, max, sum) of a 1-D integer array as Python ints (the sum as numpy's int64 sum), None when it is empty."""
    got = host_core.glue_call("int_stats", a)
    if got is not NotImplemented:
        return got
    if a.shape[0] == 0:
        return None
    return int(a.min()), int(a.max()), int(a.sum(dtype=np.int64))


def any_above(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a[i] > b[i]`` for some ``i < len(a)`` (``b`` at least as long as ``a``)."""
    got = host_core.glue_call("any_above", a, b)
    if got is not NotImplemented:
        return got
    return bool((a > b[: a.shape[0]]).any())


class BoundShape(NamedTuple):
    """What ``moved_bound``'s node counts need of a configuration (``bound_shape``): the most requests of one row
    block (``_PassRules.reqs_per_block``), KV bytes per token and bytes per merge partial."""

    rows_per_block: int
    token_bytes: int
    partial_bytes: int


def bound_shape(heads: HeadConfig, device: DeviceSpec, tiles: TileTable | None = None) -> BoundShape:
    """The ``BoundShape`` of plans made by ``plan_forest`` for ``heads`` on ``device`` (its default tile table)."""
    rules = _pass_rules(heads, device, tiles or load_tile_table(device.arch))
    return BoundShape(rules.reqs_per_block, rules.tok_bytes, rules.partial_bytes)


def node_blocks(rows: int, tokens: int, shape: BoundShape) -> int:
    """KV tokens every plan reads at least of a radix node of ``tokens`` tokens on ``rows`` requests' paths: once per
    row block, at least ``ceil(rows / rows_per_block)`` of them (0 for no rows)."""
    return tokens * -(-rows // shape.rows_per_block)


def first_node_partials(rows: int, tokens: int, shape: BoundShape) -> int:
    """Bytes every plan moves beyond ``node_blocks`` because ``rows`` requests start at a node (the one under the root)
    of ``tokens`` tokens, where each of them has tokens past its path: of the ``rows``, let ``k`` read the node in packs
    of one request each; those packs read it ``k`` times, of which ``node_blocks`` credits at most ``ceil(k / rpb)``,
    and the other ``rows - k`` read it in a pack of two or more besides their own leaf: two merge partials each. The
    least over ``k`` of ``tokens * (k - ceil(k / rpb)) * token bytes + 2 * (rows - k) * partial bytes``, which is linear
    between ``k = m * rpb + 1`` and ``(m + 1) * rpb``: the least of 0 and those ends."""
    rpb, tb, pb = shape
    best = 2 * pb * rows
    for lo in range(1, rows + 1, rpb):
        for k in (lo, min(lo + rpb - 1, rows)):
            best = min(best, tokens * (k - -(-k // rpb)) * tb + 2 * pb * (rows - k))
    return best


def count_bound(
    refs: dict[tuple[int, int], int], firsts: dict[tuple[int, int], int], shape: BoundShape
) -> tuple[int, int]:
    """(sum of ``node_blocks`` over ``refs``, sum of ``first_node_partials`` over ``firsts``): ``moved_bound``'s node
    terms of a batch, counted afresh from the publisher's node counts ({(node id, tokens): rows}); the publisher keeps
    them up to date as requests come and go (``chain_table._Tally``). One call of ``kernels/host_glue.c``
    ``count_bound`` where it loads."""
    got = host_core.glue_call("count_bound", refs, firsts, *shape)
    if got is not NotImplemented:
        return got
    return (sum(node_blocks(r, t, shape) for (_, t), r in refs.items()),
            sum(first_node_partials(r, t, shape) for (_, t), r in firsts.items()))


def moved_bound(
    blocks: int, partials: int, cached: np.ndarray, seq_lens: np.ndarray, total: int, token_bytes: int
) -> int:
    """A lower bound of the bytes every plan of a batch moves (``PlanStats.kv_bytes_planned + partial_bytes``, what
    ``dispatch.pat_pays`` weighs), before any forest: the dispatch gate declines on it the batches whose plans it would
    decline after planning. ``blocks`` / ``partials``: ``count_bound`` of the batch's radix paths; ``cached``: each real
    request's path length (int64), ``seq_lens`` the batch's lengths (at least as many, real requests first), ``total``
    their sum with the padding.

    Why it bounds every plan: each request's tokens past its path are read at least once (its own leaf); each radix
    node at least once per row block of its requests (``node_blocks``); and where every real request has tokens past
    its path (its own leaf, never packed with another's), requests that share a pack write merge partials
    (``first_node_partials``, counted at each request's first node: none twice). Near the plan's bytes where every
    shared node is its own pack and the packs hold no more KV splits than needed (within 4% on the tests' random trees
    at head dims 64 and 128, 20% at 256's long packs). O(requests): one pass over ``cached``."""
    got = host_core.glue_call("moved_bound", blocks, partials, cached, seq_lens, total, token_bytes)
    if got is not NotImplemented:
        return got
    n = cached.shape[0]
    tokens = total - int(cached.sum()) + blocks
    every_private = bool((seq_lens[:n] > cached).all())
    return tokens * token_bytes + (partials if every_private else 0)


def target_ctas(device: DeviceSpec, tiles: TileTable, heads: HeadConfig) -> int:
    """CTAs the forward launch keeps resident: SMs x the occupancy its variant is built for."""
    return device.sm_count * tiles.min_ctas_per_sm.get(heads.head_dim, device.ctas_per_sm)


def max_split_items(heads: HeadConfig, device: DeviceSpec | None = None, tiles: TileTable | None = None) -> int:
    """Items the KV splits can add to a plan beyond one per pack row block: at the finest split (``MAX_WAVES`` waves of
    ``target_ctas``) the batch's KV is cut into about that many CTAs over the KV heads (``coarse`` can round the split
    length down by up to 1/8, hence the eighth more)."""
    device = device if device is not None else DeviceSpec()
    tiles = tiles if tiles is not None else load_tile_table(device.arch)
    return -(-MAX_WAVES * target_ctas(device, tiles, heads) * 9 // (8 * heads.num_kv_heads))


def plan_forest(
    forest: PrefixForest,
    heads: HeadConfig,
    device: DeviceSpec | None = None,
    tiles: TileTable | None = None,
    min_split_tokens: int = MIN_SPLIT_TOKENS,
    limits: PlanLimits | None = None,
    slot_table: torch.Tensor | None = None,
    previous: PackPlan | None = None,
    row_stride: int | None = None,
    split_tokens: int | None = None,
) -> PackPlan:
    """Pack ``forest`` for one decode step. ``slot_table``: the 1-D int32 table the forest's rows live in (the
    forest's own host table by default, for forests built from slots). ``limits``: capacities the plan must fit.

    ``row_stride``: the forest's rows are rows of a 2-D table this many positions apart (SGLang's ``req_to_token``;
    ``forest.row_base`` = row * row_stride). Then every item that ends where a request's private leaf ends (the last
    KV split of each request's own leaf) gets an open end (``ITEM_OPEN_END``): the kernel ends it at the request's
    length when it runs (``seq_lens[r]``, row ``rows[r]``; ``PackPlan.items_at``), so the plan stays valid while the
    requests grow. Requests that end in a shared node get no open item. Without it every end is closed.

    ``previous``: last step's plan. When ``forest`` is that plan's forest with longer private leaves
    (``PrefixForest.with_lengths``: same structure object) and made with the same arguments, the packs cannot
    change (leaves are always their own packs; shared nodes keep their tokens); if every pack also keeps its
    number of KV splits at last step's split length, the new plan is the old one with its items' KV ranges
    recomputed (a few array ops) and everything else shared: the plan a fresh pass makes of ``forest`` with
    ``split_tokens=previous.split_tokens``. Otherwise it is planned from scratch, keeping the split length the cost
    model last chose while the step's planned KV stays within ``SPLIT_KEEP_FRACTION`` of what it was chosen for and
    the length is still a candidate (or still cuts no pack, as the no-split candidate); else the cost model chooses
    again.

    ``split_tokens``: cut every pack into KV splits of at most this many tokens instead of the planner's choice (for
    benchmarks that measure the split length's effect, ``bench/tile_sweep.py --split-tokens``)."""
    if split_tokens is not None and split_tokens < 1:
        raise ValueError(f"split_tokens must be positive, got {split_tokens}")
    device = device or DeviceSpec()
    tiles = tiles or load_tile_table(device.arch)
    if previous is not None and previous.regrow is not None:
        rg = previous.regrow
        if (
            rg.structure is forest._derived
            and rg.args == (heads, device, tiles, min_split_tokens, limits, row_stride, split_tokens)
            and (slot_table is previous.slot_table or (slot_table is None and forest.slot_table is None))
        ):
            plan = _regrown(previous, forest)
            if plan is not None:
                return plan
    if slot_table is None:
        if forest.slot_table is None:
            raise ValueError("plan_forest needs slot_table: the forest was built from radix paths, not slots")
        table = forest.slot_table
        max_slot: int | None = forest.slot_max  # known when the forest's input check found it (from_flat)
        if max_slot is None:
            max_slot = int(table.max()) if table.shape[0] else -1
        check_max_slot(max_slot)
        slot_table = torch.from_numpy(table.astype(np.int32, copy=False))
    else:
        if slot_table.dim() != 1 or slot_table.dtype != torch.int32:
            raise ValueError(f"slot_table must be a 1-D int32 tensor, got {slot_table.dtype} {tuple(slot_table.shape)}")
        max_slot = None
    if slot_table.shape[0] > INT32_MAX:
        raise ValueError(f"the slot table has {slot_table.shape[0]} entries; items address at most {INT32_MAX}")
    if row_stride is not None and (row_stride < 1 or not _all_multiples(forest.row_base, row_stride)):
        raise ValueError(f"open ends need rows at multiples of row_stride ({row_stride})")
    # Only a first-pass plan can be re-made: a coarsened one could differ from a fresh plan once the leaves grew.
    args = (heads, device, tiles, min_split_tokens, limits, row_stride, split_tokens)
    keep = None  # last chosen split length and the planned KV it was chosen for (SPLIT_KEEP_FRACTION)
    if split_tokens is None and previous is not None and previous.regrow is not None:
        rg = previous.regrow
        if rg.chosen_for_tokens and rg.args == args:
            keep = (rg.split_tokens, rg.chosen_for_tokens)
    plan = _plan(forest, heads, device, tiles, min_split_tokens, limits, slot_table, max_slot, "", row_stride, args,
                 split_tokens, keep)
    if plan is None and split_tokens is not None:  # a length the caller fixed, over the limits: one split per pack
        # (a length the planner chose was already re-chosen among the coarser candidates, the no-split one included:
        # the one-split plan is that candidate's, so it cannot fit either)
        plan = _plan(forest, heads, device, tiles, INT32_MAX, limits, slot_table, max_slot, "one split", row_stride)
    if plan is None:  # still over: no sharing (one item per request, no partials)
        private = PrefixForest.private(forest.request_lengths, forest.row_base)
        plan = _plan(private, heads, device, tiles, INT32_MAX, None, slot_table, max_slot, "no sharing", row_stride)
        if limits is not None and (plan.num_items > limits.max_items or plan.num_requests > limits.max_entries):
            raise ValueError(f"a batch of {plan.num_requests} requests exceeds the plan limits {limits}")
    return plan


def check_max_slot(max_slot: int) -> None:
    """``ValueError`` where a table's largest slot is beyond what the int32 slot table and items hold."""
    if max_slot > INT32_MAX:
        raise ValueError("KV slot index does not fit in int32")


def _plan(
    forest: PrefixForest,
    heads: HeadConfig,
    device: DeviceSpec,
    tiles: TileTable,
    min_split_tokens: int,
    limits: PlanLimits | None,
    slot_table: torch.Tensor,
    max_slot: int | None,
    fallback: str,
    row_stride: int | None,
    regrow_args: tuple = (),
    split_tokens: int | None = None,
    keep: tuple[int, int] | None = None,
) -> PackPlan | None:
    """One planning pass; ``None`` if the plan would exceed ``limits`` (counted before any item is built). Its packs,
    split counts and items in one call of the extension module where it loads and takes the case (``_compiled_pass``),
    else by ``_numpy_pass``: the same arrays either way."""
    rules = _pass_rules(heads, device, tiles)
    passed = _compiled_pass(forest, heads, rules, min_split_tokens, limits, slot_table, row_stride, split_tokens, keep,
                            fallback)
    if passed is NotImplemented:
        passed = _numpy_pass(forest, heads, rules, min_split_tokens, limits, slot_table, row_stride, split_tokens, keep,
                             fallback)
    if passed is None:  # over the limits
        return None
    laid, pack_args, (planned_tokens, split_tokens, chosen_for_tokens, request_tokens, unique_tokens), searched, \
        fallback = passed
    (items, item_req, item_dst, merge_indptr, merge_partials, num_partials, item_pack, item_split, open_mask,
     max_item_tokens, num_open) = laid
    if items.shape[0] > MAX_ITEMS:
        raise ValueError(f"plan has {items.shape[0]} work items; the forward grid holds at most {MAX_ITEMS}")
    stats = PlanStats(
        kv_bytes_planned=planned_tokens * rules.tok_bytes,
        kv_bytes_per_request=request_tokens * rules.tok_bytes,
        kv_bytes_unique=unique_tokens * rules.tok_bytes,
        partial_bytes=num_partials * rules.partial_bytes,
        num_items=items.shape[0],
        num_partials=num_partials,
        max_item_tokens=max_item_tokens,
    )
    pack_node, top, pack_tokens, pack_ptr, pack_req, pack_blocks, kv_offset, splits = pack_args
    builder_args = (forest, pack_node, top, pack_tokens, pack_ptr, pack_req, splits, pack_blocks, rules.tile_m_of_size,
                    rules.reqs_per_block, rules.long_tokens)
    regrow = _Regrow(
        structure=forest._derived, pack_node=pack_node, pack_tokens=pack_tokens, kv_offset=kv_offset,
        pack_blocks=pack_blocks, splits=splits, item_pack=item_pack, item_split=item_split, tok=forest.tok,
        split_tokens=split_tokens, chosen_for_tokens=chosen_for_tokens, pack_args=builder_args,
        open_mask=open_mask, args=regrow_args,
    )
    return PackPlan(
        heads=heads,
        num_requests=forest.num_requests,
        tile_ms=tiles.tile_ms,
        items=items,
        slot_table=slot_table,
        item_req=item_req,
        item_dst=item_dst,
        merge_indptr=merge_indptr,
        merge_partials=merge_partials,
        num_partials=num_partials,
        max_slot=max_slot,
        packs=_PackBuilder(*builder_args),
        stats=stats,
        fallback=fallback,
        regrow=regrow,
        row_stride=row_stride,
        num_open=num_open,
        split_tokens=split_tokens,
        split_searched=searched,
        least_tile_m=rules.least_m,
        long_pack_tokens=rules.long_tokens,
    )


class _PassRules(NamedTuple):
    """A planning pass's numbers from the heads, tile table and device: the same for every pass of a configuration
    (``_pass_rules``)."""

    group: int  # q heads per KV head
    num_kv_heads: int
    reqs_per_block: int  # requests of a pack's largest row block
    least_m: int  # TileTable.least_tile_m: the least tile m of a short pack's row blocks
    long_tokens: int  # the KV tokens from which a pack is long (INT64_MAX: none)
    tile_ms: tuple[int, ...]  # the tile table's
    tile_of_size: np.ndarray  # _tile_lut's tables
    tile_m_of_size: np.ndarray
    tok_bytes: int  # kv_token_bytes
    partial_bytes: int
    target: int  # target_ctas


_LAST_RULES: list[tuple[HeadConfig, DeviceSpec, TileTable, _PassRules] | None] = [None]


def _pass_rules(heads: HeadConfig, device: DeviceSpec, tiles: TileTable) -> _PassRules:
    """``_PassRules`` of a configuration, kept while the planner is handed the same heads, device and tile table
    objects (a step planner's every pass; tile tables hold dicts and are not hashable), made anew otherwise."""
    last = _LAST_RULES[0]
    if last is not None and last[0] is heads and last[1] is device and last[2] is tiles:
        return last[3]
    group, num_kv_heads, tok_bytes, partial_bytes = _head_numbers(heads)
    reqs_per_block = max(1, tiles.max_m // group)
    least_m, long_tokens = tile_rule(tiles, heads)
    tile_of_size, tile_m_of_size = _tile_lut(tiles.tile_ms, group, reqs_per_block, least_m)
    rules = _PassRules(group, num_kv_heads, reqs_per_block, least_m, long_tokens, tiles.tile_ms, tile_of_size,
                       tile_m_of_size, tok_bytes, partial_bytes, target_ctas(device, tiles, heads))
    _LAST_RULES[0] = (heads, device, tiles, rules)
    return rules


# What a planning pass hands ``_plan``: (plan_items' tuple, (pack_node, top, pack_tokens, pack_ptr, pack_req,
# pack_blocks, kv_offset, splits), (planned tokens, split length, planned tokens it was chosen for, per-request tokens,
# unique tokens), split searched, fallback); None over the limits.
_Passed = tuple[tuple, tuple, tuple[int, int, int, int, int], bool, str] | None


_LAST_COSTS: list[tuple | None] = [None]  # (rules, the two tables, the costs) of the last _search_costs


def _search_costs(heads: HeadConfig, rules: _PassRules) -> tuple[np.ndarray, np.ndarray, float]:
    """The split search's cost model for this configuration: ``_block_costs``' tables and ``_chain_cost``, read at each
    pass from ``MEASURED_ITEM_COSTS`` / ``MEASURED_CHAIN_COSTS`` (tests and fits replace them)."""
    last = _LAST_COSTS[0]
    if last is not None and last[0] is rules and last[1] is MEASURED_ITEM_COSTS and last[2] is MEASURED_CHAIN_COSTS:
        return last[3]  # a step planner's every pass: the same rules and tables (replaced, never edited, when refitted)
    head_token_bytes = rules.tok_bytes // rules.num_kv_heads
    token_costs, fixed_costs = _block_costs(rules.tile_ms, rules.group, rules.reqs_per_block, head_token_bytes,
                                            _measured_costs(heads), rules.least_m)
    costs = (token_costs, fixed_costs, _chain_cost(heads))
    _LAST_COSTS[0] = (rules, MEASURED_ITEM_COSTS, MEASURED_CHAIN_COSTS, costs)
    return costs


def _pass_constants() -> tuple:
    """The planner's constants ``kernels/host_pass.c`` follows, read at each pass (tests and sweeps set some)."""
    return (SPLIT_LADDER, MAX_WAVES, SPLIT_STEPS_UP, SPLIT_KEEP_FRACTION, TAIL_WAVE_DIVISOR, TAIL_SPLIT_FACTOR,
            MIN_SPLIT_TOKENS, os.environ.get(TAIL_SPLIT_ENV) != "0", SPLIT_COST_TOLERANCE, RUN_BATCH_ITEMS)


# The split searches being recorded (``recorded_searches``), or None
_SEARCH_LOG: list[tuple] | None = None


@contextlib.contextmanager
def recorded_searches() -> Iterator[list[tuple]]:
    """The split searches the planning passes make while in the block: per search (candidates, pack_tokens,
    pack_blocks, pack_req, pack_req_count, num_requests), as ``_split_length`` gets them (benchmarks and tests read
    the candidate lengths of a plan from them). The passes run in numpy meanwhile: the compiled pass searches in C,
    with the same results (``tests/test_plan_pass.py``)."""
    global _SEARCH_LOG
    outer, _SEARCH_LOG = _SEARCH_LOG, []
    try:
        yield _SEARCH_LOG
    finally:
        _SEARCH_LOG = outer


def _compiled_pass(
    forest: PrefixForest, heads: HeadConfig, rules: _PassRules, min_split_tokens: int, limits: PlanLimits | None,
    slot_table: torch.Tensor, row_stride: int | None, split_tokens: int | None, keep: tuple[int, int] | None,
    fallback: str,
) -> _Passed | object:
    """The pass in one call of the extension module (``kernels/host_pass.c``, the split search of
    ``host_simulate.c``, then ``host_items.c``), or NotImplemented: no module, or a case it leaves to ``_numpy_pass``
    (a split search over packs that are all alike, arrays it does not take)."""
    glue = host_core.loaded_glue()
    if glue is None or _SEARCH_LOG is not None:
        return NotImplemented
    fa = forest
    got = glue.plan_pass(
        fa.q, fa.tok, fa.parent, fa.start, fa.req_ptr, fa.req32, fa.row_base, fa.request_lengths, rules.reqs_per_block,
        rules.tok_bytes, rules.partial_bytes, rules.num_kv_heads, rules.target, min_split_tokens, keep, split_tokens,
        rules.long_tokens, None if limits is None else (limits.max_items, limits.max_partials, limits.max_entries),
        row_stride is not None, slot_table.shape[0], rules.tile_of_size, rules.tile_m_of_size, _pass_constants(),
        ITEM_FIELDS, *_search_costs(heads, rules),
    )
    if got is None or got is NotImplemented:
        return got
    laid, (pack_node, top, pack_tokens, pack_ptr, pack_req, _, pack_blocks, kv_offset, splits), numbers = got
    *numbers, searched, coarser = numbers
    return laid, (pack_node, top, pack_tokens, pack_ptr, pack_req, pack_blocks, kv_offset, splits), tuple(numbers), \
        searched, "coarser split" if coarser else fallback


def _numpy_pass(
    forest: PrefixForest, heads: HeadConfig, rules: _PassRules, min_split_tokens: int, limits: PlanLimits | None,
    slot_table: torch.Tensor, row_stride: int | None, split_tokens: int | None, keep: tuple[int, int] | None,
    fallback: str,
) -> _Passed:
    """The pass in numpy, with the compiled pieces where they load: the reference of ``_compiled_pass``, and the
    pass wherever that one does not serve."""
    fa = forest
    reqs_per_block, num_kv_heads, target = rules.reqs_per_block, rules.num_kv_heads, rules.target
    num_requests = forest.num_requests
    node_kv_begin = forest.kv_begin()

    # --- packs, in node order: every packed node, and every inlined node that some requests end at
    tokens, top, packed = _choose_packs(fa, reqs_per_block, rules.tok_bytes, rules.partial_bytes)
    if top is None:  # nothing inlined: every node is its own pack, with all its requests
        pack_node = None
        pack_req = fa.req32
        pack_ptr = fa.req_ptr
        pack_req_count = fa.q
        pack_tokens = fa.tok
        kv_offset = node_kv_begin
    else:
        pack_node = np.flatnonzero(packed | (fa.ending > 0))
        pack_req = fa.req32[packed[fa.entry_node] | fa.ends_here]
        pack_req_count = np.where(packed, fa.q, fa.ending)[pack_node]
        pack_ptr = _indptr(pack_req_count)
        pack_tokens = tokens[pack_node]
        # The pack's range ends where its node ends and reaches back over its inlined ancestors.
        kv_offset = node_kv_begin[pack_node] + fa.tok[pack_node] - pack_tokens
    # (row blocks, then one split length for the whole step: planned_tokens are the KV tokens the items read before
    # splitting)
    pack_blocks, kv_limit, planned_tokens, longest = _pack_numbers(pack_tokens, kv_offset, pack_req_count,
                                                                   reqs_per_block)
    if kv_limit > slot_table.shape[0]:
        raise ValueError(f"the forest reads slot-table position {kv_limit - 1}, the table has {slot_table.shape[0]}")

    def search(candidates: list[int]) -> int:  # the cost model's pick among these lengths (only when searching)
        return _split_length(candidates, pack_tokens, pack_blocks, pack_req, pack_req_count, num_requests, num_kv_heads,
                             target, *_search_costs(heads, rules), rules.long_tokens)

    chosen_for_tokens = 0
    searched = False
    if split_tokens is None:
        chosen_for_tokens = planned_tokens
        kept = keep is not None and abs(planned_tokens - keep[1]) <= SPLIT_KEEP_FRACTION * keep[1]
        # A kept length that still cuts nothing cuts the packs as the no-split candidate does (the same plan), though
        # that candidate's length moves with the longest pack; only a kept length that cuts needs the candidates.
        candidates = None if kept and keep[0] >= longest else _split_candidates(
            longest, planned_tokens, num_kv_heads, target, min_split_tokens)
        if kept and (candidates is None or keep[0] in candidates):
            split_tokens, chosen_for_tokens = keep
        else:
            searched = len(candidates) > 1
            split_tokens = search(candidates)
    # each row block of a pack has its splits (the items); each request sits in one row block of its pack (the entries)
    splits, num_items, num_entries = _split_numbers(pack_tokens, split_tokens, pack_blocks, pack_req_count)
    if chosen_for_tokens and limits is not None and not _fits(limits, splits, num_items, num_entries, pack_req,
                                                              pack_req_count, num_requests):
        # The chosen length's plan would overflow the buffers: choose again among the coarser candidates whose plans
        # fit (before "one split", which cuts no pack at all: a batch of 64 at GQA 7 with a 4k shared prompt needs
        # 832 partial slots at its pick, 768 one candidate up, and its one-split plan ran 1.05x fa3's step).
        if candidates is None:
            candidates = _split_candidates(longest, planned_tokens, num_kv_heads, target, min_split_tokens)
        fitting = [c for c in candidates if c > split_tokens and _fits(
            limits, *_split_numbers(pack_tokens, c, pack_blocks, pack_req_count), pack_req, pack_req_count,
            num_requests)]
        if fitting:
            fallback = "coarser split"
            searched = searched or len(fitting) > 1
            split_tokens = search(fitting)
            splits, num_items, num_entries = _split_numbers(pack_tokens, split_tokens, pack_blocks, pack_req_count)
    tail = _tail_split(splits, num_items, pack_tokens, pack_blocks, num_kv_heads, target)
    if tail is not None:
        t_items, t_entries = int(tail @ pack_blocks), int(tail @ pack_req_count)
        if limits is None or _fits(limits, tail, t_items, t_entries, pack_req, pack_req_count, num_requests):
            splits, num_items, num_entries = tail, t_items, t_entries
    # Open ends: the last split of a pack whose node has one request (in canonical form, that request's private leaf:
    # its range ends where the request's row ends).
    leaf_pack = None if row_stride is None else (fa.q if pack_node is None else fa.q[pack_node]) == 1
    if limits is not None and (num_items > limits.max_items or num_entries > limits.max_entries):
        return None
    core = host_core.loaded()
    if core is not None:  # the same arrays in one call (kernels/host_items.c), sized by the counts
        laid = core.plan_items(pack_tokens, kv_offset, pack_req_count, pack_req, splits, reqs_per_block,
                               rules.tile_of_size, rules.tile_m_of_size, rules.long_tokens, leaf_pack, num_requests,
                               num_items, num_entries, None if limits is None else limits.max_partials, ITEM_FIELDS)
    else:
        laid = _plan_items(pack_tokens, kv_offset, pack_req_count, pack_ptr, pack_req, pack_blocks, splits,
                           reqs_per_block, rules.tile_of_size, rules.tile_m_of_size, rules.long_tokens, leaf_pack,
                           num_requests, limits, len(rules.tile_ms), kv_limit)
    if laid is None:  # over the limits
        return None
    numbers = (planned_tokens, split_tokens, chosen_for_tokens, fa.request_tokens(), fa.unique_tokens())
    return laid, (pack_node, top, pack_tokens, pack_ptr, pack_req, pack_blocks, kv_offset, splits), numbers, \
        searched, fallback


def tile_rule(tiles: TileTable, heads: HeadConfig) -> tuple[int, int]:
    """(least tile m, the KV tokens from which a pack is long: ``INT64_MAX`` where none is) of ``heads``' row blocks
    under ``tiles`` (``TileTable.least_tile_m``)."""
    least_m, long_tokens = tiles.least_tile_m(heads.head_dim, heads.kv_fp8)
    return least_m, INT64_MAX if long_tokens is None else long_tokens


def _plan_items(
    pack_tokens: np.ndarray,
    kv_offset: np.ndarray,
    pack_req_count: np.ndarray,
    pack_ptr: np.ndarray,
    pack_req: np.ndarray,
    pack_blocks: np.ndarray,
    splits: np.ndarray,
    reqs_per_block: int,
    tile_of_size: np.ndarray,
    tile_m_of_size: np.ndarray,
    long_tokens: int,
    leaf_pack: np.ndarray | None,
    num_requests: int,
    limits: PlanLimits | None,
    num_tiles: int,
    kv_limit: int,
) -> tuple | None:
    """The items of packs cut into row blocks and ``splits`` KV splits, in numpy: (items, item_req, item_dst,
    merge_indptr, merge_partials, num_partials, item_pack, item_split, open_mask, the longest item's tokens, open
    items); ``None`` if they would exceed ``limits`` (counted before any item is built). ``tile_of_size`` /
    ``tile_m_of_size``: ``_tile_lut``'s, a block of a pack of ``long_tokens`` or more at ``long_offset``. ``leaf_pack``:
    per pack, its last split gets an open end (None: no open ends). The compiled version (``host_core``,
    ``kernels/host_items.c``) makes the same arrays in one call."""
    num_packs = pack_tokens.shape[0]
    one_split = int(splits.max()) == 1
    num_blocks = int(pack_blocks.sum())
    if num_blocks == num_packs:
        block_pack = None  # block i is pack i
        block_start = pack_ptr[:-1]
        block_size = pack_req_count
    else:  # full blocks, then the rest; blocks tile each pack's requests in order
        block_pack = np.arange(num_packs).repeat(pack_blocks)
        block_size = np.full(num_blocks, reqs_per_block)
        block_size[pack_blocks.cumsum() - 1] = pack_req_count - (pack_blocks - 1) * reqs_per_block
        block_start = _starts(block_size)
    # the smallest tile that holds the block's query rows (in a short pack, at least the least tile m)
    block_lut = block_size + long_offset(pack_tokens if block_pack is None else pack_tokens[block_pack], long_tokens,
                                         reqs_per_block)
    block_tile = tile_of_size[block_lut]

    # --- partial slots: a request with one partial in the whole plan writes the output directly
    if one_split:
        partials_of = np.bincount(pack_req, minlength=num_requests)
    else:
        weights = splits.repeat(pack_req_count).astype(np.float64)
        partials_of = np.bincount(pack_req, weights=weights, minlength=num_requests).astype(np.int64)
    block_items = splits if block_pack is None else splits[block_pack]
    num_items = int(block_items.sum())
    num_entries = int(block_items @ block_size)
    if limits is not None:
        num_partials = num_entries - int((partials_of == 1).sum())
        if num_items > limits.max_items or num_partials > limits.max_partials or num_entries > limits.max_entries:
            return None
    if num_items > MAX_ITEMS:
        raise ValueError(f"plan has {num_items} work items; the forward grid holds at most {MAX_ITEMS}")

    # --- items: row blocks x KV splits
    if one_split:
        item_block = None  # item i is block i
        kv_begin = kv_offset if block_pack is None else kv_offset[block_pack]
        kv_len = pack_tokens if block_pack is None else pack_tokens[block_pack]
        item_tile = block_tile
    else:
        item_block = np.arange(num_blocks).repeat(block_items)
        split_idx = np.arange(num_items) - _starts(block_items).repeat(block_items)
        item_pack = item_block if block_pack is None else block_pack[item_block]
        n_tok = pack_tokens[item_pack]
        n_split = splits[item_pack]
        base = kv_offset[item_pack]
        kv_begin = base + (n_tok * split_idx) // n_split
        kv_len = base + (n_tok * (split_idx + 1)) // n_split - kv_begin
        item_tile = block_tile[item_block]
    # Longest KV first: the one launch schedules CTAs in order, so long items start early and the tail is
    # short (largest-processing-time-first). Ties: the larger tile first (more query rows: more work per KV
    # token; last, such items were the tail of equal-length splits, bench/tile_sweep.py case b), then KV begin,
    # then row block (items are generated in block order and the sort is stable).
    order = _item_order(kv_len, item_tile, kv_begin, num_tiles, kv_limit)
    item_block = order if item_block is None else item_block[order]
    item_tile = item_tile[order]
    kv_begin = kv_begin[order]
    sizes = block_size[item_block]
    req_end = sizes.cumsum()

    if one_split:
        item_pack = item_block if block_pack is None else block_pack[item_block]
        item_split = np.zeros(num_items, dtype=np.int64)
    else:
        item_pack = item_pack[order]
        item_split = split_idx[order]
    items = np.zeros((num_items, ITEM_FIELDS), dtype=np.int32)
    items[:, ITEM_KV_BEGIN] = kv_begin
    items[:, ITEM_KV_END] = kv_begin + kv_len[order]
    open_mask = None
    if leaf_pack is not None:
        open_mask = leaf_pack[item_pack] & (item_split == splits[item_pack] - 1)
        items[:, ITEM_KV_END][open_mask] = ITEM_OPEN_END  # (through the column view: half the cost)
    items[:, ITEM_REQ_BEGIN] = req_end - sizes
    items[:, ITEM_REQ_END] = req_end
    items[:, ITEM_TILE] = item_tile
    items[:, ITEM_TILE_M] = tile_m_of_size[block_lut[item_block]]
    item_req = pack_req[_ranges(block_start[item_block], sizes, req_end)]

    item_dst, merge_indptr, merge_partials, num_partials = _partial_slots(item_req, partials_of, num_requests)
    return (items, item_req, item_dst, merge_indptr, merge_partials, num_partials, item_pack, item_split, open_mask,
            int(kv_len.max()), 0 if open_mask is None else int(open_mask.sum()))


def _partial_slots(
    item_req: np.ndarray, partials_of: np.ndarray, num_requests: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(item_dst, merge_indptr, merge_partials, num_partials) of the entries ``item_req`` (in item order), where
    request ``r`` has ``partials_of[r]`` >= 1 entries. Partial slots are numbered in item_req order; each request
    merges its own in the order they were handed out; a request with one entry writes the output directly. The two
    uniform cases are read off the requests."""
    if int(partials_of.min()) > 1:  # every entry has a partial slot: slot i is entry i
        num_partials = item_req.shape[0]
        item_dst = np.arange(num_partials, dtype=np.int32)
        merge_indptr = np.zeros(num_requests + 1, dtype=np.int32)
        merge_indptr[1:] = partials_of.cumsum()
        merge_partials = _stable_argsort(item_req, num_requests).astype(np.int32)
    elif int(partials_of.max()) <= 1:  # every request has one partial: all write the output directly
        num_partials = 0
        item_dst = np.full(item_req.shape[0], -1, dtype=np.int32)
        merge_indptr = np.zeros(num_requests + 1, dtype=np.int32)
        merge_partials = np.zeros(0, dtype=np.int32)
    else:
        multi = partials_of[item_req] > 1
        slot_ids = multi.cumsum() - 1
        num_partials = int(slot_ids[-1]) + 1
        item_dst = np.where(multi, slot_ids, -1).astype(np.int32)
        merge_indptr, merge_partials = _merge_map(item_req, item_dst, num_requests)
    return item_dst, merge_indptr, merge_partials, num_partials


def _merge_map(item_req: np.ndarray, item_dst: np.ndarray, num_requests: int) -> tuple[np.ndarray, np.ndarray]:
    """(merge_indptr, merge_partials) of the entries ``item_req`` / ``item_dst`` (in item order; -1: the entry writes
    the output directly): each request's partial slots, in the order its entries come."""
    merge_indptr = np.zeros(num_requests + 1, dtype=np.int32)
    has = item_dst >= 0
    merge_req = item_req[has]
    np.cumsum(np.bincount(merge_req, minlength=num_requests), out=merge_indptr[1:])
    return merge_indptr, item_dst[has][_stable_argsort(merge_req, num_requests)].astype(np.int32)


@dataclass(eq=False)
class _Regrow:
    """What re-making a plan for the same forest structure with longer private leaves needs (``_regrown``)."""

    structure: dict  # the forest's structure (PrefixForest._derived), shared by with_lengths
    pack_node: np.ndarray | None  # node of each pack (None: pack i is node i)
    pack_tokens: np.ndarray
    kv_offset: np.ndarray  # slot-table position of each pack's first token: unchanged when leaves grow
    pack_blocks: np.ndarray
    splits: np.ndarray
    item_pack: np.ndarray  # per item (plan order): its pack and split index
    item_split: np.ndarray
    tok: np.ndarray  # the forest's node tokens when planned
    split_tokens: int  # the split length the packs were cut with (kept while every pack keeps its split count)
    chosen_for_tokens: int  # planned KV tokens when the cost model chose split_tokens (0: given, not chosen)
    pack_args: tuple  # _PackBuilder's arguments (``PackPlan.packs`` on demand)
    open_mask: np.ndarray | None  # per item (plan order): its end is open (None: a plan without open ends)
    args: tuple = ()  # plan_forest's arguments it was made with; () for a coarsened plan (never re-made)


def _regrown(previous: PackPlan, forest: PrefixForest) -> PackPlan | None:
    """``previous`` re-made for ``forest`` (its forest with longer leaves), or None if a pack's split count
    changes (then the caller plans from scratch). Items keep their order and request lists; their KV ranges are
    recomputed exactly as ``_plan`` makes them. None too where a pack grows long (``long_pack_tokens``)."""
    rg = previous.regrow
    grown = forest.tok - rg.tok
    pack_tokens = rg.pack_tokens + (grown if rg.pack_node is None else grown[rg.pack_node])
    planned_tokens = int(pack_tokens @ rg.pack_blocks)
    heads = previous.heads
    splits = _split_counts(pack_tokens, rg.split_tokens)
    # the last wave cut as _plan cuts it; where that cut is new, whether it fits the limits is not known here: planned
    # afresh (as when a count changes)
    heads, device, tiles = rg.args[:3]
    tail = _tail_split(splits, int(splits @ rg.pack_blocks), pack_tokens, rg.pack_blocks, heads.num_kv_heads,
                       target_ctas(device, tiles, heads))
    if tail is not None:
        splits = tail
    if not np.array_equal(splits, rg.splits):
        return None
    long_tokens = previous.long_pack_tokens
    if long_tokens != INT64_MAX and not np.array_equal(rg.pack_tokens >= long_tokens, pack_tokens >= long_tokens):
        return None  # a pack grew long: its row blocks take another tile (as a count change, planned afresh)
    n_tok = pack_tokens[rg.item_pack]
    base = rg.kv_offset[rg.item_pack]
    items = plan_array(previous, "items").copy()
    if int(splits.max()) == 1:
        items[:, ITEM_KV_BEGIN] = base
        items[:, ITEM_KV_END] = base + n_tok
    else:
        n_split = splits[rg.item_pack]
        items[:, ITEM_KV_BEGIN] = base + (n_tok * rg.item_split) // n_split
        items[:, ITEM_KV_END] = base + (n_tok * (rg.item_split + 1)) // n_split
    max_item_tokens = int((items[:, ITEM_KV_END] - items[:, ITEM_KV_BEGIN]).max())
    if rg.open_mask is not None:
        items[rg.open_mask, ITEM_KV_END] = ITEM_OPEN_END
    tok_bytes = _head_numbers(heads)[2]
    stats = copy_with(
        previous.stats,
        kv_bytes_planned=planned_tokens * tok_bytes,
        kv_bytes_per_request=forest.request_tokens() * tok_bytes,
        kv_bytes_unique=forest.unique_tokens() * tok_bytes,
        max_item_tokens=max_item_tokens,
    )
    pack_args = (forest, *rg.pack_args[1:3], pack_tokens, *rg.pack_args[4:])
    regrow = copy_with(rg, pack_tokens=pack_tokens, tok=forest.tok, pack_args=pack_args)
    return copy_with(previous, items=items, stats=stats, packs=_PackBuilder(*pack_args),
                      regrow=regrow, split_searched=False)


def kv_token_bytes(heads: HeadConfig) -> int:
    """K and V bytes of one token over all KV heads of one layer (``HeadConfig.kv_token_bytes``, cached)."""
    return _head_numbers(heads)[2]


def remade_plan(
    previous: PackPlan,
    old_index: np.ndarray,
    rows: np.ndarray,
    seq_lens: np.ndarray,
    unique_tokens: int,
    limits: PlanLimits | None = None,
    planned_tokens: tuple[int, int] = (0, INT64_MAX),
) -> PackPlan | None:
    """``previous`` re-made for another batch over the same slot table: request ``r`` of the new batch (row
    ``rows[r]``, length ``seq_lens[r]``) is request ``old_index[r]`` of ``previous``, or new (-1: a joiner, padding
    included). A new ``PackPlan``; ``None`` where it would not fit ``limits``, would read a number of KV tokens outside
    ``planned_tokens`` (lo, hi) (the caller's quality bounds, checked before the new plan's arrays are made), or where
    ``previous`` cannot be re-made (no open ends, a request not ending in an open item, a kept request shorter than its
    open item begins).

    Kept requests keep their entries in ``previous``'s items, each item re-pointed to the row of its first kept
    request: a shared item reads its KV through one member's row, and a request that left may have handed its row to
    a joiner already (every member holds the same slots at the item's positions, so any member's row reads the same
    KV). Items left with no request go; the rest keep their launch order (longest first when planned; their open ends
    have grown alike since). A kept request keeps all of its entries, so it keeps writing the output directly or
    through partials as before: its partial slots are renumbered over the slots still used. Each joiner gets its whole
    row as private items cut at ``previous.split_tokens`` as ``_plan`` cuts a pack (``_joiner_items``), the last one
    open, launched first (cut at the split length, they are about as long as the plan's longest items). A joiner shares
    nothing in this plan, so it reads again what it could share: the caller bounds that (``kv_bytes_planned -
    kv_bytes_unique`` against the full plan it started from). ``unique_tokens``: the new batch's distinct KV tokens
    (``stats.kv_bytes_unique``). Compiled (``kernels/host_remade.c``) where the host extension module loads; else
    numpy over the items and entries, Python per joiner item (the reference the tests compare it with). No ``packs``
    (``PackInfo`` are for printing: none here), no ``regrow``."""
    stride = previous.row_stride
    num_requests = rows.shape[0]
    split = previous.split_tokens
    if stride is None or previous.num_open != previous.num_requests or split < 1 or not num_requests:
        return None
    items = plan_array(previous, "items")
    group = _head_numbers(previous.heads)[0]
    tile_ms = previous.tile_ms
    rpb = max(1, tile_ms[-1] // group)
    tile_of_size, tile_m_of_size = _tile_lut(tile_ms, group, rpb, previous.least_tile_m)
    long_tokens = previous.long_pack_tokens
    # Compiled (kernels/host_remade.c) where the extension module loads: the same arrays in one call; below, numpy
    got = host_core.glue_call(
        "remade_items", items, plan_array(previous, "item_req"), plan_array(previous, "item_dst"),
        previous.num_requests, previous.num_partials, old_index, rows, seq_lens, stride, split, tile_of_size,
        tile_m_of_size, long_tokens, planned_tokens[0], planned_tokens[1], *(_NO_LIMITS if limits is None else
                                                 (limits.max_items, limits.max_partials, limits.max_entries)))
    if got is None:
        return None
    if got is not NotImplemented:
        out, item_req, item_dst, merge_indptr, merge_partials, num_partials, planned, longest = got
        return _remade(previous, num_requests, seq_lens, unique_tokens, out, item_req, item_dst, merge_indptr,
                       merge_partials, num_partials, planned, longest)
    stays = old_index >= 0
    survivors = np.flatnonzero(stays)
    new_of_old = np.full(previous.num_requests, -1, dtype=np.int64)
    new_of_old[old_index[survivors]] = survivors

    # kept entries, grouped by item (a plan's entries follow its items), and the items that keep one or more
    entry_new = new_of_old[plan_array(previous, "item_req")]
    keep = entry_new >= 0
    kept_count = np.add.reduceat(keep.view(np.int8), items[:, ITEM_REQ_BEGIN], dtype=np.int64)  # items hold >= 1
    live = kept_count > 0
    kept_req = entry_new[keep]
    kept_size = kept_count[live]
    req_end = kept_size.cumsum()
    kept_first = kept_req[req_end - kept_size]
    kept = items[live]  # a copy: the new plan's rows of the kept items
    begin = kept[:, ITEM_KV_BEGIN].astype(np.int64)
    end = kept[:, ITEM_KV_END]
    is_open = end == ITEM_OPEN_END
    row_begin = begin // stride * stride
    kv_len = np.where(is_open, seq_lens[kept_first] + row_begin - begin, end - begin)
    # the KV it reads (a joiner reads its whole row), checked before the partials' and joiners' arrays are made
    joiners = np.flatnonzero(~stays)
    planned = int(kv_len.sum()) + int(seq_lens[joiners].sum())
    if not planned_tokens[0] <= planned <= planned_tokens[1] or int(kv_len.min(initial=1)) < 1:
        return None

    # partial slots of the kept entries, renumbered over those still used; the joiners' come after them
    kept_dst = plan_array(previous, "item_dst")[keep].astype(np.int64)
    used = np.zeros(previous.num_partials + 1, dtype=np.int64)
    used[kept_dst] = 1  # (-1, a direct write, marks the spare last element)
    new_slot = used[:-1].cumsum() - 1
    num_kept_slots = int(new_slot[-1]) + 1 if new_slot.shape[0] else 0
    kept_dst = np.where(kept_dst >= 0, new_slot[kept_dst], -1)

    # a joiner's row is its own pack of one request: long from long_tokens on
    join_lut = long_offset(seq_lens[joiners], long_tokens, rpb) + 1
    join_tile = (tile_of_size[join_lut], tile_m_of_size[join_lut])
    joined, join_req, join_dst, join_tokens = _joiner_items(
        joiners, rows, seq_lens, stride, split, num_kept_slots, join_tile)
    num_join = len(join_req)
    num_items = num_join + kept.shape[0]
    num_entries = num_join + kept_req.shape[0]
    num_partials = num_kept_slots + sum(d >= 0 for d in join_dst)
    if limits is not None and (
        num_items > limits.max_items or num_partials > limits.max_partials or num_entries > limits.max_entries
    ):
        return None
    if num_items > MAX_ITEMS:
        return None

    shift = rows[kept_first] * stride - row_begin  # to the first kept member's row
    kept[:, ITEM_KV_BEGIN] += shift
    np.add(end, shift, out=end, where=~is_open, casting="same_kind")
    # a kept item stays in its half of the tile tables: one below the least tile m of its rows was a long pack's
    # (where both halves agree, the short half's is the same tile)
    prev_size = kept[:, ITEM_REQ_END].astype(np.int64) - kept[:, ITEM_REQ_BEGIN]
    was_long = kept[:, ITEM_TILE_M] < tile_m_of_size[prev_size]
    kept_lut = kept_size + was_long * (rpb + 1)
    kept[:, ITEM_REQ_BEGIN] = req_end - kept_size + num_join
    kept[:, ITEM_REQ_END] = req_end + num_join
    kept[:, ITEM_TILE] = tile_of_size[kept_lut]
    kept[:, ITEM_TILE_M] = tile_m_of_size[kept_lut]
    out = np.concatenate([joined, kept]) if num_join else kept
    item_req = np.concatenate([np.array(join_req, dtype=np.int64), kept_req])
    item_dst = np.concatenate([np.array(join_dst, dtype=np.int64), kept_dst])
    merge_indptr, merge_partials = _merge_map(item_req, item_dst, num_requests)
    return _remade(previous, num_requests, seq_lens, unique_tokens, out, item_req.astype(np.int32),
                   item_dst.astype(np.int32), merge_indptr, merge_partials, num_partials, planned,
                   max(int(kv_len.max(initial=0)), max(join_tokens, default=0)))


_NO_LIMITS = (-1, -1, -1)  # remade_items' limits where the plan has none


def _remade(previous: PackPlan, num_requests: int, seq_lens: np.ndarray, unique_tokens: int, items: np.ndarray,
            item_req: np.ndarray, item_dst: np.ndarray, merge_indptr: np.ndarray, merge_partials: np.ndarray,
            num_partials: int, planned: int, longest: int) -> PackPlan:
    """``remade_plan``'s plan from its arrays (int32; the compiled version's or numpy's): ``planned`` KV tokens,
    ``longest`` the longest item's."""
    _, _, tok_bytes, partial_bytes = _head_numbers(previous.heads)
    stats = PlanStats(
        kv_bytes_planned=planned * tok_bytes,
        kv_bytes_per_request=int(seq_lens.sum()) * tok_bytes,
        kv_bytes_unique=unique_tokens * tok_bytes,
        partial_bytes=num_partials * partial_bytes,
        num_items=int(items.shape[0]),
        num_partials=num_partials,
        max_item_tokens=longest,
    )
    return PackPlan(
        heads=previous.heads,
        num_requests=num_requests,
        tile_ms=previous.tile_ms,
        items=items,
        slot_table=previous.slot_table,
        item_req=item_req,
        item_dst=item_dst,
        merge_indptr=merge_indptr,
        merge_partials=merge_partials,
        num_partials=num_partials,
        max_slot=previous.max_slot,
        stats=stats,
        row_stride=previous.row_stride,
        num_open=num_requests,  # every request's last item is open: kept requests' own, joiners' last split
        split_tokens=previous.split_tokens,
        least_tile_m=previous.least_tile_m,
        long_pack_tokens=previous.long_pack_tokens,
    )


def _joiner_items(
    joiners: np.ndarray, rows: np.ndarray, seq_lens: np.ndarray, stride: int, split: int, first_slot: int,
    tile: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    """The private items of ``joiners`` (request indices), longest first: each one's whole row cut into
    ``_split_counts`` items of about equal KV at ``split`` as ``_plan`` cuts a pack, the last one open. (int32 item rows
    whose entries are 0, 1, ... in order; per item its request, partial slot (from ``first_slot`` on for a joiner of
    two items or more, else -1: written directly) and KV tokens.) ``tile``: (tile index, tile m) of each joiner's items.
    A Python loop: a re-made plan's joiners are a few (a wave re-reads too much to be re-made)."""
    found: list[tuple[int, int, int, int, int, int, int]] = []  # (tokens, begin, end, request, slot, tile, tile m)
    slot = first_slot
    for r, n, row, t, m in zip(joiners.tolist(), seq_lens[joiners].tolist(), rows[joiners].tolist(),
                               tile[0].tolist(), tile[1].tolist(), strict=True):
        k = max(1, -(-n // split))
        base = row * stride
        cuts = [base + n * i // k for i in range(k + 1)]
        for i in range(k):
            found.append((cuts[i + 1] - cuts[i], cuts[i], cuts[i + 1] if i + 1 < k else ITEM_OPEN_END, r,
                          slot + i if k > 1 else -1, t, m))
        slot += k if k > 1 else 0
    found.sort(key=lambda f: -f[0])  # (stable: a joiner's splits stay in order)
    joined = np.zeros((len(found), ITEM_FIELDS), dtype=np.int32)
    if found:
        table = np.array(found, dtype=np.int64)
        joined[:, ITEM_KV_BEGIN] = table[:, 1]
        joined[:, ITEM_KV_END] = table[:, 2]
        joined[:, ITEM_REQ_BEGIN] = np.arange(len(found))
        joined[:, ITEM_REQ_END] = joined[:, ITEM_REQ_BEGIN] + 1
        joined[:, ITEM_TILE] = table[:, 5]
        joined[:, ITEM_TILE_M] = table[:, 6]
    return joined, [f[3] for f in found], [f[4] for f in found], [f[0] for f in found]


def copy_with(obj: _T, **changes: object) -> _T:
    """A shallow copy of a dataclass instance (frozen or not) with ``changes`` set: ``dataclasses.replace`` without
    its ``__init__`` call, which costs more than the rest of a re-made plan (or of a republished batch)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    for name, value in changes.items():
        object.__setattr__(new, name, value)  # through descriptors (PackPlan.packs), past frozen dataclasses' guard
    return new


def _split_length(
    candidates: list[int],
    pack_tokens: np.ndarray,
    pack_blocks: np.ndarray,
    pack_req: np.ndarray,
    pack_req_count: np.ndarray,
    num_requests: int,
    num_kv_heads: int,
    target: int,
    block_token_bytes: np.ndarray,
    block_overheads: np.ndarray,
    chain_cost: float,
    long_tokens: int = INT64_MAX,
) -> int:
    """The step's KV split length: of the ``candidates`` (``_split_candidates``), the one whose launch the cost model
    (``_launch_costs``) finishes first; on a tie (the same longest item sets every candidate's makespan) the one with
    more items: the other slots then finish earlier and that item's tail runs with less competition for HBM (rollout64
    on the H200: 1024-token splits 86-87 us against the 1280-token ones' 90 us at equal predicted cost, three runs;
    bench/split_model_check.py: no other measured tree changes). ``block_token_bytes[n]`` / ``block_overheads[n]``:
    a KV token's cost and the fixed cost of an item of a row block of ``n`` requests (``_block_costs``; a block of a
    pack of ``long_tokens`` or more at ``long_offset``); ``chain_cost``: each partial of the request with the most
    (``_chain_cost``)."""
    if _SEARCH_LOG is not None:
        _SEARCH_LOG.append((list(candidates), pack_tokens, pack_blocks, pack_req, pack_req_count, num_requests))
    longest = int(pack_tokens.max())
    if len(candidates) == 1:
        return candidates[0]
    slots = max(1, target // num_kv_heads)  # items that run at once: each is one CTA per KV head
    if int(pack_tokens.min()) == longest and int(pack_req_count.min()) == int(pack_req_count.max()):
        # every pack alike (equal private rows, say): the same model without a candidate x pack matrix
        half = block_overheads.shape[0] // 2
        lut = slice(half, None) if longest >= long_tokens else slice(None, half)  # the packs' half of the tables
        lengths, cost, items = _uniform_launch_costs(candidates, pack_tokens.shape[0], longest, int(pack_blocks[0]),
                                                     int(pack_req_count[0]), pack_req, num_requests,
                                                     block_token_bytes[lut], block_overheads[lut], slots, chain_cost)
        return lengths[_cheapest(cost, items)]
    sim = host_core.loaded()
    if sim is not None:  # the rest of this function in one call
        return sim.split_length(candidates, longest, pack_tokens, pack_blocks, pack_req_count, pack_req, num_requests,
                                slots, block_token_bytes, block_overheads, long_tokens, float(chain_cost),
                                SPLIT_COST_TOLERANCE, RUN_BATCH_ITEMS)
    # a length that holds the longest pack cuts nothing: only the longest such (the first) stays
    lengths = np.array(candidates[:1] + [length for length in candidates[1:] if length < longest], dtype=np.int64)
    if lengths.shape[0] == 1:
        return candidates[0]
    splits = _split_counts(pack_tokens[None, :], lengths[:, None])  # candidate x pack
    # lengths that cut every pack alike cost alike (they are neighbours: counts grow as lengths shrink): keep the
    # longest of each run
    keep = np.ones(lengths.shape[0], dtype=bool)
    keep[1:] = (splits[1:] != splits[:-1]).any(axis=1)
    if keep.sum() == 1:  # one cut of the packs: nothing to compare
        return int(lengths[0])
    lengths, splits = lengths[keep], splits[keep]
    rpb = block_overheads.shape[0] // 2 - 1
    full = pack_blocks - 1  # every row block but a pack's last holds requests_per_block requests
    # (a full block's rows are more than half the largest tile m: the same tile, and entry, in both halves)
    last_size = pack_req_count - full * rpb + long_offset(pack_tokens, long_tokens, rpb)
    overheads = (block_overheads[rpb], block_overheads[last_size])
    token_bytes = (int(block_token_bytes[rpb]), block_token_bytes[last_size])
    cost, items = _launch_costs(splits, pack_tokens, full, token_bytes, overheads, pack_req, pack_req_count,
                                num_requests, slots, chain_cost)
    return int(lengths[_cheapest(cost.tolist(), items.tolist())])


def _cheapest(cost: list[float], items: list[int]) -> int:
    """The index of the cheapest candidate; on a tie the one with more items, then the first (the longest length)."""
    return min(range(len(cost)), key=lambda c: (cost[c], -items[c]))


def _split_candidates(
    longest: int, planned_tokens: int, num_kv_heads: int, target: int, min_split_tokens: int
) -> list[int]:
    """Split lengths worth costing, longest first: no split (the grid step above the longest pack); ``SPLIT_LADDER``
    multiples of one wave's split (the planned KV over the resident CTAs); and each whole number of waves up to
    ``MAX_WAVES`` with ``SPLIT_STEPS_UP`` coarse steps above it (rounding down can push equal rows just past a whole
    wave: 8 rows x 32k tokens are 576 CTAs on 528 slots, where 512 fill one). All on the ``_coarse`` grid, so that a
    length stays put while the leaves grow, and none finer than ``MAX_WAVES`` waves or ``min_split_tokens``."""
    one_wave = planned_tokens * num_kv_heads / target
    finest = max(min_split_tokens, _coarse(math.ceil(one_wave / MAX_WAVES)))
    lengths = {max(_coarse_up(longest), finest)}  # no split, with room to grow (else the next token re-plans)
    for factor in SPLIT_LADDER:
        lengths.add(max(finest, _coarse(math.ceil(one_wave * factor))))
    for waves in range(1, MAX_WAVES + 1):
        length = max(finest, _coarse(math.ceil(one_wave / waves)))
        for _ in range(SPLIT_STEPS_UP + 1):
            lengths.add(length)
            length = _coarse_up(length)
    return sorted(lengths, reverse=True)


def _split_counts(pack_tokens: np.ndarray, length: int | np.ndarray) -> np.ndarray:
    """KV splits per pack at split length ``length`` (at least one; arrays broadcast)."""
    return np.maximum(1, (pack_tokens + (length - 1)) // length)


def _launch_costs(
    splits: np.ndarray,
    pack_tokens: np.ndarray,
    full_blocks: np.ndarray,
    token_bytes: tuple[int, np.ndarray],
    overheads: tuple[float, np.ndarray],
    pack_req: np.ndarray,
    pack_req_count: np.ndarray,
    num_requests: int,
    slots: int,
    chain_cost: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted forward + merge time, items) of each candidate row of ``splits`` (candidate x pack), the time in
    bytes one CTA slot streams (see the module docstring). ``pack_tokens``: each pack's KV tokens; ``full_blocks``:
    its row blocks before the last; ``token_bytes`` / ``overheads``: a KV token's cost (in slot bytes of one KV head)
    and an item's fixed cost in a full block, and in each pack's last block; ``chain_cost``: each partial of the
    request with the most (``MERGE_CHAIN_COST_SLOT_BYTES``). Items run in launch order by their KV
    tokens, longest first. Candidates are simulated in the order of a lower bound of their cost; one whose bound
    exceeds the best cost found is not simulated (its cost is the bound: it cannot win), and one that cannot beat it
    stops early (its cost is then where it stopped, also above the best). Sums over packs run in pack order (cumulative
    sums), as the compiled version (``host_core``, used where it loads) sums them: the two give the same costs bit for
    bit."""
    full_overhead, last_overhead = overheads
    full_token_bytes, last_token_bytes = token_bytes
    sim = host_core.loaded()
    if sim is not None:
        return sim.launch_costs(splits, pack_tokens, full_blocks, full_token_bytes, last_token_bytes,
                                float(full_overhead), last_overhead, pack_req, pack_req_count, num_requests, slots,
                                float(chain_cost), SPLIT_COST_TOLERANCE, RUN_BATCH_ITEMS)
    item_tokens = pack_tokens / splits  # each pack's items carry about the same KV; the launch order's key
    counts = splits * (full_blocks + 1)
    items = counts.sum(axis=1)
    # partials: a request's count is the sum of its packs' splits (it sits in one row block of each)
    num_cands, num_packs = splits.shape
    if pack_req.shape[0] == num_requests:  # every request in one pack (nothing shared): its pack's splits
        chain = (splits * (pack_req_count > 0)).max(axis=1)
    else:
        entry_pack = np.repeat(np.arange(num_packs), pack_req_count)
        key = (np.arange(num_cands)[:, None] * num_requests + pack_req[None, :]).ravel()
        partials_of = np.bincount(key, weights=splits[:, entry_pack].ravel(), minlength=num_cands * num_requests)
        chain = partials_of.reshape(num_cands, num_requests).max(axis=1)
    chain_costs = chain_cost * np.where(chain < 2, 0, chain)  # one partial: written as the output
    # each pack's items: splits x full blocks of one duration, splits of its last block's
    dur_full = pack_tokens * full_token_bytes / splits + full_overhead
    dur_last = pack_tokens * last_token_bytes / splits + last_overhead
    full_items = counts - splits
    total = _row_sums(dur_full * full_items) + _row_sums(dur_last * splits)
    longest = np.maximum(np.where(full_blocks > 0, dur_full, 0).max(axis=1), dur_last.max(axis=1))
    bound = np.maximum(longest, total / slots) + chain_costs
    pair_reps = np.stack([full_items, splits], axis=2)  # candidate x pack x (full blocks, last block)
    pair_durations = np.stack([dur_full, dur_last], axis=2)

    def runs(c: int) -> tuple[list[float], list[int]]:
        """Candidate ``c``'s items in launch order as runs of equal durations: packs by item size, longest first (a
        pack's full blocks before its last: the larger tile first). Built only for the candidates ``_simulated_costs``
        simulates (about two of the ten or so costed), not for all of them up front."""
        order = np.argsort(-item_tokens[c], kind="stable")
        reps = pair_reps[c, order].ravel()
        values = pair_durations[c, order].ravel()
        present = reps > 0
        reps, values = reps[present], values[present]
        new_run = np.ones(values.shape[0], dtype=bool)
        new_run[1:] = values[1:] != values[:-1]
        run_at = np.flatnonzero(new_run)
        return values[run_at].tolist(), np.add.reduceat(reps, run_at).tolist()

    def makespan(c: int, limit: float) -> float:
        return _greedy_makespan(*runs(c), slots, limit)

    cost = _simulated_costs(bound.tolist(), chain_costs.tolist(), items.tolist(), makespan, slots)
    return np.array(cost), items


def _uniform_launch_costs(
    candidates: list[int],
    num_packs: int,
    tokens: int,
    blocks: int,
    req_count: int,
    pack_req: np.ndarray,
    num_requests: int,
    block_token_bytes: np.ndarray,
    block_overheads: np.ndarray,
    slots: int,
    chain_cost: float,
) -> tuple[list[int], list[float], list[int]]:
    """``_launch_costs`` where each of ``num_packs`` packs has ``tokens`` tokens and ``req_count`` requests in
    ``blocks`` row blocks: (the lengths that cut the packs differently, the longest of each run
    of equal cuts; their costs; their items), each cost the value ``_launch_costs`` gives bit for bit. Every pack's
    items are equal, so a candidate is its split count, its items per pack and two durations; only the KV total keeps
    a row per pack, summed as ``_launch_costs`` sums it (in pack order: its rounding depends on the terms)."""
    full = blocks - 1
    last_size = req_count - full * (block_overheads.shape[0] - 1)
    full_overhead, last_overhead = float(block_overheads[-1]), float(block_overheads[last_size])
    if pack_req.shape[0] == num_requests:  # every request in one pack
        most_packs = 1
    else:  # a request's partials: its packs' splits
        most_packs = int(np.bincount(pack_req, minlength=num_requests).max())
    lengths: list[int] = []
    splits: list[int] = []
    for length in candidates:
        count = max(1, (tokens + length - 1) // length)  # _split_counts
        if not splits or count != splits[-1]:
            lengths.append(length)
            splits.append(count)
    full_bytes, last_bytes = tokens * int(block_token_bytes[-1]), tokens * int(block_token_bytes[last_size])
    dur_full = [full_bytes / s + full_overhead for s in splits]
    dur_last = [last_bytes / s + last_overhead for s in splits]
    total = _pack_sums([d * s for d, s in zip(dur_last, splits, strict=True)], num_packs)
    if full:
        kv_full = _pack_sums([d * (s * full) for d, s in zip(dur_full, splits, strict=True)], num_packs)
        total = [a + b for a, b in zip(kv_full, total, strict=True)]
    items = [num_packs * s * blocks for s in splits]
    chain_costs = [chain_cost * (0 if s * most_packs < 2 else s * most_packs) for s in splits]
    bound = [
        max(max(f, d) if full else d, t / slots) + chain
        for f, d, t, chain in zip(dur_full, dur_last, total, chain_costs, strict=True)
    ]

    def makespan(c: int, limit: float) -> float:  # a few runs: the Python simulation costs little here
        if not full or dur_full[c] == dur_last[c]:
            return _greedy_makespan([dur_last[c]], [items[c]], slots, limit)
        return _greedy_makespan([dur_full[c], dur_last[c]] * num_packs, [splits[c] * full, splits[c]] * num_packs,
                                slots, limit)

    return lengths, _simulated_costs(bound, chain_costs, items, makespan, slots), items


def _row_sums(values: np.ndarray) -> np.ndarray:
    """Each row of a (candidate x pack) array summed in pack order (a cumulative sum's last column: not numpy's
    pairwise ``sum``, whose rounding the compiled cost model would have to copy)."""
    return np.cumsum(values, axis=1)[:, -1]


def _pack_sums(values: list[float], num_packs: int) -> list[float]:
    """Each of ``values`` summed ``num_packs`` times as ``_row_sums`` sums a row of a (candidate x pack) array."""
    return _row_sums(np.repeat(np.array(values)[:, None], num_packs, axis=1)).tolist()


def _simulated_costs(
    bound: list[float],
    chain_cost: list[float],
    items: list[int],
    makespan: Callable[[int, float], float],
    slots: int,
) -> list[float]:
    """Each candidate's cost, given a lower bound of it (merge chain included), its merge chain cost, its items and
    ``makespan(c, limit)``, its launch simulated (``_greedy_makespan`` of its items in launch order, or the same
    compiled: ``host_core``). Candidates are
    simulated in the order of their bounds; one whose bound exceeds the best cost found is not simulated (its cost is
    the bound: it cannot win), one whose items all start at once costs its bound (its longest item), and one that
    cannot beat the best stops early (its cost is then where it stopped, also above the best). Once no candidate
    left can be ``SPLIT_COST_TOLERANCE`` cheaper than the best (its bound times 1 + that is at least the best), the
    rest that would need a simulation are not simulated either and cost ``inf`` (never chosen): the cheapest cost
    returned is within that fraction of every candidate's. A bound equal to the best is still simulated (a tie goes to
    more items, ``_cheapest``), and one whose items all start at once still costs its bound (exact, for free)."""
    cost = list(bound)
    best = math.inf
    for c in sorted(range(len(bound)), key=bound.__getitem__):
        if bound[c] > best:
            break
        if items[c] > slots:
            if bound[c] < best <= bound[c] * (1.0 + SPLIT_COST_TOLERANCE):  # would save less than the tolerance
                cost[c] = math.inf
                continue
            cost[c] = makespan(c, best - chain_cost[c]) + chain_cost[c]
        best = min(best, cost[c])
    return cost


RUN_BATCH_ITEMS = 16  # runs of equal items at least this long are dealt by rounds (``_greedy_makespan``)


def _greedy_makespan(values: list[float], counts: list[int], slots: int, limit: float = math.inf) -> float:
    """When the last item ends if items (``counts[i]`` of duration ``values[i]``, in launch order) each start on the
    first of ``slots`` to free; once an item would end past ``limit``, that end (a lower bound of the answer) instead.
    A run of equal items whose duration is at least the slots' spread of loads deals one to every slot per round
    (the first free slot is then the one that got none yet), so whole rounds are added at once, and the rest one each
    to the least loaded slots. The first wave and the rest are two loops, and a run of one item (most runs on the
    Mooncake replay) takes one heap step with no other test: this is the split search's innermost loop."""
    loads: list[float] = []
    runs: Iterator[tuple[float, int]] = zip(values, counts, strict=True)
    for d, n in runs:  # the first wave: every slot starts at 0
        if not loads and n >= slots:  # a first run that fills every slot: whole rounds, the rest one each
            rounds, rest = divmod(n, slots)
            loads = [d * rounds] * (slots - rest) + [d * (rounds + 1)] * rest  # ascending: a heap as it is
            break
        room = slots - len(loads)
        if n < room:
            loads += [d] * n
            continue
        loads += [d] * room
        heapq.heapify(loads)
        if n > room:
            runs = itertools.chain(((d, n - room),), runs)  # the run's rest goes on after the first wave
        break
    else:
        return max(loads)
    replace = heapq.heapreplace
    for d, n in runs:
        if n == 1:
            end = loads[0] + d
            if end > limit:
                return end
            replace(loads, end)
            continue
        if n >= RUN_BATCH_ITEMS and max(loads) - loads[0] <= d:  # (a short run: one heap step per item is cheaper)
            rounds, n = divmod(n, slots)
            if rounds:
                if loads[0] + rounds * d > limit:
                    return loads[0] + rounds * d
                loads = [load + rounds * d for load in loads]  # a uniform shift keeps the heap order
            if n:  # the rest go to the n least loaded slots, one each
                loads.sort()
                if loads[n - 1] + d > limit:
                    return loads[n - 1] + d
                loads[:n] = [load + d for load in loads[:n]]
                heapq.heapify(loads)
            continue
        for _ in range(n):
            end = loads[0] + d
            if end > limit:
                return end
            replace(loads, end)
    return max(loads)


# The grid functions are cached: a split search rounds ~35 values, nearly all of them seen at earlier steps (the grid
# is coarse), and a cache hit costs a third of the arithmetic's Python calls.
@functools.lru_cache(maxsize=4096)
def _coarse_up(tokens: int) -> int:
    """The next split length above ``tokens`` on the ``_coarse`` grid (one step: 1/8 of its octave)."""
    if tokens < 16:
        return tokens + 1
    return _coarse(tokens + (1 << (tokens.bit_length() - 4)))


@functools.lru_cache(maxsize=4096)
def _coarse(tokens: int) -> int:
    """``tokens`` rounded down to 8 steps per octave (at most 12.5% less). The split length then stays put while a
    step's total grows by a token per request, so split counts (and with them the re-made plans of
    ``plan_forest(previous=...)``) change only when a pack itself crosses a multiple of it."""
    if tokens < 16:
        return tokens
    grain = 1 << (tokens.bit_length() - 4)
    return tokens // grain * grain


def _item_order(
    kv_len: np.ndarray, tile: np.ndarray, kv_begin: np.ndarray, num_tiles: int, kv_total: int
) -> np.ndarray:
    """Stable order by (-kv_len, -tile, kv_begin), through one int64 key when it fits."""
    span = kv_total + 1
    longest = int(kv_len.max())
    smaller = num_tiles - 1 - tile  # tiles are indexed by size, smallest first
    if (longest + 1) * num_tiles * span < 1 << 62:
        return (((longest - kv_len) * num_tiles + smaller) * span + kv_begin).argsort(kind="stable")
    return np.lexsort((np.arange(kv_len.shape[0]), kv_begin, smaller, -kv_len))


def _choose_packs(
    fa: PrefixForest, reqs_per_block: int, tok_bytes: int, partial_bytes: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The profit model over all nodes at once: (tokens incl. inherited, first node of each node's pack
    path or None when nothing is inlined, packed mask).

    A node inherits the tokens of its parent when the parent is inlined; more tokens only make packing
    more profitable, so iterating "decide, then inherit" from the nodes' own tokens reaches the top-down
    answer after at most (depth of the deepest inlined chain + 1) rounds."""
    # Fast check on the shared nodes alone: single-request nodes are always packed.
    if _packs_all_pay(fa, reqs_per_block, tok_bytes, partial_bytes):
        return fa.tok, None, None
    q = fa.q
    tok = fa.tok
    row_blocks = (q + (reqs_per_block - 1)) // reqs_per_block
    saved_per_token = (q - row_blocks) * tok_bytes
    cost = q * partial_bytes
    single = q == 1
    packed = single | (saved_per_token * tok > cost)
    has_parent = fa.parent >= 0
    parent = np.where(has_parent, fa.parent, 0)
    own = np.arange(tok.shape[0])
    tokens, top = tok, own
    while True:
        inherit = has_parent & ~packed[parent]
        new_tokens = tok + np.where(inherit, tokens[parent], 0)
        new_top = np.where(inherit, top[parent], own)
        new_packed = single | (saved_per_token * new_tokens > cost)
        if (
            np.array_equal(new_tokens, tokens)
            and np.array_equal(new_top, top)
            and np.array_equal(new_packed, packed)
        ):
            return tokens, top, packed
        tokens, top, packed = new_tokens, new_top, new_packed


def _all_multiples(values: np.ndarray, k: int) -> bool:
    """Whether every entry of ``values`` (integers) is a multiple of ``k`` (>= 1)."""
    got = host_core.glue_call("all_multiples", values, k)
    if got is not NotImplemented:
        return got
    return not bool((values % k).any())


def _packs_all_pay(fa: PrefixForest, reqs_per_block: int, tok_bytes: int, partial_bytes: int) -> bool:
    """Whether every shared node saves more by its own pack than its partials cost (``_choose_packs``' fast check)."""
    got = host_core.glue_call("packs_all_pay", fa.q, fa.tok, fa.shared, reqs_per_block, tok_bytes, partial_bytes)
    if got is not NotImplemented:
        return got
    q = fa.q[fa.shared]
    saved_per_token = (q - (q + (reqs_per_block - 1)) // reqs_per_block) * tok_bytes
    return bool((saved_per_token * fa.tok[fa.shared] > q * partial_bytes).all())


def _pack_numbers(pack_tokens: np.ndarray, kv_offset: np.ndarray, pack_req_count: np.ndarray,
                  reqs_per_block: int) -> tuple[np.ndarray, int, int, int]:
    """A planning pass's numbers over its packs: (row blocks per pack, the slot-table end the packs reach, the KV tokens
    the items read before splitting, the longest pack's tokens)."""
    got = host_core.glue_call("pack_numbers", pack_tokens, kv_offset, pack_req_count, reqs_per_block)
    if got is not NotImplemented:
        return got
    pack_blocks = (pack_req_count + (reqs_per_block - 1)) // reqs_per_block
    return (pack_blocks, int((kv_offset + pack_tokens).max()), int(pack_tokens @ pack_blocks),
            int(pack_tokens.max()))


def _fits(limits: PlanLimits, splits: np.ndarray, num_items: int, num_entries: int, pack_req: np.ndarray,
          pack_req_count: np.ndarray, num_requests: int) -> bool:
    """Whether the plan of these KV splits fits ``limits``: its items, its (item, request) entries, and its partial
    slots (every entry of a request with more than one; a request's only entry writes the output)."""
    if num_items > limits.max_items or num_entries > limits.max_entries:
        return False
    if num_entries <= limits.max_partials:  # partial slots are at most the entries: no count needed
        return True
    per_request = np.bincount(pack_req, weights=np.repeat(splits, pack_req_count), minlength=num_requests)
    return float(per_request[per_request > 1].sum()) <= limits.max_partials


def _split_numbers(pack_tokens: np.ndarray, split_tokens: int, pack_blocks: np.ndarray,
                   pack_req_count: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The packs' KV splits at ``split_tokens`` (``_split_counts``) and the items and request entries they make."""
    got = host_core.glue_call("split_numbers", pack_tokens, split_tokens, pack_blocks, pack_req_count)
    if got is not NotImplemented:
        return got
    splits = _split_counts(pack_tokens, split_tokens)
    return splits, int(splits @ pack_blocks), int(splits @ pack_req_count)


def _tail_split(splits: np.ndarray, num_items: int, pack_tokens: np.ndarray, pack_blocks: np.ndarray,
                num_kv_heads: int, target: int) -> np.ndarray | None:
    """The packs' split counts with the launch's last wave cut finer (``TAIL_WAVE_DIVISOR``), or None where they stay:
    one wave or less, a last wave of more than 1/TAIL_WAVE_DIVISOR of ``target`` CTAs, or no tail item long enough to
    cut. The launch runs items longest first (``_plan_items``: a stable sort by tokens per item, descending), so the
    last wave is the shortest items, the last packs among equals; each of its packs gets TAIL_SPLIT_FACTOR times its
    splits (fewer where its pieces would fall under MIN_SPLIT_TOKENS), its items moving to the launch's end. A pure
    function of its arguments: ``_regrown`` makes the same counts."""
    ctas = num_items * num_kv_heads
    rest = ctas % target
    if ctas <= target or rest == 0 or rest * TAIL_WAVE_DIVISOR > target or os.environ.get(TAIL_SPLIT_ENV) == "0":
        return None
    item_tokens = -(-pack_tokens // splits)
    pack_items = splits * pack_blocks
    # Items shorter than 2 x MIN_SPLIT_TOKENS cannot be cut, and they run after every longer one: where they fill the
    # last wave on their own there is nothing to cut (the common case, checked without the sort below)
    if int(pack_items[item_tokens < 2 * MIN_SPLIT_TOKENS].sum()) * num_kv_heads >= rest:
        return None
    order = np.argsort(-item_tokens, kind="stable")
    pack_ctas = pack_items[order] * num_kv_heads
    # the packs whose items start the last wave: from the launch's end back until `rest` CTAs are covered
    first = int(np.searchsorted(np.cumsum(pack_ctas[::-1]), rest))
    tail = order[max(0, order.shape[0] - first - 1):]
    factor = np.minimum(TAIL_SPLIT_FACTOR, item_tokens[tail] // MIN_SPLIT_TOKENS)
    if not (factor > 1).any():
        return None
    cut = splits.copy()
    cut[tail] = splits[tail] * np.maximum(1, factor)
    return cut


def _pack_paths(fa: PrefixForest, pack_node: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pack, its node path from the first inlined ancestor down to its node: (indptr, flat node ids)."""
    first = top[pack_node]
    length = fa.depth[pack_node] - fa.depth[first] + 1
    seg_ptr = _indptr(length)
    up = np.repeat(seg_ptr[1:] - 1, length) - np.arange(int(seg_ptr[-1]))  # steps above the pack's node
    seg_node = np.repeat(pack_node, length)
    while True:
        climb = up > 0
        if not climb.any():
            return seg_ptr, seg_node
        seg_node = np.where(climb, fa.parent[seg_node], seg_node)
        up = up - climb


class _PackBuilder:
    """Makes ``PackPlan.packs`` (a list of ``PackInfo``) from the planner's arrays, once."""

    def __init__(self, forest, pack_node, top, tokens, req_ptr, reqs, splits, blocks, tile_m_of_size, rpb,
                 long_tokens) -> None:
        self.args = (forest, pack_node, top, tokens, req_ptr, reqs, splits, blocks, tile_m_of_size, rpb, long_tokens)
        self.value: list[PackInfo] | None = None

    def __call__(self) -> list[PackInfo]:
        if self.value is None:
            forest, pack_node, top, tokens, req_ptr, reqs, splits, blocks, tile_m_of_size, rpb, long_tokens = self.args
            if pack_node is None:
                paths = [[n] for n in range(tokens.shape[0])]
            else:
                seg_ptr, seg_node = _pack_paths(forest, pack_node, top)
                flat, ptr = seg_node.tolist(), seg_ptr.tolist()
                paths = [flat[a:b] for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
            flat, ptr = reqs.tolist(), req_ptr.tolist()
            requests = [flat[a:b] for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
            tile_m = tile_m_of_size[np.minimum(np.diff(req_ptr), rpb) + long_offset(tokens, long_tokens, rpb)]
            self.value = list(
                map(PackInfo, paths, tokens.tolist(), requests, splits.tolist(), blocks.tolist(), tile_m.tolist())
            )
            self.args = None
        return self.value


@functools.lru_cache(maxsize=64)
def _head_numbers(heads: HeadConfig) -> tuple[int, int, int, int]:
    """(GQA group, KV heads, kv_token_bytes, partial_bytes); ``kv_token_bytes`` builds a tensor, so cache it."""
    return heads.group, heads.num_kv_heads, heads.kv_token_bytes, heads.partial_bytes


@functools.lru_cache(maxsize=16)
def _tile_array(tile_ms: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(tile_ms, dtype=np.int64)
    arr.setflags(write=False)
    return arr


def _tile_for(tile_ms: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``TileTable.tile_for`` over an array of row counts."""
    return np.minimum(np.searchsorted(tile_ms, rows, side="left"), tile_ms.shape[0] - 1)


@functools.lru_cache(maxsize=64)
def _tile_lut(tile_ms: tuple[int, ...], group: int, reqs_per_block: int, least_m: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(tile index, tile m) of a row block of ``n`` requests: at ``n`` in 0..reqs_per_block the smallest tile that holds
    its rows and at least ``least_m`` rows (a short pack's), at ``reqs_per_block + 1 + n`` the smallest that holds its
    rows (a long pack's; ``long_offset``)."""
    arr = _tile_array(tile_ms)
    rows = np.arange(reqs_per_block + 1) * group
    tile = np.concatenate([_tile_for(arr, np.maximum(rows, least_m)), _tile_for(arr, rows)])
    tile_m = arr[tile]
    tile.setflags(write=False)
    tile_m.setflags(write=False)
    return tile, tile_m


def long_offset(pack_tokens: np.ndarray, long_tokens: int, reqs_per_block: int) -> np.ndarray:
    """Per pack, where its row blocks' entries start in ``_tile_lut``'s tables: 0 for a short pack, ``reqs_per_block +
    1`` for a long one (``long_tokens`` KV tokens or more)."""
    return (pack_tokens >= long_tokens) * (reqs_per_block + 1)


def cost_key(heads: HeadConfig) -> tuple[str, int, int]:
    """The split model's key for this configuration: (KV element, "fp8" or "16bit"; head dim; GQA group), as
    ``MEASURED_ITEM_COSTS`` is keyed (its first part keys ``MERGE_CHAIN_COST_SLOT_BYTES``)."""
    return ("fp8" if heads.kv_fp8 else "16bit", heads.head_dim, heads.group)


def _chain_cost(heads: HeadConfig) -> float:
    """Each partial of the request with the most, in slot bytes: this configuration's measured price
    (``MEASURED_CHAIN_COSTS``), else its KV element's."""
    key = cost_key(heads)
    return float(MEASURED_CHAIN_COSTS.get(key, MERGE_CHAIN_COST_SLOT_BYTES[key[0]]))


def _measured_costs(heads: HeadConfig) -> tuple[tuple[int, int, int], ...]:
    """This configuration's ``MEASURED_ITEM_COSTS`` entry as (tile m, fixed cost, token cost) rows (hashable, for
    ``_block_costs``' cache); empty where none was measured."""
    entry = MEASURED_ITEM_COSTS.get(cost_key(heads), {})
    return tuple((m, fixed, token) for m, (fixed, token) in sorted(entry.items()))


@functools.lru_cache(maxsize=64)
def _block_costs(tile_ms: tuple[int, ...], group: int, reqs_per_block: int, head_token_bytes: int,
                 measured: tuple[tuple[int, int, int], ...] = (), least_m: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a KV token's cost in slot bytes of one KV head (int64), an item's fixed cost (float64)) in an item of a row
    block of ``n`` requests, indexed as ``_tile_lut``'s tables (a short pack's block at ``n``, a long one's at
    ``reqs_per_block + 1 + n``): the ``measured`` (tile m, fixed, token) rows (``_measured_costs``) where they name the
    block's tile m, else ``ITEM_OVERHEAD_SLOT_BYTES`` and the token's bytes."""
    by_tile = {m: (fixed, token) for m, fixed, token in measured}
    tile_m = _tile_lut(tile_ms, group, reqs_per_block, least_m)[1].tolist()
    token_costs = np.array([by_tile[m][1] if m in by_tile else head_token_bytes for m in tile_m], dtype=np.int64)
    fixed_costs = np.array([by_tile[m][0] if m in by_tile else ITEM_OVERHEAD_SLOT_BYTES[m] for m in tile_m],
                           dtype=np.float64)
    token_costs.setflags(write=False)
    fixed_costs.setflags(write=False)
    return token_costs, fixed_costs


def _stable_argsort(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of non-negative ``keys`` < ``bound`` (int16 keys get numpy's radix sort)."""
    if bound <= INT16_MAX:
        keys = keys.astype(np.int16)
    return keys.argsort(kind="stable")


def _indptr(counts: np.ndarray) -> np.ndarray:
    """[0, c0, c0 + c1, ...]: an indptr of length len(counts) + 1."""
    out = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _ranges(starts: np.ndarray, lengths: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` over (starts, lengths); ``ends`` = cumsum(lengths) if known."""
    if ends is None:
        ends = lengths.cumsum()
    total = int(ends[-1]) if ends.shape[0] else 0
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total) + (starts - (ends - lengths)).repeat(lengths)
