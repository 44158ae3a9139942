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
from collections.abc import Callable
from typing import Any

from .chain_table import CHAIN_TABLE, ChainTable, chain_table_for

logger = logging.getLogger(__name__)
_warned = False


def publish_decode_batch(batch: Any, table: ChainTable | None = None) -> None:
    """Publish the chain of every request of ``batch`` if it is a decode batch; never raises.

    ``table``: by default the one bound to ``batch.req_to_token_pool`` (``CHAIN_TABLE`` if none is).
    """
    global _warned
    if table is None:
        table = chain_table_for(getattr(batch, "req_to_token_pool", None))
    if table is None:
        table = CHAIN_TABLE
    if not table.enabled:
        return
    mode = getattr(batch, "forward_mode", None)
    if mode is None or not mode.is_decode():
        return
    root = getattr(getattr(batch, "tree_cache", None), "root_node", None)  # None: no radix cache
    pool = getattr(batch, "req_to_token_pool", None)
    generations = getattr(pool, "req_generation", None)
    for req in batch.reqs:
        idx = req.req_pool_idx
        if idx is None:
            continue
        try:
            gen = int(generations[idx]) if generations is not None else None
            table.publish(int(idx), req.rid, gen, req.last_node, root)
        except Exception as e:  # a publishing bug must not take the scheduler down: the backend falls back
            table.drop(int(idx))
            if not _warned:
                _warned = True
                logger.warning("PAT: could not publish the radix chain of request %s (%r); falling back", req.rid, e)


def wrap_forward_batch_init_new(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrapper for the function under the ``ForwardBatch.init_new`` classmethod."""

    @functools.wraps(original)
    def init_new(cls: type, batch: Any, model_runner: Any, *args: Any, **kwargs: Any) -> Any:
        forward_batch = original(cls, batch, model_runner, *args, **kwargs)
        publish_decode_batch(batch)
        return forward_batch

    return init_new
