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
    target_ctas  = sm_count * min_ctas_per_sm(head_dim)   (the kernel variant's occupancy, tile table)

so that every item carries about the same KV and no CTA runs much longer than one resident wave (the
forward kernel streams KV at about the same rate per CTA whatever its tile m, so tokens are the cost).

Partials. Every (item, request) writes either straight to the output (the request's only partial) or
to its own partial slot; two items never share a slot. The merge map lists each request's slots.

Tiles. Each item gets the smallest tile m (from ``configs/tiles``) that holds its rows; items are
ordered longest KV first for the single forward launch.

Implementation. All of this is numpy over the forest's flat arrays (``PrefixForest._arrays``): the profit
model for every node at once (iterated only where inlining passes tokens down), then packs, row blocks,
splits, items, partial numbering and the merge map as array ops, with no per-item Python. ``PackInfo``
records are built on the first read of ``PackPlan.packs`` (they are for printing and statistics only).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import DeviceSpec, HeadConfig, TileTable, load_tile_table
from .forest import ForestArrays, PrefixForest

# Columns of PackPlan.items (one int32 row per work item).
ITEM_KV_BEGIN, ITEM_KV_END, ITEM_REQ_BEGIN, ITEM_REQ_END, ITEM_TILE, ITEM_TILE_M = range(6)
ITEM_FIELDS = 8  # padded to 32 bytes: one aligned load per CTA

MIN_SPLIT_TOKENS = 256
MAX_ITEMS = 65535  # the forward grid's y dimension
INT32_MAX = int(np.iinfo(np.int32).max)
INT16_MAX = int(np.iinfo(np.int16).max)


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
    packs: list[PackInfo] = _LazyPacks()  # type: ignore[assignment]  # built on first read
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
            packs=self.__dict__["_packs"],  # keep it lazy
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


def target_ctas(device: DeviceSpec, tiles: TileTable, heads: HeadConfig) -> int:
    """CTAs the forward launch keeps resident: SMs x the occupancy its variant is built for."""
    return device.sm_count * tiles.min_ctas_per_sm.get(heads.head_dim, device.ctas_per_sm)


def plan_forest(
    forest: PrefixForest,
    heads: HeadConfig,
    device: DeviceSpec | None = None,
    tiles: TileTable | None = None,
    min_split_tokens: int = MIN_SPLIT_TOKENS,
) -> PackPlan:
    device = device or DeviceSpec()
    tiles = tiles or load_tile_table(device.arch)
    group, num_kv_heads, tok_bytes, partial_bytes = _head_numbers(heads)
    reqs_per_block = max(1, tiles.max_m // group)
    tile_of_size, tile_m_of_size = _tile_lut(tiles.tile_ms, group, reqs_per_block)
    fa = forest._arrays()
    num_requests = forest.num_requests

    # --- packs, in node order: every packed node, and every inlined node that some requests end at
    tokens, top, packed = _choose_packs(fa, reqs_per_block, tok_bytes, partial_bytes)
    if top is None:  # nothing inlined: every node is its own pack, with all its requests
        pack_node = None
        pack_req = fa.req32
        pack_ptr = fa.req_ptr
        pack_req_count = fa.q
        pack_tokens = fa.tok
    else:
        pack_node = np.flatnonzero(packed | (fa.ending > 0))
        pack_req = fa.req32[packed[fa.entry_node] | fa.ends_here]
        pack_req_count = np.where(packed, fa.q, fa.ending)[pack_node]
        pack_ptr = _indptr(pack_req_count)
        pack_tokens = tokens[pack_node]
    num_packs = pack_tokens.shape[0]

    # --- row blocks, then one split length for the whole step
    pack_blocks = (pack_req_count + (reqs_per_block - 1)) // reqs_per_block
    planned_tokens = int(pack_tokens @ pack_blocks)  # KV tokens the items read (before splitting)
    split_tokens = max(min_split_tokens, math.ceil(planned_tokens * num_kv_heads / target_ctas(device, tiles, heads)))
    splits = np.maximum(1, (pack_tokens + (split_tokens - 1)) // split_tokens)
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
    block_tile = tile_of_size[block_size]  # the smallest tile that holds the block's query rows

    # --- partial slots: a request with one partial in the whole plan writes the output directly
    if one_split:
        partials_of = np.bincount(pack_req, minlength=num_requests)
    else:
        weights = splits.repeat(pack_req_count).astype(np.float64)
        partials_of = np.bincount(pack_req, weights=weights, minlength=num_requests).astype(np.int64)

    kv_offset = _starts(pack_tokens)

    # --- items: row blocks x KV splits
    if one_split:
        item_block = None  # item i is block i
        kv_begin = kv_offset if block_pack is None else kv_offset[block_pack]
        kv_len = pack_tokens if block_pack is None else pack_tokens[block_pack]
        item_tile = block_tile
    else:
        block_items = splits if block_pack is None else splits[block_pack]
        num_items = int(block_items.sum())
        item_block = np.arange(num_blocks).repeat(block_items)
        split_idx = np.arange(num_items) - _starts(block_items).repeat(block_items)
        item_pack = item_block if block_pack is None else block_pack[item_block]
        n_tok = pack_tokens[item_pack]
        n_split = splits[item_pack]
        base = kv_offset[item_pack]
        kv_begin = base + (n_tok * split_idx) // n_split
        kv_len = base + (n_tok * (split_idx + 1)) // n_split - kv_begin
        item_tile = block_tile[item_block]
    num_items = kv_begin.shape[0]
    if num_items > MAX_ITEMS:
        raise ValueError(f"plan has {num_items} work items; the forward grid holds at most {MAX_ITEMS}")
    # Longest KV first: the one launch schedules CTAs in order, so long items start early and the tail is
    # short (largest-processing-time-first). Ties: tile, then KV begin, then row block (items are generated
    # in block order and the sort is stable).
    order = _item_order(kv_len, item_tile, kv_begin, len(tiles.tile_ms), int(kv_offset[-1] + pack_tokens[-1]))
    item_block = order if item_block is None else item_block[order]
    item_tile = item_tile[order]
    kv_begin = kv_begin[order]
    sizes = block_size[item_block]
    req_end = sizes.cumsum()

    items = np.zeros((num_items, ITEM_FIELDS), dtype=np.int32)
    items[:, ITEM_KV_BEGIN] = kv_begin
    items[:, ITEM_KV_END] = kv_begin + kv_len[order]
    items[:, ITEM_REQ_BEGIN] = req_end - sizes
    items[:, ITEM_REQ_END] = req_end
    items[:, ITEM_TILE] = item_tile
    items[:, ITEM_TILE_M] = tile_m_of_size[sizes]
    item_req = pack_req[_ranges(block_start[item_block], sizes, req_end)]

    # Partial slots numbered in item_req order; each request merges its own in the order they were handed out.
    multi = partials_of[item_req] > 1
    merge_indptr = np.zeros(num_requests + 1, dtype=np.int32)
    if multi.all():  # every entry has a partial slot: slot i is entry i
        num_partials = multi.shape[0]
        item_dst = np.arange(num_partials, dtype=np.int32)
        np.cumsum(partials_of, out=merge_indptr[1:])
        merge_partials = _stable_argsort(item_req, num_requests).astype(np.int32)
    else:
        slot_ids = multi.cumsum() - 1
        num_partials = int(slot_ids[-1]) + 1
        item_dst = np.where(multi, slot_ids, -1).astype(np.int32)
        multi_req = item_req[multi]
        np.cumsum(np.bincount(multi_req, minlength=num_requests), out=merge_indptr[1:])
        merge_partials = slot_ids[multi][_stable_argsort(multi_req, num_requests)].astype(np.int32)

    # --- the packs' KV, each the concatenation of its inlined ancestors' and its own node slots
    if fa.slots32 is None:
        raise ValueError("KV slot index does not fit in int32")
    if pack_node is None:
        seg_ptr = seg_node = None
        all_slots = fa.slots32.copy()
    else:
        seg_ptr, seg_node = _pack_paths(fa, pack_node, top)
        all_slots = fa.slots32[_ranges(fa.slot_ptr[seg_node], fa.tok[seg_node])]

    stats = PlanStats(
        kv_bytes_planned=planned_tokens * tok_bytes,
        kv_bytes_per_request=fa.request_tokens * tok_bytes,
        kv_bytes_unique=fa.unique_tokens * tok_bytes,
        partial_bytes=num_partials * partial_bytes,
        num_items=num_items,
        num_partials=num_partials,
    )
    infos = _PackBuilder(
        pack_node, seg_ptr, seg_node, pack_tokens, pack_ptr, pack_req, splits, pack_blocks, tiles, group, reqs_per_block
    )
    return PackPlan(
        heads=heads,
        num_requests=num_requests,
        tile_ms=tiles.tile_ms,
        items=torch.from_numpy(items),
        kv_slots=torch.from_numpy(all_slots),
        item_req=torch.from_numpy(item_req),
        item_dst=torch.from_numpy(item_dst),
        merge_indptr=torch.from_numpy(merge_indptr),
        merge_partials=torch.from_numpy(merge_partials),
        num_partials=num_partials,
        max_slot=fa.slot_max,
        packs=infos,
        stats=stats,
    )


def _item_order(
    kv_len: np.ndarray, tile: np.ndarray, kv_begin: np.ndarray, num_tiles: int, kv_total: int
) -> np.ndarray:
    """Stable order by (-kv_len, tile, kv_begin), through one int64 key when it fits."""
    span = kv_total + 1
    longest = int(kv_len.max())
    if (longest + 1) * num_tiles * span < 1 << 62:
        return (((longest - kv_len) * num_tiles + tile) * span + kv_begin).argsort(kind="stable")
    return np.lexsort((np.arange(kv_len.shape[0]), kv_begin, tile, -kv_len))


def _choose_packs(
    fa: ForestArrays, reqs_per_block: int, tok_bytes: int, partial_bytes: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The profit model over all nodes at once: (tokens incl. inherited, first node of each node's pack
    path or None when nothing is inlined, packed mask).

    A node inherits the tokens of its parent when the parent is inlined; more tokens only make packing
    more profitable, so iterating "decide, then inherit" from the nodes' own tokens reaches the top-down
    answer after at most (depth of the deepest inlined chain + 1) rounds."""
    # Fast check on the shared nodes alone: single-request nodes are always packed.
    q = fa.shared_q
    saved_per_token = (q - (q + (reqs_per_block - 1)) // reqs_per_block) * tok_bytes
    if (saved_per_token * fa.shared_tok > q * partial_bytes).all():
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


def _pack_paths(fa: ForestArrays, pack_node: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    def __init__(self, pack_node, seg_ptr, seg_node, tokens, req_ptr, reqs, splits, blocks, tiles, group, rpb) -> None:
        self.args = (pack_node, seg_ptr, seg_node, tokens, req_ptr, reqs, splits, blocks, tiles, group, rpb)
        self.value: list[PackInfo] | None = None

    def __call__(self) -> list[PackInfo]:
        if self.value is None:
            pack_node, seg_ptr, seg_node, tokens, req_ptr, reqs, splits, blocks, tiles, group, rpb = self.args
            if pack_node is None:
                paths = [[n] for n in range(tokens.shape[0])]
            else:
                flat, ptr = seg_node.tolist(), seg_ptr.tolist()
                paths = [flat[a:b] for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
            flat, ptr = reqs.tolist(), req_ptr.tolist()
            requests = [flat[a:b] for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
            tile_m = _tile_lut(tiles.tile_ms, group, rpb)[1][np.minimum(np.diff(req_ptr), rpb)]
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
def _tile_lut(tile_ms: tuple[int, ...], group: int, reqs_per_block: int) -> tuple[np.ndarray, np.ndarray]:
    """(tile index, tile m) of a row block of ``n`` requests, indexed by ``n`` in 0..reqs_per_block."""
    arr = _tile_array(tile_ms)
    tile = _tile_for(arr, np.arange(reqs_per_block + 1) * group)
    tile_m = arr[tile]
    tile.setflags(write=False)
    tile_m.setflags(write=False)
    return tile, tile_m


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
