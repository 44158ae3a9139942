"""The small host helpers of the per-step publish and load paths, against the numpy / planner calls they stand for."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest
import torch

from pat_sglang.planner import host_int64, same_ints
from pat_sglang.sglang_patches.chain_table import newest


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


def test_host_int64_gives_int64_values_and_a_host_int64_tensors_memory() -> None:
    values = [torch.arange(7), torch.arange(7, dtype=torch.int32), torch.arange(10)[2:9],
              torch.zeros(0, dtype=torch.int64), np.arange(4, dtype=np.int32), [3, 1, 2], torch.arange(6).view(2, 3),
              torch.arange(5, dtype=torch.float32).requires_grad_()]
    for x in values:
        got = host_int64(x)
        want = x.tolist() if isinstance(x, torch.Tensor) else list(x) if isinstance(x, list) else x.tolist()
        assert got.dtype == np.int64 and got.tolist() == want
    t = torch.arange(5)
    assert np.shares_memory(host_int64(t), t.numpy())  # a host int64 tensor: its own memory
    with pytest.raises(TypeError):  # not a numpy dtype: refused
        host_int64(torch.ones(3, dtype=torch.bfloat16))
