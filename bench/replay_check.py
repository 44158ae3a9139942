"""Correctness soak of the backend's host path under the Mooncake host replay (``bench/host_replay.py``): every plan
PAT makes while SGLang's real ``RadixCache`` takes arrivals, finishes, chunked prefill, node splits and evictions is
checked against the ``req_to_token`` rows it reads, at the replay's full batch and context. Role: evidence that the
pack step (publisher, forest edit or build, planning pass, plan re-use) plans exactly the sequences the scheduler runs,
at a scale the unit tests (``tests/test_host_replay.py``: batch 8, 40 steps) do not reach.

Two checks per planned step:

- **coverage** (any heads, cheap enough for every changed step at batch 256 x 32k): the plan's items, open ends
  resolved at the step's lengths (``PackPlan.items_at``), give each request of the batch the positions ``0 ..
  seq_len - 1`` of its own ``req_to_token`` row exactly once (sorted by position, each request's ranges tile that
  span with no gap and no overlap), and an item a request shares through another member's row holds, position by
  position, the same KV slots as the request's own row (the radix cache's sharing, as SGLang wrote it);
- **exact** (``--exact-every N``: every N-th planned step, small heads for pools of a few hundred MB): the plan run by
  the float64 reference (``pat_sglang.reference.run_reference``) on random q / K / V equals plain per-request attention
  over the whole row (merge map and partials included), NaN-poisoned outputs (every row must be written).

Usage (the replay's points; the replay's own timing is not the subject here, its host times are not printed)::

    .venv/bin/python bench/replay_check.py --batch 64 256 --context 1k 32k --gate
    .venv/bin/python bench/replay_check.py --batch 64 --context 1k --heads 8,2,64 --exact-every 1
    .venv/bin/python bench/replay_check.py --workload gsp --batch 64 256

It prints per point the planned steps checked by the kind of their forest (``StepPhases.forest``: edited, built,
reused, remade; "none" = an unchanged batch's plan taken as it was), the steps the gate gave to the delegate, and the
first failure (the run stops there with exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host_replay as hr  # noqa: E402

from pat_sglang.planner import (  # noqa: E402
    ITEM_KV_BEGIN,
    ITEM_KV_END,
    ITEM_REQ_BEGIN,
    ITEM_REQ_END,
    PackPlan,
    plan_array,
)
from pat_sglang.reference import naive_decode, run_reference  # noqa: E402

EXACT_TOL = 1e-9  # float64 reference against float64 plain attention


class PlanCheckError(AssertionError):
    """A plan that does not cover its batch's rows as the scheduler wrote them."""


