"""The split choice's regret: every candidate split length of a tree timed once (GPU), any planner's picks scored
against those times (CPU).

``pat_sglang.planner`` picks one KV split length per step among a few candidates (``_split_candidates``; they depend on
the tree, the heads and the SM count, not on the cost model). This times *every* candidate, so that any cost model (a
measured ``MEASURED_ITEM_COSTS`` entry, another merge-chain or fixed cost) is scored on the CPU against the same
measurements: its regret on a tree is the time of the length it picks over the fastest candidate's.

Trees: random asymmetric trees (``workloads.random_tree``, ``--trees`` seeds from ``--first-seed``) and the kernel
benchmark's named trees (``--cases``, as ``bench/tile_sweep.py`` makes them), each under every head config of
``HEAD_CONFIGS``. Each distinct plan (candidates that cut every pack alike make one plan) is checked against float64
attention on 8 sampled requests, then timed as CUDA-graph replays of forward + merge, the plans of a tree alternating
``--rounds`` times (the median of each plan's rounds).

    python3 bench/split_regret.py --measure out.json [--kv-dtype fp8_e4m3] [--trees 30]   # GPU
    python3 bench/split_regret.py --evaluate out.json [--planner-root ../other]          # CPU

The measurement is written after every tree (a run stopped early keeps what it timed). ``--evaluate`` prints, per
head config, the geometric mean, 90th percentile and maximum regret of this checkout's picks (or another checkout's,
``--planner-root``) and of the picks recorded when the times were measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HEAD_CONFIGS = ((32, 8, 128), (64, 8, 128), (32, 32, 128), (32, 8, 64), (32, 8, 256))  # q heads, kv heads, head dim
TREE_ARGS = {"max_depth": 5, "max_requests": 256, "max_len": 4096, "max_request_tokens": 400_000}
DEFAULT_CASES = ("b", "e", "a64", "a128", "c", "gsp64", "rollout64")
CASE_SEED_BASE = 1000  # the named trees' rng seeds (serving cases draw their trees): 1000 + their index in --cases


def tree_inputs(name: str):  # -> (kv_indptr, kv_indices, num_slots)
    """A random tree (``name`` a seed) or a named tree (``name`` ``case:INDEX:CASE``): CASE a benchmark tree of
    ``bench/tile_sweep.py`` or a serving window ``gsp:GROUPS:PER_GROUP:BATCH:PREFIX:QUESTION:GENERATED``
    (``workloads.ServingWindow``, shuffled as bench_serving does; e.g. issue 9's shared-prefix points
    ``gsp:4:16:64:4096:256:256`` and ``gsp:4:64:256:4096:256:256``)."""
    if name.startswith("case:"):
        _, index, case = name.split(":", 2)
        rng = np.random.default_rng(CASE_SEED_BASE + int(index))
        if case.startswith("gsp:"):
            from pat_sglang.workloads import ServingWindow, layout_tree

            sizes = [int(x) for x in case.split(":")[1:]]
            if len(sizes) != 6:
                raise ValueError(f"{case!r}: gsp:GROUPS:PER_GROUP:BATCH:PREFIX:QUESTION:GENERATED")
            batch = layout_tree(ServingWindow(*sizes).tree(rng), rng=rng)
            return batch.kv_indptr, batch.kv_indices, batch.num_slots
        sys.path.insert(0, str(ROOT / "bench"))
        from tile_sweep import case_batch

        return case_batch(case, rng)
    from pat_sglang.workloads import layout_tree, random_tree

    rng = np.random.default_rng(int(name))
    batch = layout_tree(random_tree(rng, **TREE_ARGS), rng=rng)
    return batch.kv_indptr, batch.kv_indices, batch.num_slots


def pick_and_candidates(forest, heads, device) -> tuple[int, list[int]]:  # noqa: ANN001
    from pat_sglang.planner import plan_forest, recorded_searches

    with recorded_searches() as seen:  # (candidates, ...) per search
        pick = plan_forest(forest, heads, device).split_tokens
    return pick, (seen[-1][0] if seen else [pick])


def head_configs(kv_dtype: str, configs: tuple[tuple[int, int, int], ...] = HEAD_CONFIGS) -> list:
    import torch

    from pat_sglang.config import HeadConfig
    from pat_sglang.kernels import FP8_KV_NAMES

    return [HeadConfig(hq, hkv, hd, torch.bfloat16, FP8_KV_NAMES.get(kv_dtype)) for hq, hkv, hd in configs]


def parse_config(text: str) -> tuple[int, int, int]:
    """``--heads HQ/HKV/HD``, e.g. ``28/4/128`` (Qwen2.5-7B): checked against what the kernels serve."""
    import torch

    from pat_sglang.config import HeadConfig, check_supported

    try:
        hq, hkv, hd = (int(x) for x in text.split("/"))
        check_supported(HeadConfig(hq, hkv, hd, torch.bfloat16))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--heads {text!r}: HQ/HKV/HD the kernels serve ({err})") from None
    return hq, hkv, hd


def same_plan(a, b) -> bool:  # noqa: ANN001
    import torch

    return a.num_partials == b.num_partials and torch.equal(a.items, b.items) and torch.equal(a.item_dst, b.item_dst)


def measure(kv_dtype: str, names: list[str], rounds: int, reps: int, out: Path,
            configs: tuple[tuple[int, int, int], ...] = HEAD_CONFIGS) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_kernels import time_graph
    from tile_sweep import bench_kv_scale, check_against, stored_kv

    from pat_sglang.config import DeviceSpec
    from pat_sglang.forest import PrefixForest
    from pat_sglang.kernels import launch_plan
    from pat_sglang.planner import plan_forest
    from pat_sglang.reference import sampled_naive_decode
    from pat_sglang.workloads import make_qkv

    device = DeviceSpec.from_torch(torch.device("cuda"))
    records: dict[str, dict] = {}
    result = {"kv_dtype": kv_dtype, "device": torch.cuda.get_device_name(), "sm_count": device.sm_count,
              "rounds": rounds, "reps": reps, "records": records}
    print(f"device: {result['device']}; KV {kv_dtype}; us, median of {rounds} alternating rounds of {reps} replays")
    for name in names:
        indptr, indices, slots = tree_inputs(name)
        forest = PrefixForest.from_flat(indptr, indices)
        for heads in head_configs(kv_dtype, configs):
            key = f"{heads.num_q_heads}/{heads.num_kv_heads}/{heads.head_dim}/{name}"
            pick, candidates = pick_and_candidates(forest, heads, device)
            q, k16, v16 = make_qkv(indptr.shape[0] - 1, heads.num_q_heads, heads.num_kv_heads, heads.head_dim,
                                   slots, torch.bfloat16, "cuda", seed=1)
            k, v = stored_kv(k16, v16, heads)
            kv_scale = bench_kv_scale(heads)
            scale = 1 / math.sqrt(heads.head_dim)
            ref = sampled_naive_decode(q, k, v, indptr, indices, scale, k_scale=kv_scale, v_scale=kv_scale)
            plans: list = []  # distinct plans, with the candidate lengths that make each
            lengths_of: list[list[int]] = []
            for length in candidates:
                host = plan_forest(forest, heads, device, split_tokens=length)
                for i, other in enumerate(plans):
                    if same_plan(host, other):
                        lengths_of[i].append(length)
                        break
                else:
                    plans.append(host)
                    lengths_of.append([length])
            calls = []
            for host in plans:
                plan = host.to("cuda")
                out_t = torch.full_like(q, float("nan"))

                def call(_: int, plan=plan, out_t=out_t, q=q, k=k, v=v, scale=scale, s=kv_scale) -> torch.Tensor:
                    return launch_plan(plan, q, k, v, scale, out=out_t, k_scale=s, v_scale=s)

                call(0)
                check_against(out_t, ref, f"{key} split {host.split_tokens}")
                calls.append(call)
            times: list[list[float]] = [[] for _ in calls]
            for _ in range(rounds):
                for i, call in enumerate(calls):
                    times[i].append(time_graph(call, 1, reps))
            us = {str(length): float(np.median(t)) for t, lengths in zip(times, lengths_of, strict=True)
                  for length in lengths}
            records[key] = {"candidates": candidates, "pick": pick, "us": us}
            best = min(us.values())
            print(f"{key:>22} {len(candidates):>2} candidates, {len(plans):>2} plans; pick {pick:>5} "
                  f"{us[str(pick)]:8.1f} us, best {best:8.1f} ({us[str(pick)] / best:.3f})", flush=True)
        out.write_text(json.dumps(result, indent=0))


def regrets(records: dict[str, dict], sm_count: int, kv_dtype: str) -> dict[str, tuple[float, float, int, int]]:
    """key -> (regret of this process's planner's pick, regret of the recorded pick, this pick, recorded pick);
    NaN where this planner's pick is not a timed candidate (its candidates differ from the recorded ones)."""
    import torch

    from pat_sglang.config import DeviceSpec, HeadConfig
    from pat_sglang.forest import PrefixForest
    from pat_sglang.kernels import FP8_KV_NAMES

    device = DeviceSpec(sm_count=sm_count, arch="sm90")
    forests: dict[str, PrefixForest] = {}
    out = {}
    for key, rec in records.items():
        hq, hkv, hd, name = key.split("/", 3)
        if name not in forests:
            indptr, indices, _ = tree_inputs(name)
            forests[name] = PrefixForest.from_flat(indptr, indices)
        heads = HeadConfig(int(hq), int(hkv), int(hd), torch.bfloat16, FP8_KV_NAMES.get(kv_dtype))
        pick, _ = pick_and_candidates(forests[name], heads, device)
        best = min(rec["us"].values())
        now = rec["us"].get(str(pick), math.nan) / best
        out[key] = (now, rec["us"][str(rec["pick"])] / best, pick, rec["pick"])
    return out


