"""What re-made plans cost on the GPU: the plan of a changed decode step re-made from last step's
(``PAT_SGLANG_REMAKE_PLANS=1``, ``planner.remade_plan``) against the full plan the default path makes of the same batch,
both timed on the same KV pools.

Role in pack-forward-merge: a measurement of *pack*'s quality, for issue 9's decision on re-made plans (they save host
time on changed steps, but a joiner shares nothing in them, so the GPU reads again what it could share).

``dump`` (CPU): the host replay (``bench/host_replay.py``'s arguments after ``--``) with re-made plans on; beside the
backend's planner a shadow ``DecodeStepPlanner`` with them off is handed every step's batch, so at each step the
backend re-made, the shadow holds the plan the default path makes. Up to ``--samples`` such steps, every
``--every``-th, go to one ``.npz``: both plans' arrays and the batch's rows of ``req_to_token`` (compacted: row ``i``
of the file is the batch's ``i``-th distinct row; items re-addressed to it).

``time`` (GPU): per sample, bf16 K and V pools of random values, random queries; each plan launched ``--reps`` times
between CUDA events after a warm-up, the two plans in alternating order (A B B A); the outputs compared with each
other. Prints per sample the two times, their ratio and the planned KV bytes of each, then the geometric mean.

    .venv/bin/python bench/remade_gpu_cost.py dump --out /tmp/remade.npz -- --batch 256 --context 1k --gate
    python3 bench/remade_gpu_cost.py time /tmp/remade.npz       # on the GPU machine
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from pat_sglang.config import HeadConfig  # noqa: E402
from pat_sglang.planner import ITEM_KV_BEGIN, ITEM_KV_END, ITEM_OPEN_END, PackPlan  # noqa: E402

PLAN_ARRAYS = ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")
SIDES = ("remade", "full")


def compact(plan: PackPlan, seq_lens: np.ndarray, stride: int, uniq: np.ndarray) -> dict[str, np.ndarray]:
    """``plan``'s arrays with every KV position re-addressed from ``req_to_token`` (rows ``stride`` apart) to the
    compact table whose row ``i`` is ``req_to_token``'s row ``uniq[i]`` (width ``seq_lens.max()``)."""
    width = int(seq_lens.max())
    items = plan.items.numpy().astype(np.int64)
    new_row = {int(r): i for i, r in enumerate(uniq.tolist())}
    begin = items[:, ITEM_KV_BEGIN]
    row = begin // stride
    pos = begin - row * stride
    base = np.array([new_row[int(r)] for r in row.tolist()], dtype=np.int64) * width
    out = {name: getattr(plan, name).numpy().copy() for name in PLAN_ARRAYS}
    end = items[:, ITEM_KV_END]
    closed = end != ITEM_OPEN_END
    out["items"][:, ITEM_KV_BEGIN] = base + pos
    out["items"][closed, ITEM_KV_END] = (base + end - row * stride)[closed]
    return out


def dump(out: Path, samples: int, replay_args: list[str], every: int = 7) -> None:
    os.environ["PAT_SGLANG_REMAKE_PLANS"] = "1"
    import host_replay as hr

    from pat_sglang import decode_step

    original = decode_step.DecodeStepPlanner.plan
    shadows: dict[int, decode_step.DecodeStepPlanner] = {}
    found: list[dict[str, np.ndarray]] = []
    seen = [0]

    def plan(self, batch, limits=None, count=True, min_saved=0.0):  # noqa: ANN001, ANN202
        got = original(self, batch, limits, count, min_saved)
        if not self.remake_plans or not count:
            return got
        shadow = shadows.get(id(self))
        if shadow is None:
            shadow = shadows[id(self)] = decode_step.DecodeStepPlanner(self.heads, self.device_spec, self.req_to_token)
        full = original(shadow, batch, limits, count, min_saved)
        if self.phases.forest != "remade" or got is None or full is None:
            return got
        seen[0] += 1
        if seen[0] % every or len(found) >= samples:  # every ``every``-th re-made step: spread over the replay
            return got
        rows, seq = batch.rows, batch.seq_lens
        uniq = np.unique(rows)
        width = int(seq.max())
        table = self.req_to_token[torch.from_numpy(uniq)][:, :width].numpy().copy()
        sample = {"rows": np.searchsorted(uniq, rows), "seq_lens": seq.copy(), "table": table,
                  "heads": np.array([self.heads.num_q_heads, self.heads.num_kv_heads, self.heads.head_dim])}
        for side, p in (("remade", got), ("full", full)):
            for name, arr in compact(p, seq, self.row_stride, uniq).items():
                sample[f"{side}_{name}"] = arr
            sample[f"{side}_meta"] = np.array([p.num_requests, p.num_partials, p.num_open, p.stats.kv_bytes_planned,
                                               p.stats.kv_bytes_unique, *p.tile_ms], dtype=np.int64)
        found.append(sample)
        return got

    decode_step.DecodeStepPlanner.plan = plan
    try:
        hr.main([*replay_args, "--no-plan-speed", "--no-progress"])
    finally:
        decode_step.DecodeStepPlanner.plan = original
    if not found:
        raise SystemExit("no re-made step was sampled: a longer replay, or more changed steps, is needed")
    flat = {f"s{i}_{k}": v for i, s in enumerate(found) for k, v in s.items()}
    np.savez_compressed(out, count=np.array(len(found)), **flat)
    print(f"{len(found)} samples of {seen[0]} re-made steps -> {out}")