def coverage_error(plan: PackPlan, rows: np.ndarray, seq_lens: np.ndarray, table: np.ndarray) -> str | None:
    """Why ``plan`` does not read exactly positions ``0 .. seq_lens[r] - 1`` of row ``rows[r]`` of ``table`` (the
    flat ``req_to_token``, ``plan.row_stride`` per row) for every request ``r``, each once, or None where it does."""
    stride = plan.row_stride
    if stride is None:
        return "the plan has no row stride (it does not address req_to_token rows)"
    n = plan.num_requests
    rows = np.asarray(rows[:n], dtype=np.int64)
    seq = np.asarray(seq_lens[:n], dtype=np.int64)
    item_req = plan_array(plan, "item_req").astype(np.int64)
    if item_req.shape[0] and (item_req.min() < 0 or item_req.max() >= n):
        return "an item lists a request outside the batch"
    try:
        items = plan.items_at(seq, rows).astype(np.int64)
    except ValueError as e:  # an open item that would be empty at these lengths
        return str(e)
    kb, ke = items[:, ITEM_KV_BEGIN], items[:, ITEM_KV_END]
    rb, re_ = items[:, ITEM_REQ_BEGIN], items[:, ITEM_REQ_END]
    if (ke <= kb).any():
        return f"{int((ke <= kb).sum())} empty or reversed items"
    row_of = kb // stride
    if ((ke - 1) // stride != row_of).any():
        return "an item crosses the end of its row"
    counts = re_ - rb
    if (counts < 1).any():
        return "an item lists no request"
    if rb.min() < 0 or re_.max() > item_req.shape[0]:
        return "an item's request range lies outside item_req"
    # one (item, request) pair per request an item lists: the positions it reads of that request's sequence
    pair_item = np.repeat(np.arange(items.shape[0]), counts)
    first = np.cumsum(counts) - counts
    pair_req = item_req[np.repeat(rb, counts) + np.arange(pair_item.shape[0]) - np.repeat(first, counts)]
    begin = kb[pair_item] - row_of[pair_item] * stride
    end = begin + (ke - kb)[pair_item]
    order = np.lexsort((begin, pair_req))
    req_s, begin_s, end_s = pair_req[order], begin[order], end[order]
    starts = np.flatnonzero(np.r_[True, req_s[1:] != req_s[:-1]])
    stops = np.r_[starts[1:], req_s.shape[0]] - 1
    if starts.shape[0] != n:
        missing = np.setdiff1d(np.arange(n), req_s)
        return f"requests {missing[:8].tolist()} read nothing"
    if (begin_s[starts] != 0).any():
        r = int(req_s[starts][begin_s[starts] != 0][0])
        return f"request {r}'s first range does not start at position 0"
    same = req_s[1:] == req_s[:-1]
    joints = np.flatnonzero(same & (begin_s[1:] != end_s[:-1]))
    if joints.shape[0]:
        j = int(joints[0])
        kind = "overlap" if begin_s[j + 1] < end_s[j] else "gap"
        return f"request {int(req_s[j])}: a {kind} at position {int(end_s[j])} ({int(begin_s[j + 1])} next)"
    if (end_s[stops] != seq[req_s[stops]]).any():
        r = int(req_s[stops][end_s[stops] != seq[req_s[stops]]][0])
        return f"request {r}'s ranges end at {int(end_s[stops][req_s[stops] == r][0])}, its length is {int(seq[r])}"
    # every position through the item's row holds the request's own slot there
    lengths = end - begin
    offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    own = np.repeat(rows[pair_req] * stride + begin, lengths) + offset
    read = np.repeat(kb[pair_item], lengths) + offset
    wrong = np.flatnonzero(table[own] != table[read])
    if wrong.shape[0]:
        w = int(wrong[0])
        pair = int(np.searchsorted(np.cumsum(lengths), w, side="right"))
        req, at, item = int(pair_req[pair]), int(begin[pair] + offset[w]), int(pair_item[pair])
        return f"request {req} reads another request's slot at position {at} (item {item})"
    return None


@dataclass
class SoakChecker:
    """The replay's step hook: checks every planned step (``exact_every``: every N-th of them exactly too)."""

    heads: tuple[int, int, int]
    exact_every: int = 0
    seed: int = 0
    kinds: Counter = field(default_factory=Counter)
    declined: int = 0
    exact: int = 0
    max_exact_err: float = 0.0
    _pools: tuple[torch.Tensor, torch.Tensor] | None = None
    _gen: torch.Generator | None = None
    _planned: int = 0

    def __call__(self, sim: Any, be: Any, view: Any, rec: Any) -> None:
        md = be.forward_metadata
        if md is None:
            self.declined += 1
            return
        plan = md.plan
        raw = int(view.batch_size)
        rows = view.req_pool_indices.numpy()[:raw]
        seq = view.seq_lens_cpu.numpy()[:raw]
        kind = be.planner.phases.forest
        if plan.num_requests != raw:
            err: str | None = f"the plan has {plan.num_requests} requests, the batch {raw}"
        else:
            err = coverage_error(plan, rows, seq, sim.r2t.reshape(-1))
        if err is not None:
            raise PlanCheckError(f"step {sum(self.kinds.values()) + self.declined} ({kind}): {err}")
        self.kinds[kind] += 1
        self._planned += 1
        if self.exact_every and self._planned % self.exact_every == 0:
            self.max_exact_err = max(self.max_exact_err, self._exact(sim, plan, rows, seq))
            self.exact += 1

    def _exact(self, sim: Any, plan: PackPlan, rows: np.ndarray, seq: np.ndarray) -> float:
        hq, hkv, d = self.heads
        if self._pools is None:
            self._gen = torch.Generator().manual_seed(self.seed)
            shape = (sim.num_slots + 1, hkv, d)
            self._pools = (torch.randn(*shape, generator=self._gen, dtype=torch.float64),
                           torch.randn(*shape, generator=self._gen, dtype=torch.float64))
        k, v = self._pools
        n = plan.num_requests
        q = torch.randn(n, hq, d, generator=self._gen, dtype=torch.float64)
        scale = d**-0.5
        indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(seq[:n])]).astype(np.int64))
        flat = torch.from_numpy(np.concatenate([sim.r2t[r, :s] for r, s in zip(rows[:n], seq[:n], strict=True)]))
        want = naive_decode(q, k, v, indptr, flat.long(), scale)
        got = run_reference(plan, q, k, v, scale, seq_lens=torch.from_numpy(seq[:n]), rows=torch.from_numpy(rows[:n]))
        if not torch.isfinite(got).all():
            raise PlanCheckError("a request's output was never written (NaN-poisoned)")
        err = float((got - want).abs().max())
        if err > EXACT_TOL:
            raise PlanCheckError(f"the plan differs from plain attention by {err:.3g}")
        return err


