"""Publish each decode batch's radix chains when SGLang builds the batch's ``ForwardBatch``.

Role in pack-forward-merge: the scheduler half of the hand-off into *pack* (see ``chain_table``).
``ForwardBatch.init_new(batch, model_runner, ...)`` is the one place where the ``ScheduleBatch`` (with
``.reqs`` and ``.tree_cache``) meets the model runner: the TP worker, the pipeline-parallel path and the
speculative workers all build their batches through it, right before ``model_runner.forward`` on the
same thread. Wrapping it (rather than a scheduler method) publishes exactly the batches that reach the
attention backend, in order. Each batch goes to the table bound to its own ``req_to_token_pool`` (one per
TP/DP rank, see ``chain_table.chain_table_for``).
"""

from __future__ import annotations

import functools
import logging
import operator
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from pat_sglang.gc_pauses import GC_PAUSES
from pat_sglang.planner import host_int64

from .chain_table import CHAIN_TABLE, ROUTE_ONE_BY_ONE, ChainTable, chain_table_for, gens_at

logger = logging.getLogger(__name__)
_warned = False
_POOL_IDX = operator.attrgetter("req_pool_idx")
_RID = operator.attrgetter("rid")
_LAST_NODE = operator.attrgetter("last_node")


def publish_decode_batch(batch: Any, table: ChainTable | None = None) -> None:
    """Publish the chain of every request of ``batch`` if it is a decode batch; never raises. Its host time and the
    garbage collections that ran during it are kept in ``table.publish_s`` and ``table.publish_gc`` (the backend's
    stats line counts them with the step).

    ``table``: by default the one bound to ``batch.req_to_token_pool`` (``CHAIN_TABLE`` if none is).
    """
    if table is None:
        table = chain_table_for(getattr(batch, "req_to_token_pool", None))
    if table is None:
        table = CHAIN_TABLE
    if not table.enabled:
        return
    mode = getattr(batch, "forward_mode", None)
    if mode is None or not mode.is_decode():
        return
    gc_mark = GC_PAUSES.mark()
    start = time.perf_counter()
    try:
        _publish(batch, table)
    finally:
        table.publish_s = time.perf_counter() - start
        table.publish_gc = GC_PAUSES.since(gc_mark)


def _publish(batch: Any, table: ChainTable) -> None:
    """``publish_decode_batch`` of a decode batch into an enabled ``table``."""
    table.release()  # a few of the objects of a batch a wave replaced (here: it is publishing's work, timed with it)
    cache = getattr(batch, "tree_cache", None)
    root = getattr(cache, "root_node", None)  # None: no radix cache
    pool = getattr(batch, "req_to_token_pool", None)
    generations = getattr(pool, "req_generation", None)
    try:
        reqs = batch.reqs
        gen_np = None
        if generations is not None:
            gen_np = generations.numpy() if hasattr(generations, "numpy") else np.asarray(generations)
        splits = radix_splits(cache)
        seq_lens = _seq_lens(batch)
        recached = radix_recached(cache)  # before any request is read: a later re-caching moves the count
        rows_cpu = getattr(batch, "req_pool_indices_cpu", None)
        if rows_cpu is not None:
            rows = host_int64(rows_cpu)
            if table.republish_same(reqs, root, splits, recached, rows, gen_np, seq_lens):
                return  # the common decode step: the same requests on the same radix nodes, no request read
            gens = gens_at(rows, gen_np) if gen_np is not None else None
            if gens is not None and table.publish_rows(
                reqs, rows, gens, root, splits, seq_lens, radix_split_log(cache), recached, radix_recache_log(cache),
            ):
                return  # a changed batch: only the requests that can have changed were read
        whole = reqs
        pool_idx = list(map(_POOL_IDX, reqs))  # C loops over the requests: no per-request Python per step
        if None in pool_idx:
            reqs = [req for req in reqs if req.req_pool_idx is not None]
            pool_idx = list(map(_POOL_IDX, reqs))
        idxs = pool_idx  # ints (publish_batch converts them where it keeps them)
        gens = gen_np[idxs].tolist() if gen_np is not None else [None] * len(idxs)
        table.publish_batch(
            idxs, list(map(_RID, reqs)), gens, list(map(_LAST_NODE, reqs)), root, splits, seq_lens,
            radix_split_log(cache), reqs=reqs if reqs is whole else None, recached=recached,
        )
        if len(reqs) != len(batch.reqs):
            table.batch = None  # rows without a pool index: the backend reads req_pool_indices instead
        return
    except Exception as e:  # a publishing bug must not take the scheduler down: fall back to one request at a time
        _warn(f"PAT: could not publish a decode batch's radix chains at once ({e!r}); publishing one by one")
    table.batch = None
    table.publish_route = ROUTE_ONE_BY_ONE
    for req in batch.reqs:
        idx = req.req_pool_idx
        if idx is None:
            continue
        try:
            gen = int(generations[idx]) if generations is not None else None
            table.publish(int(idx), req.rid, gen, req.last_node, root)
        except Exception as e:  # the backend falls back to the flat rows for this request
            table.drop(int(idx))
            _warn(f"PAT: could not publish the radix chain of request {req.rid} ({e!r}); falling back")


