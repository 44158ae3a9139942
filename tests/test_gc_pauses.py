"""``pat_sglang.gc_pauses``: collections between two marks are counted and timed; none, none."""

from __future__ import annotations

import gc

from pat_sglang.gc_pauses import GC_PAUSES


def test_collections_between_marks_are_counted_and_timed() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection between the marks: only the ones made here
    try:
        mark = GC_PAUSES.mark()
        junk = [[i] for i in range(10_000)]  # objects for the collector to walk
        quiet = GC_PAUSES.since(mark)
        assert quiet.collections == 0 and quiet.seconds == 0.0
        gc.collect()
        gc.collect(0)
        spent = GC_PAUSES.since(mark)
        assert spent.collections == 2 and spent.seconds > 0.0
        assert GC_PAUSES.since(GC_PAUSES.mark()).collections == 0
        del junk
    finally:
        if was_enabled:
            gc.enable()


def test_installed_once() -> None:
    GC_PAUSES.mark()
    GC_PAUSES.install()
    assert sum(1 for cb in gc.callbacks if getattr(cb, "__self__", None) is GC_PAUSES) == 1
