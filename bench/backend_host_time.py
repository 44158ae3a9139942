"""Per-step host time of the PAT attention backend on the CPU, through SGLang's real RadixCache.

Builds decode batches the way the scheduler does (``tests/sglang_harness.py``: real ``Req`` objects, radix
match, ``ReqToTokenPool``, KV slot allocation, ``RadixCache.cache_unfinished_req``), then runs consecutive decode
steps in which every request grows by one token, and times each phase of the backend's per-step host path:

* ``publish``: the ``ForwardBatch.init_new`` patch publishing the batch's radix paths
  (``pat_sglang.sglang_patches.publish``);
* ``forest``: ``DecodeStepPlanner.forest`` (reuse with grown leaves, or a rebuild from the published paths);
* ``plan``: ``plan_forest``;
* ``load``: ``StaticPlanBuffers.load`` (on the CPU the staging copies only; no device, so no transfers);
* ``total``: publish + ``init_forward_metadata_out_graph`` (median; ``total_max``: the slowest step);
* ``cpu``: the same steps' CPU time of the timing thread (``time.thread_time``; ``cpu_max``): below ``total`` where the
  step waited for the interpreter lock (``--contend``) or the OS.

``--replan``: every step planned from scratch (``DecodeStepPlanner.forget``), as a step whose batch changed is: the
forest from the published paths, ``plan_forest`` without the last plan. ``--contend N``: N Python threads keep the
interpreter busy during the timed steps, as SGLang's other threads in the scheduler process can (the PAT stats line's
wall-clock maximum against its CPU-time clause).

Also counted: ``reads``, the steps that read ``req_pool_indices`` back from the device (none expected: the
plan addresses KV as ranges of ``req_to_token`` rows, which the kernel reads on the device).
Shapes: ``A<bs>``: ``bs`` requests on a 4096-token system prompt + 256 own prompt tokens; ``gsp<bs>``: the
generated-shared-prefix shape (G groups x P prompts, 2048-token group system prompt + 128-token question); ``deep<bs>``:
the serving sweep's gsp-deep (groups of 32 prompts on an 8192-token system prompt + 128-token question).
Heads: Llama-3-8B (32 q / 8 kv, d=128, bf16). Medians over the timed steps.

    .venv/bin/python bench/backend_host_time.py [--steps 20] [--shapes A64 A256 gsp64 gsp256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sglang.srt.model_executor.forward_batch_info import ForwardMode  # noqa: E402
from sglang_harness import RadixHarness, RecordingDelegate, fake_model_runner  # noqa: E402

import pat_sglang.decode_step as step_mod  # noqa: E402
from pat_sglang.backend import PATAttnBackend  # noqa: E402
from pat_sglang.sglang_patches import apply_patches  # noqa: E402
from pat_sglang.sglang_patches.chain_table import ChainTable  # noqa: E402
from pat_sglang.sglang_patches.publish import publish_decode_batch  # noqa: E402

HQ, HKV, D = 32, 8, 128
PHASES = ("publish", "forest", "plan", "load", "total", "total_max", "cpu", "cpu_max")


def prompts(shape: str, rng: np.random.Generator) -> list[list[int]]:
    """The prompts of ``A<bs>``, ``gsp<bs>`` or ``deep<bs>`` (interleaved groups, as the A/B workload sends them)."""
    kind, bs = shape.rstrip("0123456789"), int(shape[len(shape.rstrip("0123456789")):])
    if kind == "A":
        system = rng.integers(1000, 100_000, size=4096).tolist()
        return [system + rng.integers(1000, 100_000, size=256).tolist() for _ in range(bs)]
    if kind == "gsp":
        return group_prompts(rng, {64: 8, 256: 16}.get(bs, max(1, int(round(bs**0.5)))), bs, 2048)
    if kind == "deep":  # the serving sweep's gsp-deep: groups of 32 prompts on an 8192-token system prompt
        return group_prompts(rng, max(1, bs // 32), bs, 8192)
    raise ValueError(f"unknown shape {shape!r} (A<bs>, gsp<bs> or deep<bs>)")


def group_prompts(rng: np.random.Generator, groups: int, bs: int, system_tokens: int) -> list[list[int]]:
    """``bs // groups`` prompts per group: the group's system prompt of ``system_tokens`` and a 128-token question,
    the groups interleaved."""
    systems = [rng.integers(1000, 100_000, size=system_tokens).tolist() for _ in range(groups)]
    return [systems[g] + rng.integers(1000, 100_000, size=128).tolist() for _ in range(bs // groups)
            for g in range(groups)]


class Timer:
    """Wraps the step planner's ``forest``, ``plan_forest`` and ``StaticPlanBuffers.load`` to time them per step."""

    def __init__(self) -> None:
        self.forest = self.plan = self.load = 0.0

    def install(self, be: PATAttnBackend) -> None:
        plan_forest = step_mod.plan_forest
        forest, load = be.planner.forest, be.graph_buffers.load

        def timed(fn, field):
            def run(*a, **k):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    setattr(self, field, getattr(self, field) + time.perf_counter() - t0)

            return run

        step_mod.plan_forest = timed(plan_forest, "plan")
        be.planner.forest = timed(forest, "forest")
        be.graph_buffers.load = timed(load, "load")
        self._restore = plan_forest

    def uninstall(self) -> None:
        step_mod.plan_forest = self._restore

    def reset(self) -> None:
        self.forest = self.plan = self.load = 0.0


