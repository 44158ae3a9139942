"""Forward-kernel tile sweep on long private rows, beside fa3 and FlashInfer in the same run (GPU).

A decode batch with little sharing is a stream of private KV rows; PAT must stream them at least as fast as
the backend SGLang uses by default (fa3 on Hopper). This times PAT (CUDA-graph replays of forward + merge,
median of ``--reps``) for several kernel variants (``KVTILE/STAGES/CTAS``: KV tokens per shared-memory stage,
pipeline depth, CTAs per SM the register budget is built for; ``/rN``: the online softmax's rescale slack;
``/wg``: 64-row items on warpgroup MMAs; ``@FILE``: another kernel source, e.g. the version before a change, so
both are timed in one run) on:

* ``mooncake96``: the first 96 requests of the Mooncake conversation trace as private rows (as in
  ``bench/split_waves.py``), Llama-3-8B heads (32 q / 8 kv, d=128, bf16, page size 1);
* ``d64x4096``, ``d256x1024`` (the kernel benchmark's no-sharing batches), ``d8x32768`` (small batch, long
  context; with ``--cases`` any ``dBxC``: B private rows of C tokens, such as the kernel benchmark's small batches
  ``d1x1024``), and ``a128`` (a shared-prefix tree: a variant must not lose there);
* with ``--cases``, also the kernel benchmark's other trees, their shared and private parts as batches of their own
  (``PART_CASES``), and the serving sweep's shared-prefix points as trees
  (``gsp64``, ``gsp256``, ``rollout64``: ``SERVING_CASES``, sizes from ``ab.sweep``). ``gsp64`` is where serving
  found PAT slower than FlashInfer while its plan saves 25-32% of the KV bytes (``docs/perf/serving/``
  2026-11-29-h200-peers): these cases time that tree against fa3 and FlashInfer kernel for kernel.

Each variant's plan is made for its own occupancy (the planner's wave target scaled by its CTAs per SM).
Peers on the same inputs, when importable: fa3 (``sgl_kernel.flash_attn.flash_attn_with_kvcache`` with a page
table, page size 1, scheduler metadata precomputed as SGLang's fa3 backend does, timed as graph replays) and
FlashInfer's paged decode with tensor cores (eager; kernels of hundreds of us hide the launch). Every
implementation is checked against float64 attention on 8 sampled requests first.

``--kv-dtype fp8_e4m3`` (or ``fp8_e5m2``): the pools hold FP8 (the bf16 values / 0.5, so the K and V scales are 0.5)
and the reference reads them dequantised; a ``bf16`` column times the table's kernel on the bf16 pools the FP8 ones
were made from (twice the bytes), and (unless ``--no-peers``) ``fi_fp8`` FlashInfer's FP8 decode with tensor cores on
the same FP8 pools, as CUDA-graph replays (the trees' kernels are short: eager launches would flatter PAT).

``--head-dim 64|256`` runs the same cases with that head dim (32 q / 8 kv heads; the peers are left out: fa3 and
FlashInfer were compared at 128), e.g. to choose FP8 tiles for them. ``--heads 64/8`` (q/kv heads; default 32/8) runs
them with other head counts, e.g. the 64-q-head trees of issues 10 and 12 (the peers are left out there too).

``--static-items N ...`` times the table's plan through ``StaticPlanBuffers`` (the backend's CUDA-graph path) with
a forward grid of N items per KV head: 1040 is the grid every captured batch size launched at max bs 256 before
per-batch grids, 2 x bs + ``planner.max_split_items`` (149 for 32/8 heads on the H200) the fitted one, e.g.
``--cases gsp64 --static-items 1040 277``.

``--table-again`` times the table's variant a second time after the others: the first timing of a case can differ
from a later one of the same kernel and plan (d64x4096: 290 vs 259 us once, not reproduced since;
``docs/perf/kernels/2026-11-29-h200-span-splits/``). In every sweep of 2026-12-02/03 the first column (``table``) read
3-8% slower than ``again`` on the memory-bound private rows, so each case's first column is now timed twice and the
second timing kept (the first follows the case's float64 reference and input set-up); ``--no-warm-first`` times it
once, as before.

    python3 bench/tile_sweep.py [--variants 32/2/4 32/3/3 16/6/3 32/4/2 64/2/2] [--cases ...] [--reps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ab.bench_serving import arg_value  # noqa: E402
from ab.sweep import default_workloads  # noqa: E402
from ab.workload import DEFAULT_TRACE  # noqa: E402
from bench_kernels import fa3_decode, measure_copy_bandwidth, time_graph  # noqa: E402
from split_waves import fi_time, mooncake_rows  # noqa: E402
from tile_tables import table_header  # noqa: E402

from pat_sglang import planner  # noqa: E402
from pat_sglang.config import (  # noqa: E402
    MAX_GQA_GROUP,
    DeviceSpec,
    HeadConfig,
    TileTable,
    check_supported,
    load_tile_table,
)
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.kernels import (  # noqa: E402
    FP8_KV_NAMES,
    WIDE_TILE_M,
    KernelTune,
    KernelVariant,
    StaticPlanBuffers,
    device_arch,
    launch_plan,
)
from pat_sglang.planner import copy_with, plan_forest  # noqa: E402
from pat_sglang.reference import sampled_naive_decode  # noqa: E402
from pat_sglang.workloads import (  # noqa: E402
    STANDARD_WORKLOADS,
    ServingWindow,
    layout_tree,
    make_qkv,
    standard_batch,
    tree_batch,
)

HEAD_DIM = 128  # the default; --head-dim
HEADS = (32, 8)  # q / kv heads, the default; --heads
CASES = ("mooncake96", "d64x4096", "d256x1024", "d8x32768", "a128")
# The serving sweep's shared-prefix points as trees: case -> (its workload, closed-loop concurrency)
SERVING_CASES: dict[str, tuple[str, int]] = {"gsp64": ("gsp", 64), "gsp256": ("gsp", 256), "rollout64": ("rollout", 64)}


def tree_parts(levels: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A tree's two parts as batches of their own (``levels`` as in ``STANDARD_WORKLOADS``, the last level the
    requests' private suffixes): its shared levels with one private token per request (the wide items' work, almost no
    private KV), and its private suffixes alone (the same requests with nothing shared)."""
    *shared, (requests, own) = levels
    return [*shared, (requests, 1)], [(requests, own)]