def load_samples(path: Path) -> list[dict[str, np.ndarray]]:
    data = np.load(path)
    return [{k[len(f"s{i}_"):]: data[k] for k in data.files if k.startswith(f"s{i}_")}
            for i in range(int(data["count"]))]


def plan_of(sample: dict[str, np.ndarray], side: str, device: str) -> PackPlan:
    """The sample's ``side`` plan over its compact table (on ``device``)."""
    hq, hkv, d = (int(x) for x in sample["heads"])
    meta = sample[f"{side}_meta"].tolist()
    table = sample["table"]
    return PackPlan(
        heads=HeadConfig(hq, hkv, d, torch.bfloat16), num_requests=meta[0], tile_ms=tuple(meta[5:]),
        slot_table=torch.from_numpy(np.ascontiguousarray(table).reshape(-1)).to(device),
        num_partials=meta[1], max_slot=None, row_stride=table.shape[1], num_open=meta[2],
        **{name: torch.from_numpy(sample[f"{side}_{name}"]).to(device) for name in PLAN_ARRAYS},
    )


def time_samples(path: Path, reps: int) -> None:
    from pat_sglang.api import run

    samples = load_samples(path)
    slots = max(int(s["table"].max()) for s in samples) + 1
    hq, hkv, d = (int(x) for x in samples[0]["heads"])
    gen = torch.Generator(device="cuda").manual_seed(0)
    k = torch.randn(slots, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(slots, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    print(f"device {torch.cuda.get_device_name()}; {len(samples)} samples; pools {slots} slots, heads {hq}/{hkv}, "
          f"d {d}, bf16; {reps} launches per timing, order remade full full remade")
    print(f"{'sample':>6} {'reqs':>5} {'items r/f':>11} {'remade_us':>10} {'full_us':>9} {'ratio':>6} "
          f"{'planned r/f':>11} {'max_diff':>9}")
    ratios = []
    for i, s in enumerate(samples):
        plans = {side: plan_of(s, side, "cuda") for side in SIDES}
        n = plans["remade"].num_requests
        rows = torch.from_numpy(s["rows"]).to("cuda")
        seq = torch.from_numpy(s["seq_lens"]).to("cuda")
        q = torch.randn(n, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        outs = {}
        for side in SIDES:
            outs[side] = run(plans[side], q, k, v, d ** -0.5, seq_lens=seq, req_rows=rows)
            for _ in range(3):
                run(plans[side], q, k, v, d ** -0.5, seq_lens=seq, req_rows=rows)
        times: dict[str, list[float]] = {side: [] for side in SIDES}
        for side in ("remade", "full", "full", "remade"):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                run(plans[side], q, k, v, d ** -0.5, seq_lens=seq, req_rows=rows)
            stop.record()
            torch.cuda.synchronize()
            times[side].append(start.elapsed_time(stop) * 1000 / reps)
        t = {side: float(np.mean(times[side])) for side in SIDES}
        diff = float((outs["remade"].float() - outs["full"].float()).abs().max())
        planned = s["remade_meta"][3] / s["full_meta"][3]
        ratios.append(t["remade"] / t["full"])
        items = f"{plans['remade'].num_items}/{plans['full'].num_items}"
        print(f"{i:>6} {n:>5} {items:>11} {t['remade']:>10.1f} {t['full']:>9.1f} {ratios[-1]:>6.3f} "
              f"{planned:>11.3f} {diff:>9.4f}")
        if not diff < 0.05:
            raise SystemExit(f"sample {i}: the two plans' outputs differ by {diff}")
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"re-made / full GPU time: geomean {geo:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    replay = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="CPU: sample re-made steps of a host replay (its arguments after --)")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--samples", type=int, default=12)
    d.add_argument("--every", type=int, default=7, help="sample every N-th re-made step")
    t = sub.add_parser("time", help="GPU: time both plans of every sample")
    t.add_argument("path", type=Path)
    t.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(own)
    if args.cmd == "dump":
        dump(args.out, args.samples, replay, args.every)
    else:
        time_samples(args.path, args.reps)


if __name__ == "__main__":
    main()
