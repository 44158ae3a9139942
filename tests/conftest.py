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


@pytest.fixture(scope="session")
def mooncake_specs() -> list:
    """The head of the Mooncake conversation trace (2000 requests) as the host replay's request specs
    (``bench/host_replay.py``), for the modules that replay it; skipped where the trace is absent."""
    from scripts import BENCH, on_path

    on_path(BENCH)
    import host_replay as hr

    if not hr.DEFAULT_TRACE.exists():
        pytest.skip(f"trace not found: {hr.DEFAULT_TRACE}")
    return hr.load_mooncake(hr.DEFAULT_TRACE, limit=2000)


@pytest.fixture
def host_core_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often ``host_core`` loads each of its libraries during the test, from an unloaded start (``host_core.reset``
    before and after): loader name (``_load``, the planner's library; ``_load_batch``, the publisher's) -> calls."""
    from pat_sglang import host_core

    calls = {"_load": 0, "_load_batch": 0}
    for name in calls:
        real = getattr(host_core, name)

        def counted(name: str = name, real=real) -> object:
            calls[name] += 1
            return real()

        monkeypatch.setattr(host_core, name, counted)
    host_core.reset()
    try:
        yield calls
    finally:
        host_core.reset()