def summary(scored: dict[str, tuple[float, float, int, int]]) -> str:
    def stats(values: list[float]) -> str:
        if not values:
            return f"{'-':>7} {'-':>7} {'-':>7}"
        v = np.array(values)
        return f"{math.exp(np.log(v).mean()):7.3f} {np.percentile(v, 90):7.3f} {v.max():7.3f}"

    lines = [f"{'heads':>10} {'trees':>5} {'this: geomean p90 max':>23} {'recorded: geomean p90 max':>27} "
             f"{'changed':>7} {'missing':>7}"]
    by_config: dict[str, list[tuple[float, float, int, int]]] = {}
    for key, value in scored.items():
        by_config.setdefault("/".join(key.split("/", 3)[:3]), []).append(value)
    by_config["all"] = list(scored.values())
    for config, values in by_config.items():
        present = [v for v in values if math.isfinite(v[0])]
        changed = sum(v[2] != v[3] for v in values)
        lines.append(f"{config:>10} {len(values):>5} {stats([v[0] for v in present]):>23} "
                     f"{stats([v[1] for v in values]):>27} {changed:>7} {len(values) - len(present):>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", type=Path, help="GPU: time every candidate, write the times here")
    ap.add_argument("--evaluate", type=Path, help="CPU: score this checkout's (or --planner-root's) picks")
    ap.add_argument("--planner-root", type=Path, default=ROOT)
    ap.add_argument("--kv-dtype", choices=("bf16", "fp8_e4m3", "fp8_e5m2"), default="bf16",
                    help="--measure: the pools' element (--evaluate reads it from the file)")
    ap.add_argument("--trees", type=int, default=30, help="random trees (seeds --first-seed .. + N-1)")
    ap.add_argument("--first-seed", type=int, default=0, help="the first random tree's seed (a held-out set: past the "
                    "seeds a model was fitted on)")
    ap.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), help="named benchmark trees")
    ap.add_argument("--heads", type=parse_config, nargs="+", default=list(HEAD_CONFIGS), metavar="HQ/HKV/HD",
                    help="--measure: the head configs each tree runs under (default: "
                         f"{' '.join('/'.join(map(str, c)) for c in HEAD_CONFIGS)})")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--verbose", action="store_true", help="with --evaluate: a line per tree whose pick changed")
    args = ap.parse_args(argv)
    if (args.measure is None) == (args.evaluate is None):
        ap.error("give one of --measure (GPU) and --evaluate (CPU)")
    sys.path.insert(0, str(args.planner_root.resolve()))
    if args.measure is not None:
        seeds = range(args.first_seed, args.first_seed + args.trees)
        names = [f"case:{i}:{c}" for i, c in enumerate(args.cases)] + [str(s) for s in seeds]
        measure(args.kv_dtype, names, args.rounds, args.reps, args.measure, tuple(args.heads))
        return 0
    saved = json.loads(args.evaluate.read_text())
    scored = regrets(saved["records"], saved["sm_count"], saved["kv_dtype"])
    if args.verbose:
        for key, (now, then, pick, recorded) in scored.items():
            if pick != recorded:
                print(f"{key:>24} recorded {recorded:>5} ({then:.3f}) -> {pick:>5} ({now:.3f})")
    print(f"{saved['device']}, KV {saved['kv_dtype']}: regret = the pick's time / the fastest candidate's")
    print(summary(scored))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
