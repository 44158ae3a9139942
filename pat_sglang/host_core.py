"""Host work of *pack* compiled for speed: ``kernels/host_simulate.c``, ``host_rows.c``, ``host_items.c`` and
``host_edit.c`` (with their shared ``host_sort.h``) through ctypes.

Role in pack-forward-merge: part of *pack*. Four pieces of the planner's host work are loops that numpy serves badly:

* the split search's cost model: on a changed decode step the planner costs a few KV split lengths by simulating
  the forward launch (``planner._launch_costs``): in Python ~20 numpy calls over the candidate x pack arrays
  (~100 us on the project's 2-core VM) and ~35 us a simulated candidate (a heap of a few hundred steps), most of a
  split-search step's host time. The C version gives the same costs bit for bit in one call of a few microseconds;
* the flat forest of the standalone ``plan()``: ``PrefixForest.from_flat`` groups rows by their leading slots, ends
  each group's node where two of its rows first differ, and finds the largest slot the forest reads (the pool bound
  check). numpy does it one tree level at a time (~30 calls a level, windows gathered into copies) and reads the
  unique slots again for the maximum; the C version (``kernels/host_rows.c``) walks the forest depth-first in one
  call, compares rows in place in memcmp chunks, takes each node's maximum while its slots are in cache, and writes
  the forest's derived arrays too (the same arrays; 256 rows x 4k tokens with sharing: ~300 us instead of 500-1000).
  Its large reads go to a worker thread of the library (a pthread that never takes the interpreter lock): a group's
  row comparisons are split between it and the caller, and ``pat_sglang.plan`` leaves the private leaves' slot check
  (the whole table where nothing is shared) to it while it plans the forest (``SlotScan``, joined before the plan is
  returned). Where the VM's other core is busy the caller does the pieces the worker has not taken.
* a plan's items: once the packs and their split counts are known, ``planner._plan_items`` lays out the row blocks x
  KV splits, sorts them into launch order, lists their request entries, numbers the partial slots and makes the
  merge map in ~45 numpy calls over a few hundred items (~60 us on the VM, each call 1-5 us whatever its size); the C
  version (``kernels/host_items.c``) makes the same arrays in one call (~5 us);
* an edited forest's arrays: on a changed decode step ``forest_edit`` decides the kept nodes and each request's attach
  node in Python, then makes the forest's arrays from them (``RadixIndex._forest``, ~20 numpy calls over the batch)
  and the planner its derived arrays (``PrefixForest._get``, ~10 more); ``kernels/host_edit.c`` makes them all in one
  pass over the requests' kept ancestors, and where the requests sit before that (``RadixIndex._places``) in another.

All four are built on first use with the system C compiler (``$CC``, else ``cc``: SGLang's Triton needs one at run time
too) into one library, cached in ``<cache root>/host/`` under the hash of the sources and the compiler's version (a
second process loads it without compiling), and loaded with ctypes. Where no compiler works, or with
``PAT_SGLANG_HOST_CORE=0``, the planner and the forest run their numpy/Python versions (same results, slower) and the
log says why, once.

A fifth piece works on the publisher's objects: ``kernels/host_batch.c`` ``pat_pick_batch`` makes a changed decode
batch's per-request tuples and its joined and left rows in one pass (``ChainTable.publish_rows``, where six C-level
passes over the batch, the rows as a list and a set, two tuples, two set differences and a count, took 30-55 us p50 of
a changed batch of 256 on the 2-core VM), and ``pat_survivors`` tells which requests of a changed batch are last
batch's (the same entry object in the same row: ``forest_edit.survivors``, read by the forest edit and the re-made
plans; ~10 numpy calls and a Python pass over the entries). It uses the CPython API: it is built into the extension
module below, whose functions serve where that module loads, else into a library of its own, compiled with the
interpreter's headers and loaded with ``ctypes.PyDLL`` (a ctypes call of Python objects costs ~1 us of argument
conversion, several run cold per changed step; either way the calls hold the interpreter lock). Same cache, switch and
fallbacks (``chain_table._pick_batch``, ``forest_edit._survivors``).

The ctypes wrappers of the plan items and the forest edit (``_HostCore.plan_items``, ``edit_forest``, ``edit_places``)
cost more than the compiled work they call when a changed decode step runs them cold (dtype and shape checks, output
allocations, an address per array, 12-24 argument conversions, views sliced out of the results: ~150 us of glue
around ~70 us of C per edited step at batch 256 on the VM). ``kernels/host_glue.c`` is an extension module (CPython and
numpy C API, built from the same cache with ``host_items.c`` and ``host_edit.c``, imported from there) that does the
same in one C call each; where it loads, ``_HostCore`` binds its three functions in place of the wrappers, which stay
the fallback (``PAT_SGLANG_HOST_GLUE=0``, or no numpy headers) and are compared with it in the tests.

Five more pieces live in the extension module only, with numpy as their fallback and reference: a forest built from
radix paths (``kernels/host_paths.c``, ``PrefixForest.from_paths``: a changed batch whose shared structure the forest
edit cannot follow; ~60 numpy calls, 580-720 us run cold at 256 requests on the VM); the publisher's pending row paths
written into its row tables (``write_paths``, ``chain_table._RowPaths.flush``: three ints per node through a Python
iterator, 80-320 us there) and a batch's flat paths gathered from them (``gather_paths``, ``_RowPaths.paths``); and
last step's plan re-made for joiners and leavers (``remade_items``, ``kernels/host_remade.c``, ``planner.remade_plan``
under ``PAT_SGLANG_REMAKE_PLANS=1``: ~225 us of numpy there); and a planning pass's packs, split counts and items
(``plan_pass``, ``kernels/host_pass.c`` with ``host_simulate.c``'s split search, ``planner._compiled_pass``: the ~20
numpy and extension-module calls of ``planner._numpy_pass`` in one, but for a search over packs that are all alike).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import importlib.util
import itertools
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from .config import cache_root, data_dir

logger = logging.getLogger(__name__)

DISABLE_ENV = "PAT_SGLANG_HOST_CORE"  # "0": the numpy/Python versions
SOURCE_NAMES = ("host_simulate.c", "host_rows.c", "host_items.c", "host_edit.c")  # compiled together into one library
PY_SOURCE_NAMES = ("host_batch.c",)  # the CPython-API piece: a ctypes.PyDLL library where the extension module is off
# The extension module that calls four of SOURCE_NAMES' functions (split_length, plan_items, edit_forest, edit_places)
# and the publisher pieces (host_batch.c) without ctypes, launches built CUDA graphs (host_launch.c), builds forests
# from radix paths (host_paths.c), re-makes plans (host_remade.c) and makes a planning pass's packs (host_pass.c; these
# three with no ctypes wrapper: numpy is their fallback) (``_load_glue``)
GLUE_SOURCE_NAMES = (
    "host_glue.c", "host_items.c", "host_edit.c", "host_launch.c", "host_simulate.c", "host_paths.c", "host_remade.c",
    "host_pass.c", "host_batch.c",
)
GLUE_MODULE = "pat_host_glue"  # its PyInit_ name
GLUE_ENV = "PAT_SGLANG_HOST_GLUE"  # "0": the ctypes wrappers and launches serve instead (the A/B and test switch)
# included by the sources: written beside them for every build, part of its hash
HEADER_NAMES = ("host_sort.h", "host_plan.h", "host_launch.h", "host_bound.h")
COMPILE_FLAGS = ("-O2", "-shared", "-fPIC", "-std=c99", "-pthread")  # pthread: host_rows.c's scan worker
COMPILE_TIMEOUT_S = 120

_lock = threading.RLock()  # re-entrant: the publisher piece's load takes the extension module's (_load_batch)
_Lib = TypeVar("_Lib")


class _LoadOnce(Generic[_Lib]):
    """A library built and loaded on its first use, once per process (under ``_lock``); None where it cannot be."""

    def __init__(self, load: Callable[[], _Lib | None]) -> None:
        self._load = load
        self._state: tuple[bool, _Lib | None] = (False, None)  # (tried, the library or None)

    def get(self) -> _Lib | None:
        tried, lib = self._state
        if tried:
            return lib
        with _lock:
            if not self._state[0]:
                self._state = (True, self._load())
            return self._state[1]

    def reset(self) -> None:
        with _lock:
            self._state = (False, None)


_ROWS_OUTSIDE = -(2**63)  # pat_flat_forest: a row is empty or reaches outside ind (INT64_MIN)
_char_at = ctypes.c_char.from_buffer


def _address(arr: np.ndarray) -> int:
    """The address of a C-contiguous array's data: through a ctypes view of its buffer (~0.3 us here) where the array
    is writable and not empty, else numpy's ``arr.ctypes.data`` (~1.3 us: it builds a helper object each time; a
    planning pass passes ~15 pointers)."""
    try:
        return ctypes.addressof(_char_at(arr))
    except (TypeError, ValueError, BufferError):  # read-only, no bytes, or not contiguous
        return arr.ctypes.data


def _typed(lib: ctypes.CDLL, name: str, restype: object, argtypes: list) -> Callable:
    """``lib.name`` with its C signature declared (ctypes then converts and checks every argument)."""
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double  # pointer, int64_t, double


class _HostCore:
    """The loaded library's entry points, typed once."""

    def __init__(self, lib: ctypes.CDLL, glue: Any = None) -> None:
        self.costs = _typed(lib, "pat_launch_costs", None,
                            [_P, _P, _P, _I, _P, _D, _P, _P, _P, _I, _I, _I, _I, _I, _D, _D, _I, _P, _P, _P])
        self.runs = _typed(lib, "pat_greedy_makespan", _D, [_P, _P, _I, _I, _D, _I, _P])
        self.forest = _typed(lib, "pat_flat_forest", _I, [_P, _I, _I, _P, _P, _I, _I] + [_P] * 9)
        self.scan_start = _typed(lib, "pat_scan_start", _I, [_P, _I, _I, _P, _P, _I, _P])
        self.scan_finish = _typed(lib, "pat_scan_finish", ctypes.c_uint64, [_P])
        self.split = _typed(lib, "pat_split_length", _I,
                            [_P, _I, _I] + [_P] * 4 + [_I] * 4 + [_P, _P, _I, _I, _D, _D, _I])
        self.items = _typed(lib, "pat_plan_items", _I,
                            [_I] + [_P] * 5 + [_I] + [_P] * 2 + [_I, _P] + [_I] * 4 + [_P] * 9)
        self.edit = _typed(lib, "pat_edit_forest", _I, [_I] * 2 + [_P] * 2 + [_I] + [_P] * 3 + [_I])
        self.places = _typed(lib, "pat_edit_places", _I, [_I] * 2 + [_P, _I] + [_P] * 2 + [_I] + [_P] * 5)
        self.scan_job_words = ctypes.c_int64.in_dll(lib, "pat_scan_job_words").value  # a scan job's own words
        # The extension module's versions of split_length, plan_items, edit_forest and edit_places, where it loads:
        # the same arguments, checks and arrays in one C call each. The methods below (ctypes) are the fallback; bound
        # as instance attributes so that a call reaches the C function without a Python frame.
        self.glue = glue
        if glue is not None:
            self.split_length = glue.split_length
            self.plan_items = glue.plan_items
            self.edit_forest = glue.edit_forest
            self.edit_places = glue.edit_places

    def launch_costs(self, splits: np.ndarray, pack_tokens: np.ndarray, full_blocks: np.ndarray, full_token_bytes: int,
                     last_token_bytes: np.ndarray, full_overhead: float, last_overhead: np.ndarray,
                     pack_req: np.ndarray, pack_req_count: np.ndarray, num_requests: int, slots: int,
                     chain_slot_bytes: float, tolerance: float, batch_items: int) -> tuple[np.ndarray, np.ndarray]:
        """``planner._launch_costs`` in one call (``kernels/host_simulate.c`` ``pat_launch_costs``): (cost, items) of
        each candidate row of ``splits`` (candidate x pack)."""
        if not all(np.issubdtype(np.asarray(a).dtype, np.integer) for a in (pack_tokens, last_token_bytes)) or \
                int(full_token_bytes) != full_token_bytes:
            raise ValueError("launch_costs: pack tokens and token bytes must be integers")
        splits = np.ascontiguousarray(splits, dtype=np.int64)
        pack_tokens = np.ascontiguousarray(pack_tokens, dtype=np.int64)
        full_blocks = np.ascontiguousarray(full_blocks, dtype=np.int64)
        last_token_bytes = np.ascontiguousarray(last_token_bytes, dtype=np.int64)
        last_overhead = np.ascontiguousarray(last_overhead, dtype=np.float64)
        pack_req = np.ascontiguousarray(pack_req, dtype=np.int64)
        pack_req_count = np.ascontiguousarray(pack_req_count, dtype=np.int64)
        cands, packs = splits.shape
        if any(a.shape != (packs,) for a in (pack_tokens, full_blocks, last_token_bytes, last_overhead,
                                               pack_req_count)) or int(pack_req_count.sum()) != pack_req.shape[0]:
            raise ValueError("launch_costs: per-pack arrays do not match the candidates' packs")
        # cost, items (int64), the scratch: one buffer
        out = np.empty(2 * cands + 13 * packs + 1 + slots + num_requests + 3 * cands, dtype=np.float64)
        at = _address(out)
        self.costs(_address(splits), _address(pack_tokens), _address(full_blocks), int(full_token_bytes),
                   _address(last_token_bytes), full_overhead, _address(last_overhead), _address(pack_req),
                   _address(pack_req_count), pack_req.shape[0], num_requests, cands, packs, slots, chain_slot_bytes,
                   tolerance, batch_items, at, at + 8 * cands, at + 16 * cands)
        return out[:cands], out[cands : 2 * cands].view(np.int64)

    def split_length(self, candidates: list[int], longest: int, pack_tokens: np.ndarray, pack_blocks: np.ndarray,
                     pack_req_count: np.ndarray, pack_req: np.ndarray, num_requests: int, slots: int,
                     block_token_bytes: np.ndarray, block_overheads: np.ndarray, long_tokens: int,
                     chain_slot_bytes: float, tolerance: float, batch_items: int) -> int:
        """``planner._split_length``'s choice past its uniform case (packs not all alike: the caller's uniform model
        takes those) in one call (``kernels/host_simulate.c`` ``pat_split_length``): the chosen split length.
        Per-pack arrays: C-contiguous int64 (checked); ``pack_req``: int32; ``block_token_bytes`` (int64) and
        ``block_overheads`` (float64): indexed as ``planner._block_costs`` makes them (a long pack's blocks, from
        ``long_tokens`` KV tokens on, in the second half)."""
        packs = pack_tokens.shape[0]
        if any(a.dtype != np.int64 or a.shape != (packs,) or not a.flags.c_contiguous
               for a in (pack_tokens, pack_blocks, pack_req_count)) or pack_req.dtype != np.int32 or \
                not pack_req.flags.c_contiguous or block_overheads.dtype != np.float64 or \
                block_token_bytes.dtype != np.int64 or block_token_bytes.shape != block_overheads.shape or \
                not block_token_bytes.flags.c_contiguous or not block_overheads.flags.c_contiguous:
            raise ValueError("split_length: per-pack arrays must be C-contiguous int64 of one length, pack_req int32")
        if not candidates:
            raise ValueError("split_length: no candidate lengths")
        lengths = np.array(candidates, dtype=np.int64)
        got = self.split(_address(lengths), lengths.shape[0], longest, _address(pack_tokens), _address(pack_blocks),
                         _address(pack_req_count), _address(pack_req), pack_req.shape[0], num_requests, packs, slots,
                         _address(block_token_bytes), _address(block_overheads), block_overheads.shape[0],
                         long_tokens, chain_slot_bytes, tolerance, batch_items)
        if got < 0:
            raise MemoryError("pat_split_length: no scratch memory")
        return int(got)

    def plan_items(self, pack_tokens: np.ndarray, kv_offset: np.ndarray, pack_req_count: np.ndarray,
                   pack_req: np.ndarray, splits: np.ndarray, reqs_per_block: int, tile_of_size: np.ndarray,
                   tile_m_of_size: np.ndarray, long_tokens: int, leaf_pack: np.ndarray | None, num_requests: int,
                   num_items: int, num_entries: int, max_partials: int | None, item_fields: int) -> tuple | None:
        """``planner._plan_items`` in one call (``kernels/host_items.c`` ``pat_plan_items``): (items, item_req,
        item_dst, merge_indptr, merge_partials, num_partials, item_pack, item_split, open_mask, longest item's tokens,
        open items), the same arrays; None when the plan needs more than ``max_partials`` partial
        slots. The per-pack arrays: int64, C-contiguous (as the planner makes them; checked); ``pack_req``: int32,
        ``pack_req_count`` entries per pack, every one below ``num_requests``; ``num_items`` / ``num_entries``: the
        counts they make (``splits @ blocks``, ``splits @ pack_req_count``: the buffers are sized by them)."""
        per_pack = (pack_tokens, kv_offset, pack_req_count, splits)
        packs = pack_tokens.shape[0]
        if any(a.dtype != np.int64 or a.shape != (packs,) or not a.flags.c_contiguous for a in per_pack) or \
                pack_req.dtype != np.int32 or not pack_req.flags.c_contiguous:
            raise ValueError("plan_items: per-pack arrays must be C-contiguous int64 of one length, pack_req int32")
        if leaf_pack is not None and (leaf_pack.dtype != np.bool_ or leaf_pack.shape != (packs,)):
            raise ValueError("plan_items: leaf_pack must be a bool per pack")
        items = np.zeros((num_items, item_fields), dtype=np.int32)
        ints = np.empty(3 * num_entries + num_requests + 1, dtype=np.int32)  # item_req, item_dst, merge map
        longs = np.empty(2 * num_items + 2, dtype=np.int64)  # item_pack, item_split, summary
        open_mask = None if leaf_pack is None else np.empty(num_items, dtype=np.bool_)
        tiles = np.ascontiguousarray(tile_of_size, dtype=np.int64)
        tile_ms = np.ascontiguousarray(tile_m_of_size, dtype=np.int64)
        i32, i64 = _address(ints), _address(longs)
        num_partials = self.items(
            packs, _address(pack_tokens), _address(kv_offset), _address(pack_req_count), _address(pack_req),
            _address(splits), reqs_per_block, _address(tiles), _address(tile_ms), long_tokens,
            None if leaf_pack is None else _address(leaf_pack), num_requests, num_items, num_entries,
            -1 if max_partials is None else max_partials, _address(items), i32, i32 + 4 * num_entries,
            i32 + 8 * num_entries, i32 + 4 * (2 * num_entries + num_requests + 1), i64, i64 + 8 * num_items,
            None if open_mask is None else _address(open_mask), i64 + 16 * num_items)
        if num_partials == -1:
            return None
        if num_partials < 0:
            raise MemoryError("pat_plan_items: no scratch memory")
        merge_at = 2 * num_entries + num_requests + 1
        summary = longs[2 * num_items :].tolist()
        return (items, ints[:num_entries], ints[num_entries : 2 * num_entries], ints[2 * num_entries : merge_at],
                ints[merge_at : merge_at + num_partials], num_partials, longs[:num_items],
                longs[num_items : 2 * num_items], open_mask, *summary)

    def edit_forest(self, kept: np.ndarray, width: int, kept_q: list[int], attach: np.ndarray,
                    seq: np.ndarray) -> dict[str, np.ndarray] | None:
        """``forest_edit.RadixIndex._forest``'s arrays in one call (``kernels/host_edit.c`` ``pat_edit_forest``): the
        ``len(kept_q)`` kept nodes (``forest_edit._Kept.packed``: tok, start, parent, depth, then per attach node at
        a + 1 its end, its lineage's length and its lineage as rows of ``width``; int64) with ``kept_q`` members each,
        and one leaf per request under ``attach`` ending at ``seq`` (C-contiguous int64, one per request). The forest's
        arrays by name (tok, start, parent, depth, req_ptr, req_flat) and its derived ones (``PrefixForest._get``: q,
        rep, req32, shared, entry_node, ends_here, ending, last_node); None where a leaf would be empty or the members
        do not add up to ``kept_q``."""
        num_kept, n = len(kept_q), attach.shape[0]
        if any(a.dtype != np.int64 or not a.flags.c_contiguous for a in (kept, attach, seq)) or seq.shape[0] != n or \
                kept.shape[0] != 4 * num_kept + (2 + width) * (num_kept + 1):
            raise ValueError("edit_forest: C-contiguous int64 arrays: the kept nodes packed, one attach node and one "
                             "length per request")
        counts = np.array(kept_q, dtype=np.int64)
        nodes = num_kept + n
        entries = sum(kept_q) + n
        # one buffer: ten per-node arrays (req_ptr one longer), last_node, req_flat and entry_node, req32 and ends_here
        head = 8 * nodes + 1 + n
        buf = np.empty(head + 2 * entries + (entries + 1) // 2 + (entries + 7) // 8, dtype=np.int64)
        got = self.edit(num_kept, width, _address(kept), _address(counts), n, _address(attach), _address(seq),
                        _address(buf), entries)
        if got < 0:
            return None
        out = {name: buf[k * nodes : (k + 1) * nodes] for k, name in
               enumerate(("tok", "start", "parent", "depth", "q", "rep", "ending"))}
        out["req_ptr"] = buf[7 * nodes : 8 * nodes + 1]
        out["last_node"] = buf[8 * nodes + 1 : head]
        out["req_flat"] = buf[head : head + entries]
        out["entry_node"] = buf[head + entries : head + 2 * entries]
        tail = buf[head + 2 * entries :].view(np.int32)
        out["req32"] = tail[:entries]
        out["ends_here"] = tail[2 * ((entries + 1) // 2) :].view(np.bool_)[:entries]
        out["shared"] = out["q"] > 1
        return out

    def edit_places(self, old_of: np.ndarray, old_attach: np.ndarray, old_first: np.ndarray, joiners: list[int],
                    placed: list[tuple[int, int]], n: int) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]]:
        """``forest_edit.RadixIndex._places`` in one call (``kernels/host_edit.c`` ``pat_edit_places``): per request
        of the edited batch (``n``, padding included) its attach node and first private key (a survivor's from
        ``old_attach``/``old_first`` through ``old_of``, a joiner's from ``placed``), and the joiners' first private
        keys that two requests or more now have -> those requests. C-contiguous int64 arrays."""
        if any(a.dtype != np.int64 or not a.flags.c_contiguous for a in (old_of, old_attach, old_first)) or \
                old_attach.shape != old_first.shape:
            raise ValueError("edit_places: C-contiguous int64 arrays, one old attach node and key per old request")
        num = len(joiners)
        ints = np.array([*joiners, *itertools.chain.from_iterable(placed)], dtype=np.int64)
        out = np.empty(3 * n + 2 * num, dtype=np.int64)
        at, p = _address(ints), _address(out)
        got = self.places(old_of.shape[0], n, _address(old_of), old_attach.shape[0], _address(old_attach),
                          _address(old_first), num, at, at + 8 * num, p, p + 8 * n, p + 16 * n)
        if got < 0:
            raise ValueError("edit_places: an old index or a joiner outside the batches")
        flat = out[2 * n : 2 * n + got].tolist()
        groups: dict[int, list[int]] = {}
        i = 0
        while i < got:
            groups[flat[i]] = flat[i + 2 : i + 2 + flat[i + 1]]
            i += 2 + flat[i + 1]
        return out[:n], out[n : 2 * n], groups

    def greedy_makespan(self, values: np.ndarray, counts: np.ndarray, slots: int, limit: float,
                        batch_items: int) -> float:
        """``planner._greedy_makespan`` over runs given as arrays."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        loads = np.empty(max(1, slots), dtype=np.float64)
        return self.runs(_address(values), _address(counts), values.shape[0], slots, limit, batch_items,
                         _address(loads))

    def flat_forest(self, ind: np.ndarray, row_base: np.ndarray, lengths: np.ndarray) -> tuple[dict, int]:
        """The canonical forest of the rows ``ind[row_base[r] : row_base[r] + lengths[r]]`` (``kernels/host_rows.c``
        ``pat_flat_forest``) and the largest slot as an unsigned integer (above the signed range iff some slot the
        forest reads is negative). The forest as ``PrefixForest``'s arrays by name, in canonical node order: tok,
        start, parent, depth, req_ptr, req_flat, and the derived ones (``PrefixForest._get``): q, rep, req32, shared,
        entry_node, ends_here, ending, last_node. ``ind``: C-contiguous int32 or int64; every row non-empty and within
        ``ind`` (checked in C: a row out of bounds would be read out of bounds)."""
        return self._flat_forest(ind, row_base, lengths, None)

    def flat_forest_scanning(self, ind: np.ndarray, row_base: np.ndarray,
                             lengths: np.ndarray) -> tuple[dict, int, SlotScan]:
        """``flat_forest`` with the maximum of its shared nodes only, and the private leaves' (nodes of one request,
        each read once from memory) left to a scan on the worker thread: (arrays, shared nodes' maximum, the scan)."""
        scan = SlotScan(self, ind, self._scan_job(lengths.shape[0]))
        arrays, top = self._flat_forest(ind, row_base, lengths, scan)
        return arrays, top, scan

    def _flat_forest(self, ind: np.ndarray, row_base: np.ndarray, lengths: np.ndarray,
                     leaf_scan: SlotScan | None) -> tuple[dict, int]:
        if ind.dtype not in (np.int32, np.int64) or not ind.flags.c_contiguous:
            raise ValueError(f"ind must be C-contiguous int32 or int64, got {ind.dtype}")
        row_base = np.ascontiguousarray(row_base, dtype=np.int64)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        n = lengths.shape[0]
        if row_base.shape[0] != n or n == 0:
            raise ValueError(f"flat_forest: {row_base.shape[0]} row starts for {n} row lengths (at least one row)")
        scan_at = None if leaf_scan is None else _address(leaf_scan.job)
        # One buffer for every output (numpy's ctypes pointers cost ~2 us each here), in int64 units: seven per-node
        # arrays and req_ptr (2n each: at most 2n - 1 nodes), last_node (n), the maximum (1), req_flat and entry_node
        # (cap each), req32 (cap int32) and ends_here (cap bytes).
        cap = 4 * n  # a request's entries: one per node on its path (four levels deep here; more: called again)
        while True:
            ent = 17 * n + 1  # where the entry arrays begin
            buf = np.empty(ent + 2 * cap + (cap + 1) // 2 + (cap + 7) // 8, dtype=np.int64)
            p = _address(buf)
            got = self.forest(_address(ind), ind.itemsize, ind.shape[0], _address(row_base), _address(lengths), n, cap,
                              scan_at, p, p + 8 * 14 * n, p + 8 * ent, p + 8 * (ent + cap), p + 8 * (ent + 2 * cap),
                              p + 8 * (ent + 2 * cap + (cap + 1) // 2), p + 8 * 16 * n, p + 8 * 17 * n)
            if got > 0:
                if leaf_scan is not None:
                    leaf_scan.started()  # the C call posted it: from here on it must be finished
                break
            if got == 0:
                raise MemoryError("pat_flat_forest: no scratch memory")
            if got == _ROWS_OUTSIDE:
                raise ValueError("flat_forest: rows must be non-empty and lie within ind")
            cap = -got
        out = {name: buf[k * 2 * n : k * 2 * n + got] for k, name in
               enumerate(("tok", "start", "parent", "depth", "q", "rep", "ending"))}
        out["req_ptr"] = buf[14 * n : 14 * n + got + 1]
        entries = int(out["req_ptr"][-1])
        out["req_flat"] = buf[ent : ent + entries]
        out["entry_node"] = buf[ent + cap : ent + cap + entries]
        tail = buf[ent + 2 * cap :].view(np.int32)
        out["req32"] = tail[:entries]
        out["ends_here"] = tail[2 * ((cap + 1) // 2) :].view(np.bool_)[:entries]
        out["last_node"] = buf[16 * n : 17 * n]
        out["shared"] = out["q"] > 1
        return out, int(buf[17 * n : 17 * n + 1].view(np.uint64)[0])

    def scan(self, ind: np.ndarray, begins: np.ndarray, counts: np.ndarray) -> SlotScan:
        """The unsigned maximum of the ranges ``ind[begins[k] : begins[k] + counts[k]]``, found on the library's worker
        thread while the caller goes on (``SlotScan.result`` joins it). ``ind``: C-contiguous int32 or int64."""
        if ind.dtype not in (np.int32, np.int64) or not ind.flags.c_contiguous:
            raise ValueError(f"scan: ind must be C-contiguous int32 or int64, got {ind.dtype}")
        begins = np.ascontiguousarray(begins, dtype=np.int64)
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        if begins.shape != counts.shape or begins.ndim != 1:
            raise ValueError("scan: one begin and one count per range")
        scan = SlotScan(self, ind, self._scan_job(begins.shape[0]))
        got = self.scan_start(_address(ind), ind.itemsize, ind.shape[0], _address(begins), _address(counts),
                              begins.shape[0], _address(scan.job))
        if got < 0:
            raise ValueError("scan: every range must lie within ind")
        scan.started(posted=bool(got))
        return scan

    def _scan_job(self, ranges: int) -> np.ndarray:
        """A scan job's words for up to ``ranges`` ranges (host_rows.c: its own words, then per range a begin, a count
        and a first chunk, then the number of chunks)."""
        return np.empty(self.scan_job_words + 3 * ranges + 1, dtype=np.int64)


class SlotScan:
    """A started scan (``kernels/host_rows.c`` ``pat_scan_start``, or ``pat_flat_forest``'s leaf scan): the unsigned
    maximum of ranges of ``ind`` (above the signed range iff one of their slots is negative; 0 for none), scanned by
    the library's worker thread beside the caller's own work, which ``result`` then helps finish and joins. The worker
    reads ``ind`` and the job until then: both are held here, and a scan dropped without ``result`` is joined when
    collected (never a read of freed memory)."""

    __slots__ = ("_core", "_ind", "job", "_top", "posted")

    def __init__(self, core: _HostCore, ind: np.ndarray, job: np.ndarray) -> None:
        self._core, self._ind, self.job = core, ind, job
        self._top: int | None = 0  # 0 until started(), None while running, then the result
        self.posted: bool | None = None  # handed to the worker (None: not known, a leaf scan of pat_flat_forest)

    def started(self, posted: bool | None = None) -> None:
        """The C side has set the job up (and maybe posted it): ``result`` must now finish it."""
        self._top, self.posted = None, posted

    def result(self) -> int:
        """The unsigned maximum, once the caller's share of the scan is done and the worker's too."""
        if self._top is None:
            self._top = int(self._core.scan_finish(_address(self.job)))
        return self._top

    def __del__(self) -> None:
        if getattr(self, "_top", 0) is None:  # dropped while running: joined before its buffers can be freed
            self.result()


# The publisher pieces (``kernels/host_batch.c``): per function, the ``_HostBatch`` attribute holding it, its C name
# and ctypes argument types (through ctypes.PyDLL), and its name in the extension module (``kernels/host_glue.c``)
_PY = ctypes.py_object
_BATCH_FUNCTIONS = (
    ("pick", "pat_pick_batch", [_PY] * 5 + [_I], "pick_batch"),
    ("match", "pat_survivors", [_PY] * 6, "survivors"),
    ("_signatures", "pat_chain_signatures", [_PY] * 3, "chain_signatures"),
    ("_wave_entries", "pat_wave_entries", [_PY] * 7, "wave_entries"),
    ("_set_wave", "pat_set_wave", [_PY] * 5, "set_wave"),
    ("_tally_refs", "pat_tally_refs", [_PY] * 3, "tally_refs"),
    ("_publish_read", "pat_publish_read", [_PY] * 8 + [_I], "publish_read"),
    ("_tally_changes", "pat_tally_changes", [_PY] * 4, "tally_changes"),
)


class _HostBatch:
    """The publisher pieces' entry point (``kernels/host_batch.c``): the extension module's functions (``glue``, built
    with ``host_batch.c`` too: the same C, called without ctypes' ~1 us of argument conversion per call) or, where that
    module does not serve, the ctypes.PyDLL library ``lib``'s, typed once."""

    BOUND = tuple(attribute for attribute, *_ in _BATCH_FUNCTIONS)  # the attributes holding the C functions

    def __init__(self, lib: ctypes.PyDLL | None, glue: Any = None) -> None:
        self.via_glue = lib is None
        for attribute, c_name, argtypes, glue_name in _BATCH_FUNCTIONS:
            setattr(self, attribute, getattr(glue, glue_name) if lib is None else _typed(lib, c_name, _PY, argtypes))
        # pat_survivors' row table: every slot -1 between calls (each call holds the interpreter lock throughout and
        # leaves it so, so one table serves every thread), grown when a row is beyond it
        self._table = np.full(1024, -1, dtype=np.int64)

    def pick_batch(self, rows: np.ndarray, row_entry: list, row_rid: list, before: np.ndarray | None,
                   mark: np.ndarray, stamp: int) -> tuple[tuple, tuple, int, list[int], list[int]]:
        """``chain_table._pick_batch`` in one call: (entries, rids, absent, joined, left) of the batch ``rows``
        (C-contiguous int64, every row < ``len(mark)`` and < the lists' lengths) against the last batch's rows
        ``before`` (C-contiguous int64, distinct; None: no change asked for). ``mark``: a writable int64 array of one
        slot per row, no slot holding ``stamp`` or ``stamp + 1`` (it is left holding them: move ``stamp`` on by 2 per
        call)."""
        return self.pick(rows, row_entry, row_rid, before, mark, stamp)

    def chain_signatures(self, nodes: list, root: Any, memo: dict) -> list:
        """``chain_table.wave_signatures`` in one call (``kernels/host_batch.c`` ``pat_chain_signatures``): each of
        ``nodes``' radix chain signature (or None), read through and written into ``memo`` as the Python walk does."""
        return self._signatures(nodes, root, memo)

    def wave_entries(self, changed: list, cls: type, keys: np.ndarray, lengths: np.ndarray, depths: np.ndarray,
                     starts: np.ndarray, cached: np.ndarray) -> Any:
        """``chain_table.make_entries``' arrays written and its entries made in one call (``kernels/host_batch.c``
        ``pat_wave_entries``): ``keys``/``lengths`` (made read-only), ``starts`` and ``cached`` filled from the
        ``changed`` rows' signatures (``depths``: their lengths); the ``cls`` entries, or NotImplemented (nothing
        written) where the arguments are not of that shape."""
        return self._wave_entries(changed, cls, keys, lengths, depths, starts, cached)

    def set_wave(self, entries: dict, row_entry: list, rows_of_node: dict, rows: list, made: list) -> Any:
        """``ChainTable._set_entries``' loop over a wave in one call (``kernels/host_batch.c`` ``pat_set_wave``): each
        of ``rows`` gets its entry of ``made`` in ``entries`` and ``row_entry``, the node -> rows index moved from its
        old entry's nodes to the new one's. None, or NotImplemented (nothing changed) where the arguments are not of
        that shape."""
        return self._set_wave(entries, row_entry, rows_of_node, rows, made)

    def tally_refs(self, req: np.ndarray, keys: np.ndarray, tokens: np.ndarray) -> Any:
        """``chain_table._Tally.rebuild``'s count in one call (``kernels/host_batch.c`` ``pat_tally_refs``): (the dict
        of (node id, tokens) -> paths through it, in first-seen order, the sum of tokens over its keys, the same dict of
        the paths' first nodes), or NotImplemented where ``req``/``keys``/``tokens`` are not int64 buffers of one
        length."""
        return self._tally_refs(req, keys, tokens)

    def publish_read(self, table: Any, reqs: list, rows: np.ndarray, gens: np.ndarray, root: Any, moved: tuple,
                     recached: list, cls: type, wave: int) -> Any:
        """``ChainTable._publish_read`` in one call (``kernels/host_batch.c`` ``pat_publish_read``): a changed batch's
        rows that can have changed marked, read and given new entries in the table's own dicts, lists and arrays;
        (entries made, the rows read), False where a request's ``req_pool_idx`` is not its row, or NotImplemented
        (nothing changed) where the arguments are not of the shape it takes, a row is beyond the table or more than
        ``wave`` rows are to be read."""
        return self._publish_read(table, reqs, rows, gens, root, moved, recached, cls, wave)

    def tally_changes(self, tally: Any, left: list, touched: list, entries: dict) -> Any:
        """``chain_table._Tally.update_changes`` in one call (``kernels/host_batch.c`` ``pat_tally_changes``): the
        tally moved by the rows that ``left`` and those ``touched`` (with their entries in ``entries`` now); its
        distinct cached tokens, or NotImplemented (nothing changed) where the arguments or an entry's signature are
        not of the shape it reads."""
        return self._tally_changes(tally, left, touched, entries)

    def survivors(self, entries: tuple, old_entries: tuple, rows: np.ndarray,
                  old_rows: np.ndarray) -> tuple[np.ndarray, list[int], list[int], bool] | None:
        """``forest_edit.survivors`` in one call (``kernels/host_batch.c`` ``pat_survivors``): per entry of ``entries``
        the index of the very same entry in ``old_entries`` at the same pool row, or -1; the joiners (the -1s) and the
        old entries that did not survive, ascending; whether the survivors keep their order. ``rows``/``old_rows``:
        C-contiguous int64, at least as many as the entries, distinct. None where a row is negative."""
        old_of = np.empty(len(entries), dtype=np.int64)
        while True:
            got = self.match(entries, old_entries, rows, old_rows, self._table, old_of)
            if not isinstance(got, int):
                return old_of, *got
            if got == 0:
                return None
            self._table = np.full(max(-got, 2 * self._table.shape[0]), -1, dtype=np.int64)


def loaded() -> _HostCore | None:
    """The compiled host work, built and loaded on first call; None where it cannot be (the reason logged once)."""
    return _core.get()


def loaded_batch() -> _HostBatch | None:
    """The compiled publisher piece (``kernels/host_batch.c``), built and loaded on first call; None where it cannot
    be (the reason logged once)."""
    return _batch.get()


def loaded_glue() -> Any:
    """The extension module (``kernels/host_glue.c``) where the compiled host work loaded with it, else None: the
    per-step passes over a batch's arrays (``glue_call``'s callers in the planner, the decode step and the publisher)
    and the forest edit's kept nodes use it, with numpy or Python as their fallback."""
    core = loaded()  # (through ``loaded``: where tests stand in for it, the glue goes with the rest)
    return core.glue if core is not None else None


def glue_call(name: str, *args: Any) -> Any:
    """The extension module's ``name`` on ``args`` where it loaded, else NotImplemented, as the module itself answers
    for arrays it does not take: the caller then runs its numpy version."""
    glue = loaded_glue()
    return NotImplemented if glue is None else getattr(glue, name)(*args)


def reset() -> None:
    """Forget the loaded libraries (tests): the next ``loaded()``/``loaded_batch()`` call builds or loads them again."""
    _core.reset()
    _batch.reset()


def _load() -> _HostCore | None:
    if os.environ.get(DISABLE_ENV, "").strip() == "0":
        logger.info(f"PAT: {DISABLE_ENV}=0: the split search runs its cost model in numpy/Python, from_flat builds "
                    "its forest with numpy")
        return None
    try:
        return _HostCore(ctypes.CDLL(str(library_path())), _load_glue())
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        logger.warning(f"PAT: the compiled host work is unavailable ({e}); the planner uses its numpy cost model and "
                       "Python simulation, from_flat its numpy construction (same plans, more host time per changed "
                       "step and per plan())")
        return None


def _load_glue() -> Any:
    """The extension module ``kernels/host_glue.c`` (with its own build of ``GLUE_SOURCE_NAMES``' other files), or
    None where it cannot be built or imported (numpy's or Python's headers missing) or ``GLUE_ENV`` is "0": then
    ``_HostCore``'s ctypes wrappers serve (same arrays; ~50-100 us more per changed step at batch 256 on the 2-core
    VM, most of it the wrappers' numpy and ctypes calls run cold between two decode steps)."""
    if os.environ.get(GLUE_ENV, "").strip() == "0":
        logger.info(f"PAT: {GLUE_ENV}=0: the compiled split search, plan items and forest edit are called, and built "
                    "graphs launched, through ctypes")
        return None
    try:
        flags = (*layout_flags(), *python_include_flags(), f"-I{np.get_include()}")
        path = library_path(GLUE_SOURCE_NAMES, flags, GLUE_MODULE)
        loader = importlib.machinery.ExtensionFileLoader(GLUE_MODULE, str(path))
        spec = importlib.util.spec_from_file_location(GLUE_MODULE, str(path), loader=loader)
        if spec is None:
            raise ImportError(f"no module spec for {path}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module
    except (OSError, RuntimeError, ImportError, subprocess.SubprocessError) as e:
        logger.warning(f"PAT: the compiled host work's extension module is unavailable ({e}); its ctypes wrappers "
                       "serve (same plans, more host time per changed step)")
        return None


def _load_batch() -> _HostBatch | None:
    if os.environ.get(DISABLE_ENV, "").strip() == "0":
        logger.info(f"PAT: {DISABLE_ENV}=0: the publisher picks a changed batch's tuples in Python")
        return None
    try:
        glue = loaded_glue()
        if glue is not None and hasattr(glue, "publish_read"):
            return _HostBatch(None, glue)  # (the library is then neither built nor loaded)
        return _HostBatch(batch_library())
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        logger.warning(f"PAT: the compiled publisher piece is unavailable ({e}); a changed decode batch's tuples are "
                       "picked in Python (same batches, more host time per changed step)")
        return None


def batch_library() -> ctypes.PyDLL:
    """The publisher pieces as a ctypes.PyDLL library (``PY_SOURCE_NAMES``), built on first use: where the extension
    module does not serve them (``GLUE_ENV`` "0", no numpy headers), and for ``bench/host_ab.py``'s binding A/B."""
    return ctypes.PyDLL(str(library_path(PY_SOURCE_NAMES, python_include_flags(), "pat_host_batch")))


# The loaders are looked up when a load runs (not bound here), so that tests can stand in for them.
_core: _LoadOnce[_HostCore] = _LoadOnce(lambda: _load())
_batch: _LoadOnce[_HostBatch] = _LoadOnce(lambda: _load_batch())


def python_include_flags() -> tuple[str, ...]:
    """The compiler flags that find ``Python.h`` of the running interpreter (no library to link: the symbols resolve
    against the interpreter the library is loaded into)."""
    include = sysconfig.get_paths().get("include")
    if not include or not Path(include, "Python.h").exists():
        raise RuntimeError(f"Python.h not found under {include!r} (install the interpreter's development headers)")
    return (f"-I{include}",)


def compiler() -> str:
    """The C compiler: ``$CC`` if set, else ``cc`` on the PATH."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set CC, or install cc/gcc)")
    return cc


def layout_flags() -> tuple[str, ...]:
    """The plan's item layout as -D options (``planner.item_layout_defines``, the forward kernel's too):
    ``host_items.c`` writes item rows in it."""
    from .planner import item_layout_defines  # the planner imports this module

    return tuple(item_layout_defines())


def library_path(
    names: tuple[str, ...] = SOURCE_NAMES, extra_flags: tuple[str, ...] | None = None, stem: str = "pat_host_core"
) -> Path:
    """The shared library of the sources ``names`` (``kernels/``) for this compiler and these flags (default: the item
    layout for the planner's sources, none for others), compiled into the cache if not there yet."""
    if extra_flags is None:
        extra_flags = layout_flags() if names == SOURCE_NAMES else ()
    src_dir = data_dir("pat_sglang.kernels_src", "kernels")
    sources = [src_dir.joinpath(name).read_text() for name in names]
    headers = [src_dir.joinpath(name).read_text() for name in HEADER_NAMES]
    flags = (*COMPILE_FLAGS, *extra_flags)
    cc = compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if version.returncode != 0:
        raise RuntimeError(f"{cc} --version failed: {version.stderr.strip()[:200]}")
    key = hashlib.sha256("\0".join([*sources, *headers, version.stdout, *flags]).encode()).hexdigest()[:16]
    folder = cache_root() / "host"
    path = folder / f"{stem}_{key}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        files = []
        for name, text in zip(names, sources, strict=True):
            files.append(Path(tmp) / name)
            files[-1].write_text(text)
        for name, text in zip(HEADER_NAMES, headers, strict=True):
            Path(tmp, name).write_text(text)
        out = Path(tmp) / path.name
        res = subprocess.run([cc, *flags, "-o", str(out), *map(str, files)], capture_output=True, text=True,
                             timeout=COMPILE_TIMEOUT_S)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(res.stderr or res.stdout).strip()[:500]}")
        os.replace(out, path)  # atomic: a concurrent process sees the whole library or none
    return path