PATCH_MARKER = "__pat_sglang_patch__"  # attribute naming the patch that installed a wrapper (set by core.Patch)
SPLITS_PATCH = "count-radix-splits"  # core.COUNT_RADIX_SPLITS' name
RECACHING_PATCH = "count-radix-recaching"  # core.COUNT_RADIX_RECACHING's name
SPLITS_ATTR = "_pat_radix_splits"  # per cache instance: how often it split a node (see wrap_split_node)
RECACHED_ATTR = "_pat_radix_recached"  # per cache instance: cache_unfinished_req calls (see wrap_cache_unfinished_req)
SPLIT_LOG_ATTR = "_pat_radix_split_log"  # per cache instance: ids of the last SPLIT_LOG_LEN split nodes
SPLIT_LOG_LEN = 4096  # splits between two published batches beyond this: every chain is re-read
RECACHE_LOG_ATTR = "_pat_radix_recache_log"  # per cache instance: req_pool_idx of the last RECACHE_LOG_LEN re-cachings
RECACHE_LOG_LEN = 4096  # re-cachings between two published batches beyond this: the batch is read in full


def _seq_lens(batch: Any) -> np.ndarray | None:
    """The batch's host sequence lengths (``ScheduleBatch.seq_lens_cpu``) as int64, or None."""
    lens = getattr(batch, "seq_lens_cpu", None)
    return host_int64(lens) if lens is not None else None


def _wrapped_by(cache: Any, attr: str, patch: str) -> bool:
    """Whether ``type(cache).attr`` is the wrapper the patch named ``patch`` installed (``core.Patch``)."""
    return getattr(getattr(type(cache), attr, None), PATCH_MARKER, None) == patch


def _counting(cache: Any) -> bool:
    return _wrapped_by(cache, "_split_node", SPLITS_PATCH)


def radix_splits(cache: Any) -> int | None:
    """The cache's split count, or None when its class's ``_split_node`` is not the counting wrapper (another
    cache, or a subclass that overrides it): then nothing is known and every chain is checked."""
    if not _counting(cache):
        return None
    return cache.__dict__.get(SPLITS_ATTR, 0)


def radix_recached(cache: Any) -> int | None:
    """How often the cache re-cached an unfinished request (``cache_unfinished_req``: the one call that moves a
    running request's ``last_node``), or None when its class's method is not the counting wrapper."""
    if not _wrapped_by(cache, "cache_unfinished_req", RECACHING_PATCH):
        return None
    return cache.__dict__.get(RECACHED_ATTR, 0)


def wrap_cache_unfinished_req(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrapper for ``RadixCache.cache_unfinished_req(req, chunked=False)``: inserts a prefilled request's tokens
    and moves its ``req.last_node`` (and may rewrite its ``req_to_token`` row past the old prefix). Under the
    overlap scheduler this runs for a prefill batch after its requests were merged into the running batch, so a
    published decode batch can see its requests' chains move without any change to the batch's list: the count
    tells ``ChainTable.republish_same`` to read the chains again, and the log of the requests' rows tells
    ``ChainTable.publish_rows`` which."""

    @functools.wraps(original)
    def cache_unfinished_req(self: Any, *args: Any, **kwargs: Any) -> Any:
        req = args[0] if args else kwargs.get("req")
        log = self.__dict__.get(RECACHE_LOG_ATTR)
        if log is None:
            log = self.__dict__[RECACHE_LOG_ATTR] = deque(maxlen=RECACHE_LOG_LEN)
        idx = getattr(req, "req_pool_idx", None)
        log.append(int(idx) if isinstance(idx, (int, np.integer)) else None)  # None: unknown, the batch is read in full
        self.__dict__[RECACHED_ATTR] = self.__dict__.get(RECACHED_ATTR, 0) + 1
        return original(self, *args, **kwargs)

    return cache_unfinished_req


def radix_recache_log(cache: Any) -> deque | None:
    """The rows (``req_pool_idx``) of the requests the cache re-cached most recently, oldest first (the last one is
    re-caching number ``radix_recached(cache)``), or None when re-cachings are not counted. Empty before the first."""
    if not _wrapped_by(cache, "cache_unfinished_req", RECACHING_PATCH):
        return None
    return cache.__dict__.get(RECACHE_LOG_ATTR, ())


def radix_split_log(cache: Any) -> deque | None:
    """The ids of the nodes the cache split most recently, oldest first (the last one is split number
    ``radix_splits(cache)``; ``None`` in it: a node without an id), or None when splits are not counted."""
    if not _counting(cache):
        return None
    return cache.__dict__.get(SPLIT_LOG_ATTR)


def wrap_split_node(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrapper for ``RadixCache._split_node(key, child, split_len)``: the one place where existing radix nodes change
    (the split ``child`` keeps its id but gets a new parent and a shorter value), so a count of splits tells the
    publisher when chains can have moved, and the log of split ids which ones (the chains through them)."""

    @functools.wraps(original)
    def _split_node(self: Any, *args: Any, **kwargs: Any) -> Any:
        child = args[1] if len(args) > 1 else kwargs.get("child")
        log = self.__dict__.get(SPLIT_LOG_ATTR)
        if log is None:
            log = self.__dict__[SPLIT_LOG_ATTR] = deque(maxlen=SPLIT_LOG_LEN)
        log.append(getattr(child, "id", None))
        self.__dict__[SPLITS_ATTR] = self.__dict__.get(SPLITS_ATTR, 0) + 1
        return original(self, *args, **kwargs)

    return _split_node


def _warn(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(message)


def wrap_forward_batch_init_new(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrapper for the function under the ``ForwardBatch.init_new`` classmethod."""

    @functools.wraps(original)
    def init_new(cls: type, batch: Any, model_runner: Any, *args: Any, **kwargs: Any) -> Any:
        forward_batch = original(cls, batch, model_runner, *args, **kwargs)
        publish_decode_batch(batch)
        return forward_batch

    return init_new