def _spin(stop: threading.Event) -> None:
    """Python work that takes the interpreter lock in turns with the planner (dict churn, like result handling)."""
    churn: dict[int, list[int]] = {}
    while not stop.is_set():
        for i in range(200):
            churn[i] = [i] * 3


def run_shape(shape: str, steps: int, warm_tokens: int, seed: int, replan: bool = False,
              contend: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ps = prompts(shape, rng)
    bs = len(ps)
    longest = max(len(p) for p in ps)
    ctx = 1 << int(np.ceil(np.log2(longest + warm_tokens + steps + 8)))
    unique = len({tuple(p[:2048]) for p in ps}) * 9000 + sum(len(p) for p in ps) // 8
    h = RadixHarness(page_size=1, num_slots=unique + bs * (512 + warm_tokens + steps), max_reqs=bs + 2,
                     max_context=ctx)
    for p in ps:
        h.add_request(p)
    h.decode(steps=warm_tokens)
    table = ChainTable()
    runner = fake_model_runner(h, HQ, HKV, D, 1, torch.bfloat16, fill=False)
    be = PATAttnBackend(runner, delegate=RecordingDelegate(), chain_table=table, min_saved_fraction=0.0)
    be.init_cuda_graph_state(bs, bs)
    timer = Timer()
    timer.install(be)
    rows_all = [r.req_pool_idx for r in h.reqs]
    samples: dict[str, list[float]] = {k: [] for k in PHASES}
    stop = threading.Event()
    spinners = [threading.Thread(target=_spin, args=(stop,), daemon=True) for _ in range(contend)]
    try:
        for step in range(steps + 3):  # 3 warm-up steps
            if step == 3:
                for t in spinners:
                    t.start()
            if replan:
                be.planner.forget()
            h.decode(steps=1)  # prepare_for_decode: the step's new slot written into req_to_token
            sched = h.schedule_batch()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            publish_decode_batch(sched, table)
            t1 = time.perf_counter()
            c1 = time.thread_time()
            rows = torch.tensor(rows_all, dtype=torch.int64)
            seq_lens = torch.tensor(h.seq_lens, dtype=torch.int64)
            view = SimpleNamespace(  # what DecodeCudaGraphRunner hands the backend at replay (no padding)
                forward_mode=ForwardMode.DECODE, batch_size=bs, req_pool_indices=rows, seq_lens=seq_lens,
                seq_lens_cpu=seq_lens.clone(), out_cache_loc=h.req_to_token[rows, seq_lens - 1].to(torch.int64),
                num_padding=0, rids=None, batch=sched,
            )
            timer.reset()
            c2 = time.thread_time()
            t2 = time.perf_counter()
            be.init_forward_metadata_out_graph(view)
            t3 = time.perf_counter()
            c3 = time.thread_time()
            if step < 3:
                continue
            meta = t3 - t2
            samples["publish"].append(t1 - t0)
            samples["plan"].append(timer.plan)
            samples["load"].append(timer.load)
            samples["forest"].append(timer.forest)
            samples["total"].append(t1 - t0 + meta)
            samples["cpu"].append(c1 - c0 + c3 - c2)  # the same two parts as total
    finally:
        stop.set()
        for t in spinners:
            t.join()
        timer.uninstall()
    samples["total_max"], samples["cpu_max"] = [max(samples["total"])], [max(samples["cpu"])]
    out = {k: 1e6 * statistics.median(v) for k, v in samples.items()}
    out["reads"] = be.stats.row_reads
    out["built"] = be.planner.counters.built  # forests built from the published paths (every step with --replan)
    out["bs"] = bs
    out["kv_per_req"] = float(np.mean(h.seq_lens))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed decode steps per shape (after 3 warm-up steps)")
    ap.add_argument("--warm-tokens", type=int, default=32, help="decode tokens per request before the first step")
    ap.add_argument("--shapes", nargs="+", default=["A64", "A256", "gsp64", "gsp256"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replan", action="store_true", help="plan every step from scratch (a changed batch's cost)")
    ap.add_argument("--contend", type=int, default=0, help="Python threads busy during the timed steps")
    args = ap.parse_args()
    apply_patches()  # as the plugin does in a server: publishing and the radix split counter
    torch.set_num_threads(1)
    print(f"{'shape':>8} {'bs':>4} {'kv/req':>7} " + " ".join(f"{p + '_us':>10}" for p in PHASES) + f" {'reads':>6}")
    for shape in args.shapes:
        r = run_shape(shape, args.steps, args.warm_tokens, args.seed, args.replan, args.contend)
        print(f"{shape:>8} {int(r['bs']):>4} {r['kv_per_req']:>7.0f} " + " ".join(f"{r[p]:>10.1f}" for p in PHASES)
              + f" {r['reads']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
