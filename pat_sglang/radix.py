"""Read the prefix hierarchy of running requests out of SGLang's radix cache.

Role in pack-forward-merge: feeds *pack*. For each running request we follow ``TreeNode.parent`` from
``req.last_node`` to the cache's root (SGLang 0.5.17's classic ``RadixCache``); each node's ``value``
holds its KV slot indices, so the chain is the request's cached prefix. What lies beyond it (decode
tokens, an uncached partial page) is the request's private tail in ``req_to_token``. Chains are copied
into numpy arrays: radix nodes can be split or evicted after this step.

Used by the CPU experiments (``pat_sglang.experiments``) and tests, which want the slots. The serving path
never copies slots: the scheduler patch publishes node ids and lengths (``sglang_patches.chain_table``) and the
kernel reads the slots from ``req_to_token`` on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .forest import PrefixForest

Chain = list[tuple[int, np.ndarray]]


def request_chain(last_node: Any, root: Any) -> Chain:
    """(node id, copied slot indices) from the root down to ``last_node``; empty when nothing is cached."""
    nodes = []
    node = last_node
    while node is not None and node is not root:
        nodes.append(node)
        node = node.parent
    if node is not root:
        raise ValueError("radix node chain does not reach the cache root (evicted or foreign node)")
    return [(int(n.id), n.value.detach().cpu().numpy().astype(np.int64)) for n in reversed(nodes)]


def chain_tail(chain: Chain, req_to_token_row: torch.Tensor | np.ndarray, seq_len: int) -> np.ndarray:
    """The request's slots beyond its cached chain: ``req_to_token[row, cached_len:seq_len]``."""
    cached = sum(slots.shape[0] for _, slots in chain)
    if cached > seq_len:
        raise ValueError(f"cached chain ({cached} tokens) is longer than the sequence ({seq_len})")
    row = req_to_token_row[cached:seq_len]
    if isinstance(row, torch.Tensor):
        row = row.detach().cpu().numpy()
    return np.asarray(row, dtype=np.int64)


def forest_from_radix(
    reqs: Sequence[Any], root: Any, req_to_token: torch.Tensor, seq_lens: Sequence[int]
) -> PrefixForest:
    """Forest of a decode batch from real SGLang ``Req`` objects and the cache's ``root_node``."""
    chains = [request_chain(r.last_node, root) for r in reqs]
    tails = [
        chain_tail(c, req_to_token[r.req_pool_idx], int(n)) for c, r, n in zip(chains, reqs, seq_lens, strict=True)
    ]
    return PrefixForest.from_chains(chains, tails)
