"""A real SGLang 0.5.17 prefix cache driven on the CPU, as the scheduler drives it.

Used by the SGLang-integration tests: real ``Req`` objects go through ``init_next_round_input``
(radix match), ``ReqToTokenPool.alloc``, KV slot allocation, ``req_to_token`` writes and
``RadixCache.cache_unfinished_req`` (which inserts the prompt and moves ``req.last_node``), then grow
private decode tails. Slot allocation follows SGLang's paged allocators (a request's new tokens start
on a fresh page; a decode token takes the next slot of its last page, or a fresh page); their triton
kernels do not run on the CPU, so the page arithmetic lives here.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from sglang.srt.managers.schedule_batch import Req
from sglang.srt.mem_cache.allocator.paged import PagedTokenToKVPoolAllocator
from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.memory_pool import ReqToTokenPool
from sglang.srt.mem_cache.radix_cache import RadixCache
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang.srt.sampling.sampling_params import SamplingParams


@dataclass
class RadixHarness:
    page_size: int = 1
    num_slots: int = 1 << 14
    max_reqs: int = 64
    max_context: int = 2048
    reqs: list[Req] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.req_to_token_pool = ReqToTokenPool(
            size=self.max_reqs, max_context_len=self.max_context, device="cpu", enable_memory_saver=False
        )
        if self.page_size == 1:
            self.allocator = TokenToKVPoolAllocator(
                self.num_slots, dtype=torch.bfloat16, device="cpu", kvcache=None, need_sort=False
            )
        else:
            self.allocator = PagedTokenToKVPoolAllocator(
                self.num_slots, self.page_size, dtype=torch.bfloat16, device="cpu", kvcache=None, need_sort=False
            )
        self.cache = RadixCache(
            CacheInitParams(
                disable=False,
                req_to_token_pool=self.req_to_token_pool,
                token_to_kv_pool_allocator=self.allocator,
                page_size=self.page_size,
            )
        )

    @property
    def req_to_token(self) -> torch.Tensor:
        return self.req_to_token_pool.req_to_token

    def _new_slots(self, start: int, n: int, row: int) -> torch.Tensor:
        """Slots for positions [start, start + n) of a row, continuing its last page like SGLang does."""
        ps = self.page_size
        out: list[int] = []
        pos = start
        while len(out) < n:
            if pos % ps:  # continue the partially filled page of this row
                out.append(int(self.req_to_token[row, pos - 1]) + 1 if not out else out[-1] + 1)
            else:
                page = self.allocator.alloc(ps)
                assert page is not None, "harness KV pool exhausted"
                out.append(int(page[0]))
            pos += 1
        return torch.tensor(out, dtype=torch.int64)

    def add_request(self, token_ids: list[int], rid: str | None = None) -> Req:
        """Prefill: match the radix tree, allocate, write req_to_token, then cache the prompt."""
        req = Req(rid or f"r{len(self.reqs)}", "", array("q", token_ids), SamplingParams(max_new_tokens=1 << 20))
        req.init_next_round_input(self.cache)
        prefix = req.prefix_indices
        p = len(prefix)
        assert self.req_to_token_pool.alloc([req]) is not None
        req.set_extend_range(p, len(token_ids))
        row = req.req_pool_idx
        self.req_to_token[row, :p] = prefix.to(torch.int32)
        self.req_to_token[row, p : len(token_ids)] = self._new_slots(p, len(token_ids) - p, row).to(torch.int32)
        self.cache.inc_lock_ref(req.last_node)
        self.cache.cache_unfinished_req(req)
        self.reqs.append(req)
        self.seq_lens.append(len(token_ids))
        return req

    def decode(self, steps: int = 1, only: list[int] | None = None) -> None:
        """Grow private decode tails (the KV slot of each new token)."""
        for _ in range(steps):
            for i in only if only is not None else range(len(self.reqs)):
                req, n = self.reqs[i], self.seq_lens[i]
                self.req_to_token[req.req_pool_idx, n] = int(self._new_slots(n, 1, req.req_pool_idx)[0])
                req.output_ids.append(7)
                self.seq_lens[i] = n + 1

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat (kv_indptr, kv_indices) of the batch, from the req_to_token rows [0:seq_len]."""
        indptr = np.concatenate([[0], np.cumsum(self.seq_lens)]).astype(np.int64)
        indices = np.concatenate(
            [self.req_to_token[r.req_pool_idx, :n].numpy() for r, n in zip(self.reqs, self.seq_lens, strict=True)]
        ).astype(np.int64)
        return indptr, indices

    def schedule_batch(self) -> SimpleNamespace:
        """The ``ScheduleBatch`` attributes the publishing patch reads."""
        return SimpleNamespace(
            forward_mode=ForwardMode.DECODE,
            reqs=list(self.reqs),
            tree_cache=self.cache,
            req_to_token_pool=self.req_to_token_pool,
        )


def shared_prompts(rng: np.random.Generator, num_templates: int = 3, per_template: int = 3) -> list[list[int]]:
    """A system prompt, a few templates on it, unique suffixes on each template, plus one stranger."""
    system = rng.integers(1000, 2000, size=37).tolist()
    prompts = []
    for t in range(num_templates):
        template = system + rng.integers(2000 + 100 * t, 2100 + 100 * t, size=int(rng.integers(5, 40))).tolist()
        for _ in range(per_template):
            prompts.append(template + rng.integers(5000, 9000, size=int(rng.integers(1, 30))).tolist())
    prompts.append(rng.integers(9000, 9999, size=23).tolist())  # shares nothing
    prompts.append(list(prompts[0]))  # an exact repeat of a prompt
    return prompts