# Parts of the kernel benchmark's trees (``tree_parts``): timed beside the whole tree, they tell which part holds its
# time. ``ap128``: a128's shared 4096 tokens, ``as128``: its 128 private suffixes; ``bp`` / ``bs`` the same for b.
PART_CASES: dict[str, list[tuple[int, int]]] = {
    f"{name[0]}{part}{name[1:]}": tree_parts(STANDARD_WORKLOADS[name])[i]
    for name in ("a128", "a256", "b") for i, part in enumerate("ps")
}
MORE_CASES = ("a64", "b", "c", "e", *SERVING_CASES, *PART_CASES)  # the kernel benchmark's other trees (--cases)


def serving_window(name: str) -> ServingWindow:
    """The running batch of a ``SERVING_CASES`` point, from the sweep's own bench_serving arguments (``ab.sweep``)."""
    workload, concurrency = SERVING_CASES[name]
    args = default_workloads(DEFAULT_TRACE)[workload].dataset_args

    def number(flag: str) -> int:
        value = arg_value(args, flag)
        if value is None:
            raise ValueError(f"{name}: the sweep's workload {workload!r} has no {flag}")
        return int(value)

    return ServingWindow(number("--gsp-num-groups"), number("--gsp-prompts-per-group"), concurrency,
                         number("--gsp-system-prompt-len"), number("--gsp-question-len"), number("--gsp-output-len"),
                         ordered="--gsp-ordered" in args)