def run(cfg: hr.PointConfig, specs: Sequence[hr.RequestSpec], exact_every: int = 0) -> tuple[SoakChecker, Any]:
    """One replay point with every planned step checked; raises ``PlanCheckError`` at the first failure."""
    checker = SoakChecker(cfg.heads, exact_every)
    res = hr.run_point(cfg, specs, on_step=checker)
    return checker, res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--context", nargs="+", default=["1k", "32k"])
    ap.add_argument("--steps", type=int, default=2000, help="timed decode steps per point (the replay's default)")
    ap.add_argument("--heads", default="32,8,128", help="q heads, kv heads, head dim (exact checks: keep them small)")
    ap.add_argument("--gate", action="store_true", help="the server's dispatch gate on (declined steps: not planned)")
    ap.add_argument("--exact-every", type=int, default=0, help="also check every N-th planned step exactly (0: never)")
    ap.add_argument("--trace", type=Path, default=hr.DEFAULT_TRACE)
    ap.add_argument("--workload", choices=("mooncake", "gsp"), default="mooncake",
                    help="gsp: SGLang's generated shared prefix (64 groups x 16 prompts of a 2048-token system "
                         "prompt), all at once at its own prompt length (--context ignored)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as the replay's scheduler thread; the reference's small einsums gain nothing from more
    heads = tuple(int(x) for x in args.heads.split(","))
    gsp = args.workload == "gsp"
    specs = hr.gsp_specs(None) if gsp else hr.load_mooncake(args.trace)
    if gsp:
        args.context = [str(specs[0].input_len)]
    failed = False
    print(f"{'batch':>5} {'ctx':>6} {'steps':>6} {'planned':>7} {'edited':>7} {'built':>6} {'reused':>7} "
          f"{'remade':>7} {'same':>6} {'declined':>8} {'exact':>6} {'max_err':>9}  result")
    for batch in args.batch:
        for ctx in args.context:
            cfg = hr.PointConfig(batch=batch, context=hr.parse_tokens(ctx), steps=args.steps, heads=heads,
                                 gate=args.gate, progress=False, time_scale=1.0 if gsp else None)
            try:
                checker, res = run(cfg, specs, args.exact_every)
                result, steps = "ok", len(res.records) + res.untimed_steps
            except PlanCheckError as e:
                failed = True
                print(f"{batch:>5} {ctx:>6}  FAILED: {e}")
                continue
            k = checker.kinds
            print(f"{batch:>5} {ctx:>6} {steps:>6} {sum(k.values()):>7} {k['edited']:>7} {k['built']:>6} "
                  f"{k['reused']:>7} {k['remade']:>7} {k['none']:>6} {checker.declined:>8} {checker.exact:>6} "
                  f"{checker.max_exact_err:>9.2e}  {result}")
    print("steps: decode steps the backend ran (fill and warm-up included); planned: of them PAT's, each checked for "
          "coverage; edited/built/reused/remade/same: their forest (same = an unchanged batch's plan as it was); "
          "declined: given to the delegate by the gate; exact: of the planned, checked against float64 attention")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
