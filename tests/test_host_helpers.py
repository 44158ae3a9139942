"""The small host helpers of the per-step publish and load paths, against the numpy / planner calls they stand for."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest
import torch

from pat_sglang.planner import host_int64
from pat_sglang.sglang_patches.chain_table import host_int64_view, newest, same_ints


@pytest.mark.parametrize("maxlen", [None, 5, 64])
def test_newest_is_the_logs_tail_oldest_first(maxlen: int | None) -> None:
    log: deque = deque(maxlen=maxlen)
    for i in range(100):
        log.append(i if i % 7 else None)
        for n in range(len(log) + 1):
            assert newest(log, n) == list(itertools.islice(log, len(log) - n, None))


def test_same_ints_is_array_equal() -> None:
    rng = np.random.default_rng(0)
    arrays = [np.zeros(0, np.int64), np.arange(5), np.arange(6), np.arange(5)[::-1], rng.integers(0, 3, size=(5,)),
              rng.integers(0, 3, size=(2, 3)), np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)]
    for a, b in itertools.product(arrays, repeat=2):
        assert same_ints(a, b) == np.array_equal(a, b)
        assert same_ints(a, a.copy())


def test_host_int64_view_equals_host_int64() -> None:
    values = [torch.arange(7), torch.arange(7, dtype=torch.int32), torch.arange(10)[2:9],
              torch.zeros(0, dtype=torch.int64), np.arange(4, dtype=np.int32), [3, 1, 2], torch.arange(6).view(2, 3)]
    for x in values:
        got, want = host_int64_view(x), host_int64(x)
        assert got.dtype == np.int64 and got.tolist() == want.tolist()
    t = torch.arange(5)
    assert np.shares_memory(host_int64_view(t), t.numpy())  # a host int64 tensor: its own memory, as host_int64 gives
    with pytest.raises(TypeError):  # not integers: refused as host_int64 refuses it
        host_int64_view(torch.ones(3, dtype=torch.bfloat16))