def flat_private(n: int, tokens: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``n`` private rows of ``tokens`` each, slots a random permutation of the pool."""
    total = n * tokens
    indptr = torch.arange(0, total + 1, tokens, dtype=torch.int32)
    return indptr, torch.from_numpy(rng.permutation(total).astype(np.int32)), total


def parse_case(name: str) -> str:
    """A ``--cases`` entry: a named case or ``dBxC`` (B private rows of C tokens, B and C >= 1)."""
    private = re.fullmatch(r"d(\d+)x(\d+)", name)
    if name in CASES + MORE_CASES or (private and int(private[1]) >= 1 and int(private[2]) >= 1):
        return name
    raise argparse.ArgumentTypeError(f"unknown case {name!r}: one of {', '.join(CASES + MORE_CASES)}, or dBxC")


def case_batch(name: str, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    if name == "mooncake96":
        return mooncake_rows(96, 7936, 64, rng)
    private = re.fullmatch(r"d(\d+)x(\d+)", name)
    if private and name not in ("d64x4096", "d256x1024"):  # those two: the anchors' layout (standard_batch)
        return flat_private(int(private[1]), int(private[2]), rng)
    if name in SERVING_CASES:
        b = layout_tree(serving_window(name).tree(rng), rng=rng)
    elif name in PART_CASES:
        b = tree_batch(PART_CASES[name])
    else:
        b = standard_batch(name)
    return b.kv_indptr, b.kv_indices, b.num_slots


def parse_variant(text: str) -> KernelTune:
    """``KVTILE/STAGES/CTAS[/rN][/wg][/wN][/wsN][/mN][/lN][/xN][/nN][/t8|/t16][@SOURCE]``: N the online softmax's
    rescale slack in log2 units (``KernelVariant.rescale_slack_log2``: 0 exact, the default; -1 rescale every tile);
    ``wg`` 64-row items on warpgroup MMAs (``KernelVariant.wgmma``, sm_90); ``wN`` N warps per CTA instead of the
    table's (the variant's plans then use tile m up to 16 N: ``plan_tiles``; e.g. ``16/3/7/w2``, one computing and one
    loading warp per 16-row item at 7 CTAs per SM); ``mN`` plans whose items take tile ms of at least N rows (``m64``:
    every item on the 64-row path, wgmma with ``wg``; ``m16`` 16-row items at every head dim, d256's private rows
    included; ``TileTable.with_min_tile_m``); ``lN`` plans whose packs of N KV tokens or more are long: their row
    blocks take the smallest tile holding their rows, not the table's least tile m (``l1024``;
    ``TileTable.with_min_tile_m_tokens``; with the table's least tile ms, so not with ``mN``); ``xN`` plans whose items
    take tile ms of at most N rows (``x32``: bigger packs in 32-row blocks, no 64-row item;
    ``TileTable.with_max_tile_m``); ``wsN`` (with ``wg``) the wide items (tile m >= 64) in a launch of their own with N
    KV stages, plans with 128-row items (``KernelVariant.wide_stages``); ``nN`` (with ``wg``) N KV columns per S block
    and softmax step of 64-row wgmma items (``KernelVariant.wg_cols``: 16, 32 or 64, a divisor of KVTILE or a multiple
    over the ring layout's stages); ``t8`` long items of at most 8 query rows with the KV tokens as the MMA's M
    (``KernelVariant.t8``; FP8 pools at head dim 128 or 256), ``t16`` every item with its rows as the M (neither: the
    table's choice); SOURCE another kernel source file built with the same host contract (e.g. ``git show
    main:kernels/pat_decode.cu > old.cu``: two kernel versions side by side in one run)."""
    text, _, source = text.partition("@")
    usage = f"variant {text!r}: KVTILE/STAGES/CTAS[/rN][/wg][/wN][/wsN][/mN][/lN][/xN][/nN][/t8|/t16][@SOURCE]"
    if source and not Path(source).is_file():
        raise argparse.ArgumentTypeError(f"variant {text!r}: no kernel source file {source!r}")
    parts = text.split("/")
    slack = 0
    wgmma = False
    warps = None
    min_tile_m = None
    min_tile_m_tokens = None
    max_tile_m = None
    wg_cols = None
    wide_stages = None
    t8: bool | None = None
    for flag in parts[3:]:
        if flag == "wg" and not wgmma:
            wgmma = True
        elif flag in ("t8", "t16") and t8 is None:
            t8 = flag == "t8"
        elif flag[:1] == "m" and flag[1:] in ("16", "32", "64", "128") and min_tile_m is None:
            min_tile_m = int(flag[1:])
        elif flag[:1] == "l" and flag[1:].isdigit() and int(flag[1:]) > 0 and min_tile_m_tokens is None:
            min_tile_m_tokens = int(flag[1:])
        elif flag[:1] == "x" and flag[1:] in ("16", "32", "64") and max_tile_m is None:
            max_tile_m = int(flag[1:])
        elif flag[:1] == "n" and flag[1:] in ("16", "32", "64") and wg_cols is None:
            wg_cols = int(flag[1:])
        elif flag[:2] == "ws" and flag[2:].isdigit() and wide_stages is None:
            wide_stages = int(flag[2:])
        elif flag[:1] == "w" and flag[1:].isdigit() and warps is None and int(flag[1:]) in (1, 2, 4, 8):
            warps = int(flag[1:])
        elif flag.startswith("r"):
            try:
                slack = int(flag[1:])
            except ValueError:
                raise argparse.ArgumentTypeError(f"{usage}: rN takes an integer slack") from None
        else:
            raise argparse.ArgumentTypeError(
                f"{usage}: unknown flag {flag!r} (warps: w1, w2, w4 or w8; least tile m: m16, m32, m64 or m128; "
                "long packs: lN, N > 0 tokens; largest tile m: x16, x32 or x64; "
                "wgmma S columns: n16, n32 or n64)")
    try:
        kv_tile, stages, ctas = (int(x) for x in parts[:3])
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if min_tile_m is not None and min_tile_m_tokens is not None:
        raise argparse.ArgumentTypeError(f"{usage}: lN keeps the table's least tile ms, which mN replaces")
    return KernelTune(kv_tile=kv_tile, stages=stages, min_ctas_per_sm=ctas, warps=warps, rescale_slack_log2=slack,
                      source=str(Path(source).resolve()) if source else "", wgmma=wgmma,
                      min_tile_m=min_tile_m, min_tile_m_tokens=min_tile_m_tokens, max_tile_m=max_tile_m,
                      wg_cols=wg_cols, wide_stages=wide_stages, t8=t8)


def parse_heads(text: str) -> tuple[int, int]:
    """``HQ/HKV``: q and kv heads, HQ a multiple of HKV (a GQA group of at most ``MAX_GQA_GROUP``, the kernels')."""
    try:
        hq, hkv = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"heads {text!r}: HQ/HKV, e.g. 64/8") from None
    try:  # the config's own checks: positive counts, a whole ratio the kernels serve
        check_supported(HeadConfig(hq, hkv, HEAD_DIM, torch.bfloat16))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"heads {text!r}: HQ a multiple of HKV, at most {MAX_GQA_GROUP} q heads per kv head") from None
    return hq, hkv


