"""Command line of the radix-cache experiments: ``python -m pat_sglang.experiments WORKLOAD [options]``
(also ``pat-sglang experiment WORKLOAD [options]``).

Role in pack-forward-merge: drives the offline measurement of *pack* (``replay.py``) over a workload and
writes ``<out>/<name>.csv``, ``<name>_bytes.png``, ``<name>_sharing.png`` and ``<name>_summary.txt``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import DeviceSpec, HeadConfig
from . import replay as rp
from .report import StepSink, plot
from .workloads import DEFAULT_MOONCAKE_TRACE, MOONCAKE_BLOCK_TOKENS, generated_shared_prefix, load_mooncake, rollout

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument("--num-q-heads", type=int, default=rp.LLAMA3_8B_HEADS.num_q_heads)
    g.add_argument("--num-kv-heads", type=int, default=rp.LLAMA3_8B_HEADS.num_kv_heads)
    g.add_argument("--head-dim", type=int, default=rp.LLAMA3_8B_HEADS.head_dim)
    g.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="KV cache dtype")
    g.add_argument("--num-layers", type=int, default=rp.LLAMA3_8B_LAYERS, help="bytes are reported for all layers")
    g.add_argument("--sm-count", type=int, default=DeviceSpec().sm_count, help="planner's GPU (default H100)")
    g = p.add_argument_group("server")
    g.add_argument("--max-running", type=int, default=rp.DEFAULT_MAX_RUNNING, help="batch cap (requests)")
    g.add_argument("--kv-pool-tokens", type=int, default=rp.DEFAULT_KV_POOL_TOKENS, help="KV pool size (tokens)")
    g.add_argument("--max-prefill-tokens", type=int, default=rp.DEFAULT_MAX_PREFILL_TOKENS)
    g.add_argument("--decode-step-ms", type=float, default=rp.DEFAULT_DECODE_STEP_MS)
    g.add_argument("--prefill-tokens-per-ms", type=float, default=rp.DEFAULT_PREFILL_TOKENS_PER_MS)
    g.add_argument("--no-finished-insert", action="store_true", help="do not cache prompt+output at finish")
    g = p.add_argument_group("output")
    g.add_argument("--record-every", type=int, default=rp.DEFAULT_RECORD_EVERY, help="plan every k-th decode step")
    g.add_argument("--out", type=Path, default=Path("docs/perf/experiments"), help="output folder")
    g.add_argument("--name", help="file stem (default: the workload name)")
    g.add_argument("--no-plots", action="store_true")
    g.add_argument("--no-csv", action="store_true")
    g.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pat_sglang.experiments",
        description="Replay a workload through SGLang's RadixCache and measure PAT's decode KV traffic.",
    )
    sub = parser.add_subparsers(dest="workload", required=True)

    p = sub.add_parser("mooncake", help="a Mooncake trace (JSONL: timestamp, input/output_length, hash_ids)")
    p.add_argument("--trace", type=Path, default=DEFAULT_MOONCAKE_TRACE)
    p.add_argument("--limit", type=int, help="first N requests only")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply arrival times (0.5 = twice the load)")
    p.add_argument("--block-tokens", type=int, default=MOONCAKE_BLOCK_TOKENS, help="tokens per hash id")
    _common(p)

    p = sub.add_parser("gsp", help="SGLang's generated-shared-prefix benchmark shape")
    p.add_argument("--gsp-num-groups", type=int, default=64)
    p.add_argument("--gsp-prompts-per-group", type=int, default=16)
    p.add_argument("--gsp-system-prompt-len", type=int, default=2048)
    p.add_argument("--gsp-question-len", type=int, default=128)
    p.add_argument("--gsp-output-len", type=int, default=256)
    p.add_argument("--gsp-ordered", action="store_true", help="do not shuffle (groups arrive together)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)

    p = sub.add_parser("rollout", help="beam / RL rollout: P prompts x S samples")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=1024)
    p.add_argument("--min-gen-len", type=int, default=128)
    p.add_argument("--max-gen-len", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    return parser


def config_from_args(a: argparse.Namespace) -> rp.ReplayConfig:
    heads = HeadConfig(a.num_q_heads, a.num_kv_heads, a.head_dim, DTYPES[a.dtype])
    return rp.ReplayConfig(
        heads=heads,
        num_layers=a.num_layers,
        device=DeviceSpec(sm_count=a.sm_count),
        max_running=a.max_running,
        kv_pool_tokens=a.kv_pool_tokens,
        max_prefill_tokens=a.max_prefill_tokens,
        decode_step_ms=a.decode_step_ms,
        prefill_tokens_per_ms=a.prefill_tokens_per_ms,
        record_every=a.record_every,
        finished_insert=not a.no_finished_insert,
        progress=not a.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.workload == "mooncake":
        specs = load_mooncake(a.trace, a.limit, a.time_scale, a.block_tokens)
    elif a.workload == "gsp":
        specs = generated_shared_prefix(
            a.gsp_num_groups,
            a.gsp_prompts_per_group,
            a.gsp_system_prompt_len,
            a.gsp_question_len,
            a.gsp_output_len,
            shuffle=not a.gsp_ordered,
            seed=a.seed,
        )
    else:
        specs = rollout(a.num_prompts, a.samples, a.prompt_len, a.min_gen_len, a.max_gen_len, a.seed)
    cfg = config_from_args(a)
    name = a.name or a.workload
    sink = StepSink(None if a.no_csv else a.out / f"{name}.csv")
    try:
        summary = rp.run_replay(specs, cfg, sink, workload=name)
    finally:
        sink.close()
    text = summary.table()
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{name}_summary.txt").write_text(
        f"command: {' '.join(['python -m pat_sglang.experiments', *(argv if argv is not None else sys.argv[1:])])}\n"
        f"{text}\n"
    )
    if not a.no_plots and summary.recorded_steps:
        for p in plot(sink.cols, summary, a.out, name):
            print(f"wrote {p}")
    return 0
