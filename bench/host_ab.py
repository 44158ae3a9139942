"""Paired A/B of a host-path switch inside ONE Mooncake host replay (``bench/host_replay.py``): each decode step's side
is drawn at random, so the drift of a noisy machine between runs (5-50% on the project's 2-core VM) falls on both
sides alike and a change of a few percent shows. Role: the measuring tool for issue 9's host work, beside
``host_replay.py`` (which times one configuration per run).

Switches (``--switch``), each flipped between steps by the replay's step hook; every one leaves the same published and
planned state either way (the compiled pieces are tested against their Python versions), so flipping mid-run is sound:

- ``publish-read``: the publisher's compiled changed-batch read and tally move (``kernels/host_batch.c``
  ``pat_publish_read``, ``pat_tally_changes``) against their Python versions;
- ``publisher``: every compiled publisher piece (``host_core.loaded_batch``: the read, the wave pieces, the batch pick,
  the tally count) against Python;
- ``remake-plans``: the decode-step planner's re-made plans (``PAT_SGLANG_REMAKE_PLANS``) on against off;
- ``edit-common``: the forest edit in one call (``kernels/host_glue.c`` ``edit_common``) against the edit's
  step-by-step path (its other compiled pieces kept);
- ``batch-binding``: the compiled publisher pieces (``kernels/host_batch.c``) called as the extension module's
  functions against the same C through ctypes.PyDLL.

Per (batch, context) point and side it prints the number of timed steps whose batch changed (requests joined or left)
and, over them, the medians and 90th percentiles of the publishing part and of the whole host time (us), then the
ratios B / A of the medians. Usage::

    .venv/bin/python bench/host_ab.py --switch publish-read --batch 256 64 --context 1k 32k
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host_replay as hr  # noqa: E402

from pat_sglang import host_core  # noqa: E402


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@dataclass
class Switch:
    """Two sides (``names``: the base first) and how to set one between steps (``set_side(backend, side)``, side 0 or
    1); ``installed`` is entered around the whole run (patches that the setter flips). Side 0 is in force until the
    first step's hook draws one (the replay's fill steps are untimed)."""

    names: tuple[str, str]
    set_side: Callable[[Any, int], None]
    installed: Callable[[], Any] = _nothing


def _gated_switch(owner_of: Callable[[], Any], what: str, names: tuple[str, ...], sides: tuple[str, str]) -> Switch:
    """The functions ``names`` of the object ``owner_of()`` returns (``what``, for the error where it did not load)
    on (side 0) or answering NotImplemented (1: their callers' own paths)."""
    state = {"side": 0}

    @contextmanager
    def installed() -> Iterator[None]:
        owner = owner_of()
        if owner is None:
            raise SystemExit(f"host_ab: {what} did not load")
        saved = {name: getattr(owner, name) for name in names}
        for name, call in saved.items():
            def gated(*args: Any, _call: Callable[..., Any] = call) -> Any:
                return NotImplemented if state["side"] else _call(*args)
            setattr(owner, name, gated)
        try:
            yield
        finally:
            for name, call in saved.items():
                setattr(owner, name, call)

    def set_side(backend: Any, side: int) -> None:
        state["side"] = side

    return Switch(sides, set_side, installed)


def _publisher_switch() -> Switch:
    """The whole compiled publisher piece there (side 0) or absent (1: ``host_core.loaded_batch`` answers None)."""
    state = {"side": 0}

    @contextmanager
    def installed() -> Iterator[None]:
        if host_core.loaded_batch() is None:
            raise SystemExit("host_ab: the compiled publisher piece (kernels/host_batch.c) did not load")
        loader = host_core.loaded_batch
        host_core.loaded_batch = lambda: None if state["side"] else loader()  # type: ignore[assignment]
        try:
            yield
        finally:
            host_core.loaded_batch = loader  # type: ignore[assignment]

    def set_side(backend: Any, side: int) -> None:
        state["side"] = side

    return Switch(("compiled", "python"), set_side, installed)


def _binding_switch() -> Switch:
    """The publisher piece's C functions as the extension module's (side 0) or through ctypes.PyDLL (1)."""
    state: dict[str, Any] = {}

    @contextmanager
    def installed() -> Iterator[None]:
        core = host_core.loaded_batch()
        if core is None or not core.via_glue:
            raise SystemExit("host_ab: the publisher piece is not bound to the extension module (kernels/host_glue.c)")
        twin = host_core._HostBatch(host_core.batch_library())  # the same C, every function through ctypes
        state["sides"] = [{name: getattr(c, name) for name in core.BOUND} for c in (core, twin)]
        state["core"] = core
        try:
            yield
        finally:
            for name, call in state["sides"][0].items():
                setattr(core, name, call)

    def set_side(backend: Any, side: int) -> None:
        for name, call in state["sides"][side].items():
            setattr(state["core"], name, call)

    return Switch(("glue", "ctypes"), set_side, installed)


def _remake_switch() -> Switch:
    def set_side(backend: Any, side: int) -> None:
        backend.planner.remake_plans = side == 1

    return Switch(("full", "remade"), set_side)


SWITCHES: dict[str, Callable[[], Switch]] = {
    "publish-read": lambda: _gated_switch(host_core.loaded_batch, "the compiled publisher piece (kernels/host_batch.c)",
                                          ("publish_read", "tally_changes"), ("compiled", "python")),
    "publisher": _publisher_switch,
    "remake-plans": _remake_switch,
    "edit-common": lambda: _gated_switch(host_core.loaded_glue, "the extension module (kernels/host_glue.c)",
                                         ("edit_common",), ("one call", "stepwise")),
    "batch-binding": _binding_switch,
}


@dataclass
class PairedPoint:
    """One (batch, context) point's changed steps per side: (publishing us, host us) each."""

    batch: int
    context: int
    sides: tuple[str, str]
    steps: tuple[list[tuple[float, float]], list[tuple[float, float]]]


def run_paired(cfg: hr.PointConfig, specs: Sequence[hr.RequestSpec], switch: Switch, seed: int = 0) -> PairedPoint:
    """Replay one point with the switch's side drawn at random before every decode step (the first on side 0)."""
    rng = random.Random(seed)
    steps: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])
    side = {"now": 0}

    def on_step(sim: Any, backend: Any, view: Any, rec: hr.StepRecord | None) -> None:
        if rec is not None and rec.joined + rec.left > 0:
            steps[side["now"]].append((rec.publish_us, rec.host_us))
        side["now"] = rng.randrange(2)
        switch.set_side(backend, side["now"])

    with switch.installed():
        hr.run_point(cfg, specs, on_step)
    return PairedPoint(cfg.batch, cfg.context, switch.names, steps)


