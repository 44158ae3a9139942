"""CPU: ``bench/backend_host_time.py``'s options. ``--replan`` plans every step from scratch (a forest built per step);
``--contend`` keeps Python threads busy during the timed steps, and the timing thread's own CPU time is reported
beside the wall-clock time (the PAT stats line's CPU-time clause reads the same way)."""

from __future__ import annotations

from scripts import BENCH, load_script


def test_replan_builds_every_step_and_cpu_time_is_reported() -> None:
    bench = load_script(BENCH / "backend_host_time.py")
    kept = bench.run_shape("gsp64", steps=3, warm_tokens=2, seed=0)
    replanned = bench.run_shape("gsp64", steps=3, warm_tokens=2, seed=0, replan=True, contend=1)
    assert kept["built"] == 1  # an unchanged batch: one forest, then reuse
    assert replanned["built"] == 3 + 3  # warm-up and timed steps, each from scratch
    for r in (kept, replanned):
        assert 0 < r["cpu"] <= r["cpu_max"] and 0 < r["total"] <= r["total_max"]
        assert r["reads"] == 0
