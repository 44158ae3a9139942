"""The pack planner: from a prefix forest to a launch-ready ``PackPlan``.

Role in pack-forward-merge: this is *pack*. It runs once per decode step on the CPU and does all the
data-dependent work, so that the forward and merge launches only read flat int32 tensors.

Packs. A pack is a run of KV slots plus the requests that read it. Every forest node is either packed
on its own (its KV leaves HBM once for all its requests) or inlined into its children (each child's pack
reads it again). The decision is a memory-centric profit model, in bytes per decode step per layer:

    kv_token_bytes = 2 * num_kv_heads * head_dim * elem_bytes            (K and V of one token)
    row_blocks     = ceil(q / requests_per_block)   q = requests through the node,
                                                     requests_per_block = max_tile_m // gqa_group
    saved_bytes    = (q - row_blocks) * tokens * kv_token_bytes          tokens = inherited + own slots
    cost_bytes     = q * partial_bytes,  partial_bytes = 2 * num_q_heads * (head_dim + 1) * 4
                     (each request gets one more fp32 partial row + log-sum-exp: written, then merged)

A node is packed when saved_bytes > cost_bytes; single-request nodes are always packed (they are the
leaves). So the plan never reads more KV than per-request decode (each request's tokens are read at
most once per request), and a shared pack only exists where it saves more than it costs.

Items. A pack is cut into work items, one CTA each per KV head: row blocks of at most
``requests_per_block`` requests (the tile's query rows are requests x the q heads of one KV group), and
KV splits so the grid fills the GPU without a long tail. The split length is

    split_tokens = max(min_split_tokens, ceil(sum_items(tokens) * num_kv_heads / target_ctas))

so that every item carries about the same KV and no CTA runs much longer than the average wave.

Partials. Every (item, request) writes either straight to the output (the request's only partial) or
to its own partial slot; two items never share a slot. The merge map lists each request's slots.

Tiles. Each item gets the smallest tile m (from ``configs/tiles``) that holds its rows; items are
ordered longest KV first for the single forward launch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import DeviceSpec, HeadConfig, TileTable, load_tile_table
from .forest import PrefixForest

# Columns of PackPlan.items (one int32 row per work item).
ITEM_KV_BEGIN, ITEM_KV_END, ITEM_REQ_BEGIN, ITEM_REQ_END, ITEM_TILE, ITEM_TILE_M = range(6)
ITEM_FIELDS = 8  # padded to 32 bytes: one aligned load per CTA

MIN_SPLIT_TOKENS = 256
MAX_ITEMS = 65535  # the forward grid's y dimension


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


@dataclass
class PackPlan:
    heads: HeadConfig
    num_requests: int
    tile_ms: tuple[int, ...]
    items: torch.Tensor  # int32 [num_items, ITEM_FIELDS]
    kv_slots: torch.Tensor  # int32 [total pack tokens]
    item_req: torch.Tensor  # int32: request index of each (item, request) entry
    item_dst: torch.Tensor  # int32: partial slot, or -1 = write the output directly
    merge_indptr: torch.Tensor  # int32 [num_requests + 1]
    merge_partials: torch.Tensor  # int32: partial slots of each request, in merge_indptr order
    num_partials: int
    max_slot: int  # largest KV slot index the plan reads
    packs: list[PackInfo] = field(default_factory=list)
    stats: PlanStats | None = None

    @property
    def num_items(self) -> int:
        return int(self.items.shape[0])

    def to(self, device: torch.device | str) -> PackPlan:
        moved = {
            name: getattr(self, name).to(device, non_blocking=True)
            for name in ("items", "kv_slots", "item_req", "item_dst", "merge_indptr", "merge_partials")
        }
        return PackPlan(
            heads=self.heads,
            num_requests=self.num_requests,
            tile_ms=self.tile_ms,
            num_partials=self.num_partials,
            max_slot=self.max_slot,
            packs=self.packs,
            stats=self.stats,
            **moved,
        )

    def describe(self) -> str:
        lines = [f"{'pack':>4} {'tokens':>7} {'reqs':>5} {'rowblk':>6} {'splits':>6} {'tile_m':>6}"]
        for i, p in enumerate(self.packs):
            lines.append(
                f"{i:>4} {p.num_tokens:>7} {len(p.requests):>5} {p.row_blocks:>6} {p.splits:>6} {p.tile_m:>6}"
            )
        return "\n".join(lines)


def plan_forest(
    forest: PrefixForest,
    heads: HeadConfig,
    device: DeviceSpec | None = None,
    tiles: TileTable | None = None,
    min_split_tokens: int = MIN_SPLIT_TOKENS,
) -> PackPlan:
    device = device or DeviceSpec()
    tiles = tiles or load_tile_table(device.arch)
    reqs_per_block = max(1, tiles.max_m // heads.group)

    packs = _choose_packs(forest, heads, reqs_per_block)

    # --- row blocks, then one split length for the whole step
    blocks: list[tuple[int, list[int]]] = []  # (pack, requests of the block)
    for p, (_, _, reqs) in enumerate(packs):
        for b in range(0, len(reqs), reqs_per_block):
            blocks.append((p, reqs[b : b + reqs_per_block]))
    pack_tokens = [sum(forest.nodes[n].num_tokens for n in nodes) for nodes, _, _ in packs]
    work_tokens = sum(pack_tokens[p] for p, _ in blocks) * heads.num_kv_heads
    split_tokens = max(min_split_tokens, math.ceil(work_tokens / device.target_ctas))
    splits = [max(1, math.ceil(t / split_tokens)) for t in pack_tokens]

    # --- partial slots: a request with one partial in the whole plan writes the output directly
    partials_of = np.zeros(forest.num_requests, dtype=np.int64)
    for p, (_, _, reqs) in enumerate(packs):
        partials_of[reqs] += splits[p]

    kv_slots: list[np.ndarray] = []
    kv_offset = [0]
    for nodes, _, _ in packs:
        kv_slots.append(np.concatenate([forest.nodes[n].slots for n in nodes]))
        kv_offset.append(kv_offset[-1] + kv_slots[-1].shape[0])

    item_rows: list[tuple[int, int, int, int, int, int]] = []  # -tokens, tile, kv_b, kv_e, pack, block
    for blk, (p, reqs) in enumerate(blocks):
        tile = tiles.tile_for(len(reqs) * heads.group)
        n_tok = pack_tokens[p]
        for s in range(splits[p]):
            b = kv_offset[p] + (n_tok * s) // splits[p]
            e = kv_offset[p] + (n_tok * (s + 1)) // splits[p]
            item_rows.append((-(e - b), tile, b, e, p, blk))
    # Longest KV first: the one launch schedules CTAs in order, so long items start early and the
    # tail is short (largest-processing-time-first).
    item_rows.sort()

    items = np.zeros((len(item_rows), ITEM_FIELDS), dtype=np.int32)
    item_req: list[int] = []
    item_dst: list[int] = []
    slots_of: list[list[int]] = [[] for _ in range(forest.num_requests)]
    next_partial = 0
    for i, (_, tile, b, e, _, blk) in enumerate(item_rows):
        reqs = blocks[blk][1]
        items[i, ITEM_KV_BEGIN] = b
        items[i, ITEM_KV_END] = e
        items[i, ITEM_REQ_BEGIN] = len(item_req)
        items[i, ITEM_REQ_END] = len(item_req) + len(reqs)
        items[i, ITEM_TILE] = tile
        items[i, ITEM_TILE_M] = tiles.tile_ms[tile]
        for r in reqs:
            item_req.append(r)
            if partials_of[r] == 1:
                item_dst.append(-1)
            else:
                item_dst.append(next_partial)
                slots_of[r].append(next_partial)
                next_partial += 1

    if len(item_rows) > MAX_ITEMS:
        raise ValueError(f"plan has {len(item_rows)} work items; the forward grid holds at most {MAX_ITEMS}")
    merge_indptr = np.zeros(forest.num_requests + 1, dtype=np.int32)
    merge_indptr[1:] = np.cumsum([len(s) for s in slots_of])
    merge_partials = np.array([s for lst in slots_of for s in lst], dtype=np.int32)

    all_slots = np.concatenate(kv_slots)
    if all_slots.shape[0] and int(all_slots.max()) > np.iinfo(np.int32).max:
        raise ValueError("KV slot index does not fit in int32")

    tok_bytes = heads.kv_token_bytes
    stats = PlanStats(
        kv_bytes_planned=int(sum(r[3] - r[2] for r in item_rows)) * tok_bytes,
        kv_bytes_per_request=forest.request_tokens() * tok_bytes,
        kv_bytes_unique=forest.unique_tokens() * tok_bytes,
        partial_bytes=next_partial * heads.partial_bytes,
        num_items=len(item_rows),
        num_partials=next_partial,
    )
    infos = []
    for p, (nodes, _, reqs) in enumerate(packs):
        n_blocks = math.ceil(len(reqs) / reqs_per_block)
        tile_m = tiles.tile_ms[tiles.tile_for(min(len(reqs), reqs_per_block) * heads.group)]
        infos.append(PackInfo(nodes, pack_tokens[p], reqs, splits[p], n_blocks, tile_m))

    def i32(a: np.ndarray | list[int]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))

    return PackPlan(
        heads=heads,
        num_requests=forest.num_requests,
        tile_ms=tiles.tile_ms,
        items=torch.from_numpy(items),
        kv_slots=i32(all_slots),
        item_req=i32(item_req),
        item_dst=i32(item_dst),
        merge_indptr=torch.from_numpy(merge_indptr),
        merge_partials=torch.from_numpy(merge_partials),
        num_partials=next_partial,
        max_slot=int(all_slots.max()) if all_slots.shape[0] else -1,
        packs=infos,
        stats=stats,
    )


def _choose_packs(
    forest: PrefixForest, heads: HeadConfig, reqs_per_block: int
) -> list[tuple[list[int], int, list[int]]]:
    """Walk the forest top-down; return packs as (node path, tokens, requests)."""
    packs: list[tuple[list[int], int, list[int]]] = []
    inherited: dict[int, list[int]] = {}  # node -> inlined ancestor nodes
    tok_bytes = heads.kv_token_bytes
    for i, node in enumerate(forest.nodes):
        path = inherited.pop(i, []) + [i]
        q = len(node.requests)
        tokens = sum(forest.nodes[n].num_tokens for n in path)
        if q == 1:
            packs.append((path, tokens, list(node.requests)))
            continue
        row_blocks = math.ceil(q / reqs_per_block)
        saved = (q - row_blocks) * tokens * tok_bytes
        cost = q * heads.partial_bytes
        if saved > cost:
            packs.append((path, tokens, list(node.requests)))
            continue
        # Inline: children read this run again; requests that end here get a pack of their own.
        continuing: set[int] = set()
        for c in node.children:
            inherited[c] = path
            continuing.update(forest.nodes[c].requests)
        ending = [r for r in node.requests if r not in continuing]
        if ending:
            packs.append((path, tokens, ending))
    return packs