def format_points(points: Sequence[PairedPoint]) -> str:
    lines = ["batch    ctx side      changed_steps  publish_p50  host_p50  publish_p90  host_p90"]
    for p in points:
        med = []
        for name, rows in zip(p.sides, p.steps, strict=True):
            if not rows:
                lines.append(f"{p.batch:>5} {p.context:>6} {name:<9} {0:>13}  (no changed steps)")
                med.append(None)
                continue
            a = np.array(rows)
            p50, p90 = np.median(a, axis=0), np.percentile(a, 90, axis=0)
            med.append(p50)
            lines.append(f"{p.batch:>5} {p.context:>6} {name:<9} {len(rows):>13}  {p50[0]:>11.1f}  {p50[1]:>8.1f}  "
                         f"{p90[0]:>11.1f}  {p90[1]:>8.1f}")
        if med[0] is not None and med[1] is not None:
            lines.append(f"{'':>13}{p.sides[1]} / {p.sides[0]}: publishing {med[1][0] / med[0][0]:.3f}, "
                         f"host {med[1][1] / med[0][1]:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[PairedPoint]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switch", choices=sorted(SWITCHES), required=True)
    ap.add_argument("--trace", type=Path, default=hr.DEFAULT_TRACE, help="Mooncake trace (JSON lines)")
    ap.add_argument("--batch", type=int, nargs="+", default=[256])
    ap.add_argument("--context", nargs="+", default=["1k"])
    ap.add_argument("--steps", type=int, default=4000, help="timed decode steps per point (both sides together)")
    ap.add_argument("--no-gate", action="store_true", help="plan every step (default: the server's dispatch gate)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="batch 8, context 1k, chunks of 256, 40 steps (tests)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the scheduler's one host thread, as host_replay.py
    specs = hr.load_mooncake(args.trace)
    points = []
    for batch in [8] if args.quick else args.batch:
        for context in [1024] if args.quick else [hr.parse_tokens(c) for c in args.context]:
            if args.quick:
                cfg = hr.quick_config(gate=not args.no_gate)
            else:
                cfg = hr.PointConfig(batch=batch, context=context, gate=not args.no_gate, steps=args.steps)
            points.append(run_paired(cfg, specs, SWITCHES[args.switch](), args.seed))
    print(format_points(points))
    print(f"switch {args.switch}; each decode step's side drawn at random in one replay per point; medians and 90th "
          f"percentiles over the timed steps whose batch changed; {hr.git_state()}")
    return points


if __name__ == "__main__":
    main()