def check_variants(heads: HeadConfig, arch: str, variants: list[str]) -> list[KernelTune]:
    """The ``--variants`` as tunes, each checked against the sweep's heads and the device's arch on the host
    (``KernelVariant.for_config``) before any case runs: a variant its build cannot take (e.g. ``16/5/4/wg/n32``,
    whose 32 columns span two 16-token stages that 5 stages do not divide) is refused with the reason, instead of a
    column of ``n/a``. Builds that do not fit the SM (registers, shared memory) still show as ``n/a`` when launched."""
    tunes = [parse_variant(text) for text in variants]
    for text, tune in zip(variants, tunes, strict=True):
        try:
            KernelVariant.for_config(heads, arch, tune)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"variant {text!r} for {heads}: {e}") from e
    return tunes


def plan_tiles(table: TileTable, tune: KernelTune | None) -> TileTable:
    """The tile table a variant's plans are made with: the table's own, for a ``/wN`` variant the one its CTAs hold
    (``TileTable.with_warps``), for an ``/mN`` variant only its tile ms of at least N rows, for an ``/lN`` variant its
    least tile ms for packs of fewer than N KV tokens, for an ``/xN`` variant only those of at most N rows."""
    if tune is not None and tune.warps is not None:
        table = table.with_warps(tune.warps)
    if tune is not None and tune.min_tile_m is not None:
        table = table.with_min_tile_m(tune.min_tile_m)
    if tune is not None and tune.min_tile_m_tokens is not None:
        table = table.with_min_tile_m_tokens(tune.min_tile_m_tokens)
    if tune is not None and tune.max_tile_m is not None:
        table = table.with_max_tile_m(tune.max_tile_m)
    if tune is not None and tune.wide_stages:
        table = table.with_tile_m(WIDE_TILE_M)
    return table


