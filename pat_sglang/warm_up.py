"""The per-step host path run once at start-up on a made-up batch, so that the server's first decode steps do not pay
its first-call costs.

Role in pack-forward-merge: none of *pack*'s results are kept; this only runs it. The first time a process publishes a
batch's radix paths, builds a forest and plans it, it pays one-time costs on top of the work (the tile table read from
disk, numpy's first call of each function it uses, the interpreter's first runs of each code path): several times a
later step of the same batch, and in a server they land in the first steps that plan and set the stats line's maximum
(measured: ``docs/perf/ab/2026-12-01-h200-8b-bs64-warm/``).

``warm_host_path`` runs the paths a server's steps take, on objects of its own: a ``ChainTable`` and a
``DecodeStepPlanner`` made here (a small CPU ``req_to_token``), and a radix cache of stand-ins (nodes with ``id``,
``parent``, ``value``, what ``chain_signature`` reads; a cache marked as the scheduler patch marks the one it counts
splits and re-cachings of, so changed batches take the publisher's changed-batch path). Five steps of requests under one
shared prefix: the first batch published (each of its rows read) and planned (the forest built from the paths, a split
search); the same batch one token longer (republished; last step's plan); two requests finished and two joined in their
rows (only those read; the forest edited from last step's); most of the batch replaced at once (a wave; the forest
built); two more replaced, through the dispatch gate with a saving no plan reaches (declined before planning). Nothing
of the server's (its table, planner, pools, GPU) is touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from .config import DeviceSpec, HeadConfig
from .decode_step import DecodeStepPlanner, StepBatch, StepCounters
from .sglang_patches.chain_table import ChainTable
from .sglang_patches.publish import PATCH_MARKER, RECACHING_PATCH, SPLITS_PATCH, publish_decode_batch

# The made-up batch: WARM_REQUESTS requests under one WARM_PREFIX_TOKENS-token radix node, each with a private node of
# WARM_PRIVATE_TOKENS (+ up to 31) tokens; long enough for the planner to split the shared pack (a split search), and
# more requests than a wave of joiners needs (chain_table._WAVE: 16).
WARM_REQUESTS = 24
WARM_WAVE = 20  # requests replaced at once in the wave step
WARM_PREFIX_TOKENS = 1024
WARM_PRIVATE_TOKENS = 48
WARM_ROW_TOKENS = 2048  # row width of the warm-up's own req_to_token (> prefix + private + the steps' growth)


@dataclass
class WarmUp:
    """What ``warm_host_path`` ran: its planner's counters, which steps got a plan, and the host time it took."""

    counters: StepCounters
    planned: list[bool] = field(default_factory=list)  # per step: a plan (True) or the delegate (False)
    published_by_rows: int = 0  # steps the publisher read only the changed rows of (its changed-batch path)
    split_searched: bool = False  # the first plan compared split lengths
    seconds: float = 0.0


class _Node:
    """A radix node as ``chain_signature`` reads it: ``id``, ``parent``, ``value`` (the KV slots: a tensor)."""

    __slots__ = ("id", "parent", "value")

    def __init__(self, node_id: int, parent: _Node | None, tokens: int) -> None:
        self.id = node_id
        self.parent = parent
        self.value = torch.arange(tokens, dtype=torch.int64)


class _Cache:
    """A radix cache as the publisher reads it: its root, and the counts of node splits and re-cachings that the
    scheduler patch's wrappers keep in a cache's ``__dict__`` (none here: this tree never splits or re-caches), its
    two methods marked as those wrappers are (``publish.radix_splits``, ``publish.radix_recached``)."""

    def __init__(self, root: _Node) -> None:
        self.root_node = root

    def _split_node(self, *args: object) -> None:
        raise NotImplementedError("the warm-up's radix tree never splits")

    def cache_unfinished_req(self, *args: object) -> None:
        raise NotImplementedError("the warm-up's radix tree never re-caches")


setattr(_Cache._split_node, PATCH_MARKER, SPLITS_PATCH)
setattr(_Cache.cache_unfinished_req, PATCH_MARKER, RECACHING_PATCH)


class _Mode:
    @staticmethod
    def is_decode() -> bool:
        return True


def warm_host_path(heads: HeadConfig, device_spec: DeviceSpec, remake_plans: bool = False) -> WarmUp:
    """Publish and plan five made-up decode steps (module docstring) with this server's heads and GPU spec."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    root = _Node(0, None, 1)
    prefix = _Node(1, root, WARM_PREFIX_TOKENS)
    cache = _Cache(root)
    rows_total = 2 * WARM_REQUESTS + 1  # row 0 is SGLang's padding row
    generation = torch.zeros(rows_total, dtype=torch.int64)  # ReqToTokenPool.req_generation: bumped per hand-out
    pool = SimpleNamespace(req_generation=generation)
    next_id = 2
    reqs: list[SimpleNamespace] = []
    lengths: dict[str, int] = {}

    def join(row: int) -> None:
        nonlocal next_id
        own = WARM_PRIVATE_TOKENS + int(rng.integers(0, 32))
        rid = f"pat-warm-up-{next_id}"
        generation[row] += 1
        reqs.append(SimpleNamespace(req_pool_idx=row, rid=rid, last_node=_Node(next_id, prefix, own)))
        lengths[rid] = WARM_PREFIX_TOKENS + own + 1  # the cached path plus the token being decoded
        next_id += 1

    def replace(count: int) -> None:  # ``count`` requests finish; their rows go to new requests under the prefix
        nonlocal reqs
        left, kept = reqs[:count], reqs[count:]
        reqs = kept  # a new list, as SGLang's scheduler makes one whenever requests leave or join
        for r in left:
            del lengths[r.rid]
            join(r.req_pool_idx)

    for row in range(1, WARM_REQUESTS + 1):
        join(row)
    table = ChainTable(enabled=True)
    planner = DecodeStepPlanner(heads, device_spec, torch.zeros((rows_total, WARM_ROW_TOKENS), dtype=torch.int32),
                                remake_plans=remake_plans)
    out = WarmUp(planner.counters)

    def step(min_saved: float = 0.0) -> None:
        rows = torch.tensor([r.req_pool_idx for r in reqs], dtype=torch.int64)
        seq_cpu = torch.tensor([lengths[r.rid] for r in reqs], dtype=torch.int64)
        batch = SimpleNamespace(forward_mode=_Mode(), reqs=reqs, tree_cache=cache, req_to_token_pool=pool,
                                seq_lens_cpu=seq_cpu, req_pool_indices_cpu=rows)
        by_rows = table.by_rows
        publish_decode_batch(batch, table)
        out.published_by_rows += table.by_rows - by_rows
        published = table.batch
        if published is None:
            raise RuntimeError("PAT warm-up: the made-up batch was not published")
        plan = planner.plan(StepBatch(published.rows, seq_cpu.numpy(), len(reqs), published), min_saved=min_saved)
        if len(out.planned) == 0 and plan is not None:
            out.split_searched = bool(plan.split_searched)
        out.planned.append(plan is not None)

    step()  # every row read (no batch published before), forest built from the paths, a split search
    for rid in lengths:
        lengths[rid] += 1
    step()  # unchanged, one token longer: republished, last step's plan
    replace(2)
    step()  # changed: the two new rows read, last step's forest edited
    replace(WARM_WAVE)
    step()  # a wave: most rows new, the forest built from the paths
    replace(2)
    step(min_saved=0.99)  # the dispatch gate: no plan of this batch saves 99%, declined before any forest
    out.seconds = time.perf_counter() - start
    return out
