"""Fixtures shared by the CPU test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threads import one_torch_thread


@pytest.fixture
def torch_on_one_thread() -> Iterator[None]:
    """torch on one CPU thread for the test (``threads.one_torch_thread``); modules that run the float64 reference
    executor many times take it with ``pytestmark = pytest.mark.usefixtures("torch_on_one_thread")``."""
    with one_torch_thread():
        yield
