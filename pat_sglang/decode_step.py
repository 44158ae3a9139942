"""One decode step's host work for the SGLang backend: published radix paths -> prefix forest -> plan.

Role in pack-forward-merge: the per-step *pack* driver. Everything here is host data the scheduler already
holds: the rows (``req_pool_idx``) and request ids of the batch as the scheduler patch published them, the
radix path of each request as (node id, tokens), and SGLang's host copy of the sequence lengths. The plan
addresses KV as token ranges of ``req_to_token`` rows, which the forward kernel reads on the device, so no
step reads anything back from the GPU and the work grows with nodes and requests, never with context length:

* unchanged batch (same published entries and rows; the common decode step): last step's forest with every
  private leaf ending at the new length (``PrefixForest.with_lengths``, O(requests) numpy), and last step's plan
  re-made for it (``plan_forest(previous=...)``: new KV ranges for the same items) unless a pack's split count
  changed;
* changed batch (arrivals, finishes, radix splits): the forest again from the published paths
  (``PrefixForest.from_paths``, numpy over the paths' nodes);
* a request without a usable path (nothing published for its row, or a stale entry) is planned without
  sharing (its whole row as a private leaf): never wrong, only slower, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import DeviceSpec, HeadConfig
from .forest import PrefixForest
from .planner import INT32_MAX, PackPlan, PlanLimits, plan_forest

PADDING_ROW = 0  # ReqToTokenPool row 0 is SGLang's padding row: CUDA-graph padding and dummy batches use it


def host_lengths(lengths: Any) -> np.ndarray:
    """Sequence lengths (a host or device tensor, or a sequence) as a host int64 array."""
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    return np.asarray(lengths).astype(np.int64, copy=False)


@dataclass(frozen=True)
class StepBatch:
    """The host view of one decode batch: ``rows`` and ``seq_lens`` for all ``bs`` entries (padding included, rows
    ``PADDING_ROW``), ``n_real`` real requests first, and the published batch they were matched to, if any."""

    rows: np.ndarray  # int64 [bs]
    seq_lens: np.ndarray  # int64 [bs]
    n_real: int
    published: Any = None  # sglang_patches.chain_table.PublishedBatch, or None


@dataclass
class _Reuse:
    """What the last built forest was made from: a step with the same batch reuses its structure."""

    entries: Any
    rows: np.ndarray
    n_real: int
    forest: PrefixForest


@dataclass
class StepCounters:
    built: int = 0  # forests built from the published paths
    reused: int = 0  # forests reused with grown leaves
    unshared: int = 0  # requests planned without sharing (no usable published path)
    coarse: int = 0  # plans coarsened to fit the limits


@dataclass
class DecodeStepPlanner:
    """Plans decode steps of one backend instance (one TP rank): its heads, its GPU, its ``req_to_token``."""

    heads: HeadConfig
    device_spec: DeviceSpec
    req_to_token: torch.Tensor
    counters: StepCounters = field(default_factory=StepCounters)
    _reuse: _Reuse | None = None
    _last_plan: PackPlan | None = None

    def __post_init__(self) -> None:
        table = self.req_to_token
        if table.dtype != torch.int32 or table.dim() != 2 or not table.is_contiguous():
            raise ValueError(f"req_to_token must be a contiguous 2-D int32 tensor, got {table.dtype} {table.shape}")
        if table.numel() > INT32_MAX:
            raise ValueError(f"req_to_token has {table.numel()} entries; PAT plans address at most {INT32_MAX}")
        self.slot_table = table.view(-1)
        self.row_stride = int(table.stride(0))
        self.max_len = int(table.shape[1])

    def forest(self, batch: StepBatch) -> PrefixForest:
        rows, seq = batch.rows, batch.seq_lens
        if (seq < 1).any() or (seq > self.max_len).any():
            raise ValueError(f"sequence lengths outside 1..{self.max_len} (req_to_token row width)")
        pb = batch.published
        entries = pb.entries if pb is not None else None
        # a path longer than its request is stale: never trusted, reused or not
        stale = pb.cached > seq[: batch.n_real] if entries is not None else None
        last = self._reuse
        if (
            last is not None
            and entries is not None
            and last.entries is entries
            and last.n_real == batch.n_real
            and np.array_equal(last.rows, rows)
            and not stale.any()
        ):
            grown = last.forest.with_lengths(seq)
            if grown is not None:
                self.counters.reused += 1
                last.forest = grown
                return grown
        forest = self._build(batch, stale)
        self._reuse = _Reuse(entries, rows.copy(), batch.n_real, forest) if entries is not None else None
        return forest

    def _build(self, batch: StepBatch, stale: np.ndarray | None) -> PrefixForest:
        """The forest from the published paths, without those of ``stale`` requests (bool per real request)."""
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
        return PrefixForest.from_paths(req, key, length, seq, row_base)

    def plan(self, batch: StepBatch, limits: PlanLimits | None = None, count: bool = True) -> PackPlan:
        """The step's plan; last step's is handed to the planner, which re-makes it cheaply when only the private
        leaves grew (``plan_forest(previous=...)``). ``count=False``: a dummy batch (CUDA-graph capture), planned
        without sharing, not counted and not kept for reuse."""
        if not count:
            forest = PrefixForest.private(batch.seq_lens, batch.rows * self.row_stride)
            return plan_forest(forest, self.heads, self.device_spec, limits=limits, slot_table=self.slot_table)
        forest = self.forest(batch)
        plan = plan_forest(
            forest, self.heads, self.device_spec, limits=limits, slot_table=self.slot_table, previous=self._last_plan
        )
        if plan.fallback:
            self.counters.coarse += 1
        self._last_plan = plan  # plan_forest re-makes it only for this forest's structure and arguments
        return plan