FP8_BENCH_SCALE = 0.5  # the benchmarks' FP8 pools hold the bf16 values / this; kernels and reference read stored * this


def bench_kv_scale(heads: HeadConfig) -> float:
    """The per-tensor K/V scale the benchmarks' pools are read with (``stored_kv``): 1.0 for 16-bit pools."""
    return FP8_BENCH_SCALE if heads.kv_fp8 else 1.0


def stored_kv(k16: torch.Tensor, v16: torch.Tensor, heads: HeadConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The K and V pools as ``heads.kv_dtype`` stores the bf16 values ``k16``/``v16``: 16-bit pools as they are, FP8
    pools the values / ``bench_kv_scale`` (so the kernels' scale path is exercised)."""
    if not heads.kv_fp8:
        return k16, v16
    kv_scale = bench_kv_scale(heads)
    return (k16.float() / kv_scale).to(heads.kv_dtype), (v16.float() / kv_scale).to(heads.kv_dtype)


def check_against(out: torch.Tensor, ref: tuple, what: str) -> None:
    """Stop the sweep unless ``out``'s sampled requests (``ref``: their indices, float64 attention) are within the
    bf16 bound."""
    torch.cuda.synchronize()
    err = float((out[ref[0]].double().cpu() - ref[1]).norm() / ref[1].norm())
    if not err < 2e-2:
        raise SystemExit(f"{what}: relative error {err:.2e}")


def fa3_time(indptr: torch.Tensor, indices: torch.Tensor, q, k, v, ref, reps: int) -> float:
    """fa3 on these inputs (page size 1) through the kernel bench's one fa3 call, checked, then graph replays."""
    call = fa3_decode(indptr, indices, [(q, k, v)], 1, 1 / math.sqrt(k.shape[2]))
    check_against(call(0), ref, "fa3")
    return time_graph(call, 1, reps)


@contextlib.contextmanager
def tail_divisor(divisor: int | None) -> Iterator[None]:
    """Plans made inside cut the launch's last wave where it holds at most 1/``divisor`` of the resident CTAs
    (``planner.TAIL_WAVE_DIVISOR``; None: the planner's own)."""
    if divisor is None:
        yield
        return
    if divisor < 1:
        raise ValueError(f"a last-wave divisor must be at least 1, got {divisor}")
    saved = planner.TAIL_WAVE_DIVISOR
    planner.TAIL_WAVE_DIVISOR = divisor
    try:
        yield
    finally:
        planner.TAIL_WAVE_DIVISOR = saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="*", default=["32/2/4", "32/3/3", "16/6/3", "32/4/2", "64/2/2"],
                    help="KVTILE/STAGES/CTAS per SM; the tile table's own variant always runs first")
    ap.add_argument("--cases", nargs="+", default=list(CASES), type=parse_case, metavar="CASE",
                    help=f"one of {', '.join(CASES + MORE_CASES)}, or dBxC: B private rows of C tokens")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--kv-dtype", choices=("bf16", *FP8_KV_NAMES), default="bf16",
                    help="KV pool dtype (FP8: scales 0.5, a bf16 column, FlashInfer's FP8 decode as the peer)")
    ap.add_argument("--head-dim", type=int, choices=(64, 128, 256), default=HEAD_DIM,
                    help="head dim (other than 128: no fa3/FlashInfer peers)")
    ap.add_argument("--heads", type=parse_heads, default=HEADS,
                    help="q/kv heads, e.g. 64/8 (default 32/8; others: no fa3/FlashInfer peers)")
    ap.add_argument("--table-again", action="store_true",
                    help="time the table's variant again after the others (a column 'again')")
    ap.add_argument("--no-warm-first", action="store_true",
                    help="time each case's first column once (default: twice, keeping the second)")
    ap.add_argument("--static-items", type=int, nargs="*", default=[],
                    help="also time the table's plan through StaticPlanBuffers (SGLang's CUDA-graph path) with a "
                         "forward grid of N items per KV head, e.g. 1040 (the grid every captured batch size had "
                         "before per-batch grids at max bs 256) and the batch's fitted grid: a column 'gridN' each")
    ap.add_argument("--split-tokens", type=int, nargs="*", default=[],
                    help="also time the table's variant with every pack cut into KV splits of at most N tokens "
                         "(plan_forest(split_tokens=N)) instead of the planner's choice: a column 'sN' each")
    ap.add_argument("--tail-divisors", type=int, nargs="*", default=[],
                    help="also time the table's variant planned with the last-wave cut at 1/N of the resident CTAs "
                         "(planner.TAIL_WAVE_DIVISOR = N instead of the planner's own) : a column 'tdN' each")
    args = ap.parse_args(argv)
    hd = args.head_dim
    scale = 1 / math.sqrt(hd)
    hq, hkv = args.heads
    heads16 = HeadConfig(hq, hkv, hd, torch.bfloat16)
    fp8 = args.kv_dtype != "bf16"
    heads = HeadConfig(hq, hkv, hd, torch.bfloat16, FP8_KV_NAMES[args.kv_dtype]) if fp8 else heads16
    kv_scale = bench_kv_scale(heads)
    rng = np.random.default_rng(0)
    real = DeviceSpec.from_torch(torch.device("cuda"))
    table = load_tile_table(real.arch)
    table_ctas = table.min_ctas_per_sm[hd]
    arch = device_arch(torch.device("cuda"))
    built = KernelVariant.for_config(heads, arch)  # the table's, as PAT_SGLANG_WGMMA says
    try:
        variant_tunes = check_variants(heads, arch, args.variants)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    # (tune, fixed split length, last-wave divisor) per column: the table's variant, the other variants, the fixed
    # split lengths, the last-wave divisors
    tunes: list[tuple[KernelTune | None, int | None, int | None]] = (
        [(None, None, None)] + [(t, None, None) for t in variant_tunes]
        + [(None, n, None) for n in args.split_tokens] + [(None, None, d) for d in args.tail_divisors]
        + ([(None, None, None)] if args.table_again else []))
    names = (["table"] + list(args.variants) + [f"s{n}" for n in args.split_tokens]
             + [f"td{d}" for d in args.tail_divisors] + (["again"] if args.table_again else []))
    if fp8:
        peers = ["bf16"] + ([] if args.no_peers else ["fi_fp8"])
    else:
        peers = [] if args.no_peers or hd != HEAD_DIM or args.heads != HEADS else ["fa3", "fi_tc"]
    peers = [f"grid{n}" for n in args.static_items] + peers
    copy_bw = measure_copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}; SMs {real.sm_count}; times in us (median); KV {args.kv_dtype}; "
          f"heads {hq}/{hkv}, head dim {hd}; table variant {built.kv_tile}/{built.stages}/{built.min_ctas_per_sm}"
          f"{f'/wg/n{built.wg_cols}' if built.wgmma else ''}; "
          f"floor: each distinct KV slot read once at the copy bandwidth, {copy_bw / 1e12:.3f} TB/s (read+write)")
    print(table_header(names + peers))
    for name in args.cases:
        indptr, indices, slots = case_batch(name, rng)
        q, k16, v16 = make_qkv(indptr.shape[0] - 1, hq, hkv, hd, slots, torch.bfloat16, "cuda", seed=1)
        k, v = stored_kv(k16, v16, heads)  # FP8: stored = value / scale, read as stored * scale
        ref = sampled_naive_decode(q, k, v, indptr, indices, scale, k_scale=kv_scale, v_scale=kv_scale)
        forest = PrefixForest.from_flat(indptr, indices)
        cells = []
        table_plan = None  # the table variant's plan (the first of ``tunes``), for the static-buffer columns
        items = []  # "column items/partials" of each column's plan
        for column, (tune, split_tokens, divisor) in zip(names, tunes, strict=True):
            ctas = table_ctas if tune is None else tune.min_ctas_per_sm
            # plan for this variant's occupancy: the planner reads the table's CTAs per SM, so scale the SMs
            spec = DeviceSpec(sm_count=max(1, real.sm_count * ctas // table_ctas), ctas_per_sm=real.ctas_per_sm,
                              arch=real.arch)
            with tail_divisor(divisor):
                host_plan = plan_forest(forest, heads, spec, tiles=plan_tiles(table, tune), split_tokens=split_tokens)
            plan = host_plan.to("cuda")
            items.append(f"{column} {host_plan.num_items}/{host_plan.num_partials}")
            if tune is None and table_plan is None:
                # StaticPlanBuffers.load copies a host plan's columns; the slot table stays where the kernel reads it
                table_plan = copy_with(host_plan, slot_table=plan.slot_table)
            out = torch.full_like(q, float("nan"))
            try:
                launch_plan(plan, q, k, v, scale, out=out, tune=tune, k_scale=kv_scale, v_scale=kv_scale)
                torch.cuda.synchronize()
            except Exception as e:  # a variant that does not build or fit (shared memory, registers)
                cells.append(f"{'n/a':>10}")
                print(f"  {name} {tune}: {type(e).__name__}: {e}", flush=True)
                continue
            check_against(out, ref, f"{name} {tune}")

            def call(_: int, plan=plan, out=out, tune=tune, q=q, k=k, v=v) -> torch.Tensor:
                return launch_plan(plan, q, k, v, scale, out=out, tune=tune, k_scale=kv_scale, v_scale=kv_scale)

            if not cells and not args.no_warm_first:
                time_graph(call, 1, args.reps)  # untimed: the case's first timing read slow (module docstring)
            us = time_graph(call, 1, args.reps)
            cells.append(f"{us:10.1f}")
        for peer in peers:
            try:
                if peer.startswith("grid"):  # the CUDA-graph path: static buffers, a fixed grid of N items
                    if table_plan is None:
                        raise RuntimeError("the table variant did not run")
                    n = max(int(peer[4:]), table_plan.num_items)
                    buffers = StaticPlanBuffers(heads, q.shape[0], n, max(table_plan.num_partials, 1), "cuda")
                    buffers.load(table_plan)
                    out_t = torch.full_like(q, float("nan"))
                    buffers.run(q, k, v, scale, out_t, kv_scale, kv_scale)
                    check_against(out_t, ref, f"{name} {peer}")

                    def replay(_: int, b=buffers, o=out_t, q=q, k=k, v=v) -> torch.Tensor:
                        return b.run(q, k, v, scale, o, kv_scale, kv_scale)

                    us = time_graph(replay, 1, args.reps)
                elif peer == "bf16":  # the table's kernel on the bf16 pools the FP8 ones were made from
                    plan16 = plan_forest(forest, heads16, real).to("cuda")
                    out16 = torch.empty_like(q)
                    us = time_graph(lambda _, plan16=plan16, out16=out16, q=q, k16=k16, v16=v16: launch_plan(
                        plan16, q, k16, v16, scale, out=out16), 1, args.reps)
                elif peer == "fa3":
                    us = fa3_time(indptr, indices, q, k, v, ref, args.reps)
                elif peer == "fi_fp8":
                    us = fi_time(indptr, indices, q, k, v, True, ref, args.reps, kv_scale=kv_scale, graph=True)
                else:
                    us = fi_time(indptr, indices, q, k, v, True, ref, args.reps)
                cells.append(f"{us:10.1f}")
            except (ImportError, OSError, RuntimeError) as e:
                cells.append(f"{'n/a':>10}")
                print(f"  {name} {peer}: {type(e).__name__}: {e}", flush=True)
        floor = np.unique(indices.numpy()).size * heads.kv_token_bytes / copy_bw * 1e6
        print(f"{name:>11} {floor:8.1f} " + "".join(cells), flush=True)
        print(f"{'':>11} items/partials: {', '.join(items)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
