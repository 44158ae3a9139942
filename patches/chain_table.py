"""The published radix chains of running decode requests, keyed by ``req_pool_idx``.

Role in pack-forward-merge: the hand-off into *pack*. SGLang's attention backends only see a
``ForwardBatch`` (no requests, no radix tree), so the scheduler-side patch (``patches.publish``) copies,
per running request, its radix chain ``[(node id, KV slots), ...]`` into this table when a decode batch
is built; ``PATAttnBackend`` reads it once per step to build the prefix forest without re-discovering
the sharing from flat KV indices.

Entries hold copies (numpy arrays), never live ``TreeNode`` references: radix nodes can be split or
evicted after the step. An entry is only trusted for the request it was published for: it carries the
request id and ``ReqToTokenPool.req_generation`` of its row, which SGLang bumps whenever the row is
handed to a new request.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pat_sglang.radix import Chain, request_chain

# (node id, data pointer, length) per node from ``last_node`` up: changes whenever the chain does. A
# split gives the upper half a new id and shrinks the lower half, and nodes a running request holds are
# locked against eviction, so an unchanged signature means unchanged slots.
Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ChainEntry:
    rid: Hashable
    generation: int | None  # ReqToTokenPool.req_generation[req_pool_idx] when published; None if unknown
    signature: Signature
    chain: Chain

    @property
    def cached_len(self) -> int:
        return sum(int(slots.shape[0]) for _, slots in self.chain)


def chain_signature(last_node: Any, root: Any) -> Signature | None:
    """Cheap identity of the chain (no device copies); ``None`` when it cannot be read as a chain."""
    sig = []
    node = last_node
    while node is not None and node is not root:
        value = getattr(node, "value", None)
        if value is None or not hasattr(value, "data_ptr"):
            return None  # evicted, or not a classic RadixCache node
        sig.append((int(node.id), int(value.data_ptr()), int(value.numel())))
        node = getattr(node, "parent", None)
    if node is not root:
        return None
    return tuple(sig)


@dataclass
class ChainTable:
    """Process-wide table; each scheduler process (one per TP/DP rank) has its own."""

    # Publishing costs scheduler time, so it is off until a PAT backend is constructed in this process
    # (the plugin is loaded into every SGLang process of the environment, PAT in use or not).
    enabled: bool = False
    entries: dict[int, ChainEntry] = field(default_factory=dict)
    published: int = 0  # chains copied (cache misses), for tests and logs
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, req_pool_idx: int, rid: Hashable, generation: int | None, last_node: Any, root: Any) -> None:
        """Record the request's chain; drop the entry if it cannot be read (the backend then falls back)."""
        sig = chain_signature(last_node, root) if root is not None else None
        with self.lock:
            old = self.entries.get(req_pool_idx)
            if sig is None:
                self.entries.pop(req_pool_idx, None)
                return
            if old is not None and old.rid == rid and old.generation == generation and old.signature == sig:
                return  # unchanged since the last step: no device copies
        chain = request_chain(last_node, root)
        with self.lock:
            self.entries[req_pool_idx] = ChainEntry(rid, generation, sig, chain)
            self.published += 1

    def drop(self, req_pool_idx: int) -> None:
        with self.lock:
            self.entries.pop(req_pool_idx, None)

    def lookup(self, req_pool_idx: int, generation: int | None, rid: Hashable | None = None) -> ChainEntry | None:
        """The entry for the request now in row ``req_pool_idx``, or ``None`` if missing or stale."""
        with self.lock:
            entry = self.entries.get(req_pool_idx)
        if entry is None:
            return None
        if generation is not None and entry.generation is not None and entry.generation != generation:
            return None
        if rid is not None and entry.rid != rid:
            return None
        return entry

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.published = 0


CHAIN_TABLE = ChainTable()
