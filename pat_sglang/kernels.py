"""NVRTC runtime for the forward and merge kernels (``kernels/pat_decode.cu``).

Role in pack-forward-merge: *forward* and *merge* on the GPU. Compiles one module per
(arch, dtype, head dim) with NVRTC through cuda-python, caches the cubin on disk keyed by the hash of
source + options + arch + NVRTC version (a second process start does not recompile), loads it with the
driver's library API (context-independent), and resolves each plan's launches (``PlanLaunch``) on torch's current
stream with the tensors' pointers: one forward launch for all work items of the step, one merge launch (``launch.py``
puts them on the stream, as one CUDA graph outside captures).

``launch_plan`` is the eager path (allocates partial buffers per call). ``StaticPlanBuffers`` is the
CUDA-graph path: fixed-capacity device buffers loaded from a plan outside the graph, and a launch-only
``run`` whose grid sizes depend only on the capacities.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import host_core
from .config import (
    FP8_KV_DTYPES,
    SUPPORTED_HEAD_DIMS,
    T8_HEAD_DIMS,
    HeadConfig,
    cache_root,
    check_supported,
    data_dir,
    kv_pool_view,
    load_tile_table,
    wg_cols_fit,
)
from .launch import KernelLaunch, KernelLauncher
from .planner import (
    ITEM_FIELDS,
    ITEM_TILE_M,
    PackPlan,
    PlanLimits,
    item_layout_defines,
    plan_array,
    same_plan_array,
)
from .run_inputs import check_run_inputs

logger = logging.getLogger(__name__)

MERGE_WARPS = 4  # the merge kernel's warps per CTA, one q head each (passed to kernels/pat_decode.cu as -D)
# The wide launch (KernelVariant.wide_stages, pat_wide_forward): items of tile m >= WIDE_MIN_TILE_M run there, in CTAs
# of two 64-row consumer warpgroups (tile m up to WIDE_TILE_M) over KV stages of WIDE_KV_TOKENS tokens; at most
# WIDE_MAX_STAGES stages fit the 227 KB of shared memory at head dim 128. The kernel's own constants (WIDE_ROWS,
# WIDE_N) are checked against these through its shared-memory size at load.
WIDE_MIN_TILE_M = 64
WIDE_TILE_M = 128
WIDE_KV_TOKENS = 64
WIDE_MAX_STAGES = 6
WIDE_THREADS = 384  # a producer and two consumer warpgroups
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
# FP8 KV pool formats: variant name and the cuda_fp8.h interpretation passed as -DPAT_KV_FP8 (the one table of
# the KV-format contract between host and kernel).
FP8_KV_FORMATS = {torch.float8_e4m3fn: ("fp8_e4m3", "__NV_E4M3"), torch.float8_e5m2: ("fp8_e5m2", "__NV_E5M2")}
assert set(FP8_KV_FORMATS) == set(FP8_KV_DTYPES)
FP8_KV_NAMES = {name: dtype for dtype, (name, _) in FP8_KV_FORMATS.items()}  # "fp8_e4m3" -> torch dtype
_FP8_INTERPRETATION = dict(FP8_KV_FORMATS.values())  # "fp8_e4m3" -> "__NV_E4M3"


def kv_dtype_name(heads: HeadConfig) -> str:
    """The variant's KV name: the q dtype's name for 16-bit pools, else the FP8 format's."""
    if heads.kv_dtype in FP8_KV_FORMATS:
        return FP8_KV_FORMATS[heads.kv_dtype][0]
    return DTYPE_NAMES[heads.dtype]
CI_ARCHS = ("sm_80", "sm_90")


class KernelBuildError(RuntimeError):
    """NVRTC failed; the message carries the compiler log."""


def kernel_source() -> str:
    return data_dir("pat_sglang.kernels_src", "kernels").joinpath("pat_decode.cu").read_text()


def cache_dir() -> Path:
    return cache_root() / "cubin"


@dataclass(frozen=True)
class KernelTune:
    """Overrides of the tile table for one run (benchmark sweeps); None keeps the table's value."""

    kv_tile: int | None = None
    stages: int | None = None
    min_ctas_per_sm: int | None = None
    warps: int | None = None
    timing: bool = False  # build with -DPAT_TIMING (per-CTA timestamps; profiling only)
    rescale_slack_log2: int = 0  # -DPAT_RESCALE_SLACK_LOG2: see KernelVariant
    source: str = ""  # another kernel source file to build (an A/B of two kernel versions in one run); "" = ours
    wgmma: bool | None = None  # 64-row items on warpgroup MMAs (sm_90 only); None = the table's / PAT_SGLANG_WGMMA
    min_tile_m: int | None = None  # plans only (TileTable.with_min_tile_m): items take tile ms >= this; same build
    max_tile_m: int | None = None  # plans only (TileTable.with_max_tile_m): items take tile ms <= this; same build
    # plans only (TileTable.with_min_tile_m_tokens): packs of this many KV tokens or more are long; same build
    min_tile_m_tokens: int | None = None
    wg_cols: int | None = None  # KV columns per wgmma S block (KernelVariant.wg_cols); None = the table's where fit
    wide_stages: int | None = None  # KernelVariant.wide_stages; None = 0 (no wide launch)
    t8: bool | None = None  # KernelVariant.t8; None = the table's (set by the heads alone, which a tune keeps)


@dataclass(frozen=True)
class KernelVariant:
    """One compiled module: both kernels for one (arch, dtype, KV dtype, head dim)."""

    arch: str  # "sm_90"
    dtype: str  # "bf16" | "fp16": q and out
    head_dim: int
    kv_tile: int
    stages: int
    min_ctas_per_sm: int = 1
    warps: int = 4
    timing: bool = False
    kv_dtype: str = ""  # "" or dtype: 16-bit pools of the q dtype; "fp8_e4m3" | "fp8_e5m2": FP8 pools
    # The online softmax keeps a row's running max until a tile's max exceeds it by more than this (log2 units), so a
    # warp rescales its O accumulators only then: 0 (the default) gives the exact result of rescaling every tile;
    # N > 0 lets P reach 2^N (FA4's trick: fewer rescales, same attention up to rounding); -1 rescales every tile
    # (the kernel before the skip, for sweeps).
    rescale_slack_log2: int = 0
    source: str = ""  # path of the kernel source to compile instead of the package's (KernelTune.source)
    # 64-row items (one warpgroup of 4 warps) on Hopper's warpgroup MMAs (-DPAT_WGMMA, built for sm_90a): Q, K and V
    # read by the tensor cores straight from shared memory in wgmma's 128-byte-swizzle layout. Other tile ms, and
    # every build without it, use mma.sync.
    wgmma: bool = False
    # KV columns a 64-row wgmma item takes per S block and softmax step (-DPAT_WG_COLS: 16, 32 or 64): wider blocks
    # mean fewer tensor-core round trips per token, at wg_cols / 2 S registers per thread. A divisor of kv_tile, or
    # (16-bit pools) a multiple of it: then the block spans G = wg_cols / kv_tile stages (the kernel's ring layout), G
    # dividing the stages and at least 2G of them, and the item's loop takes G tiles per step; other items stream
    # kv_tile tokens per step as before (``config.wg_cols_fit``).
    wg_cols: int = 16
    # The wide items (tile m >= WIDE_MIN_TILE_M) in a launch of their own (pat_wide_forward, -DPAT_WIDE): a producer
    # warpgroup and two consumer warpgroups per CTA, 128-row items, this many 64-token KV stages; 0: no wide launch,
    # every item on pat_pack_forward. Needs a 4-warp wgmma build over 16-bit pools at head dim 64 or 128.
    wide_stages: int = 0
    # Long 16-row items of at most 8 query rows (private leaves at GQA <= 8) with the KV tokens as the MMA's M
    # (-DPAT_T8; kernels/pat_decode.cu attend_block_t8): half the MMAs per token. FP8 pools at head dim 128 or 256
    # (``config.T8_HEAD_DIMS``), where the tile table's fp8 ``t8_head_dims`` say.
    t8: bool = False

    def __post_init__(self) -> None:
        if self.kv_dtype in ("", self.dtype):
            object.__setattr__(self, "kv_dtype", self.dtype)
        elif self.kv_dtype not in _FP8_INTERPRETATION:
            raise ValueError(f"unknown KV dtype {self.kv_dtype!r} for a {self.dtype} variant")
        if not wg_cols_fit(self.wg_cols, self.kv_tile, self.stages, self.kv_fp8):
            raise ValueError(
                f"wg_cols {self.wg_cols}: 16, 32 or 64 KV columns, a divisor of the KV tile {self.kv_tile} or (16-bit "
                f"pools) a multiple spanning G tiles, G dividing the {self.stages} stages and at most half of them")
        if self.wg_cols != 16 and not self.wgmma:
            raise ValueError(f"wg_cols {self.wg_cols} sets the wgmma path's S blocks: the variant needs wgmma")
        if self.wgmma and not wgmma_buildable(self.arch, self.warps):
            raise ValueError(
                f"wgmma builds need sm_90 and 4 warps (one warpgroup per 64-row item); got {self.arch}, "
                f"{self.warps} warps"
            )
        if self.wide_stages and not (self.wgmma and not self.kv_fp8 and self.head_dim in (64, 128)
                                     and 2 <= self.wide_stages <= WIDE_MAX_STAGES):
            raise ValueError(
                f"a wide launch ({self.wide_stages} stages) needs a wgmma build over 16-bit pools at head dim 64 or "
                f"128 and 2 to {WIDE_MAX_STAGES} stages; got wgmma={self.wgmma}, KV {self.kv_dtype}, head dim "
                f"{self.head_dim}")
        if self.t8 and not (self.kv_fp8 and self.head_dim in T8_HEAD_DIMS):
            raise ValueError(f"t8 items (tokens as the MMA's M) need FP8 pools at a head dim of {T8_HEAD_DIMS}; got KV "
                             f"{self.kv_dtype}, head dim {self.head_dim}")

    def without_wgmma(self) -> KernelVariant:
        """This variant built on mma.sync alone (its S blocks back to 16 columns)."""
        return dataclasses.replace(self, wgmma=False, wg_cols=16)

    @property
    def kv_fp8(self) -> bool:
        return self.kv_dtype in _FP8_INTERPRETATION

    @property
    def kv_elem_bytes(self) -> int:
        return 1 if self.kv_fp8 else 2

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def max_tile_m(self) -> int:
        return WIDE_TILE_M if self.wide_stages else 16 * self.warps

    @property
    def wide_smem_bytes(self) -> int:
        """Dynamic shared memory of pat_wide_forward (its own formula in the kernel, checked at load): the 128-row Q
        tile, the K and V stages of WIDE_KV_TOKENS tokens, a full and an empty mbarrier per stage."""
        return (WIDE_TILE_M * self.head_dim * 2 + 2 * self.wide_stages * WIDE_KV_TOKENS * self.head_dim * 2
                + 2 * self.wide_stages * 8)

    @staticmethod
    def for_config(heads: HeadConfig, arch: str, tune: KernelTune | None = None) -> KernelVariant:
        """The tile table's variant for these heads; ``tune`` overrides it (benchmark sweeps)."""
        check_supported(heads)
        v = KernelVariant.from_table(arch, DTYPE_NAMES[heads.dtype], heads.head_dim, kv_dtype_name(heads))
        if tune is not None:
            warps = tune.warps or v.warps
            kv_tile, stages = tune.kv_tile or v.kv_tile, tune.stages or v.stages
            # the table's wgmma holds for its own warps: a tune of fewer warps builds mma.sync unless it asks
            wgmma = v.wgmma and wgmma_buildable(arch, warps) if tune.wgmma is None else tune.wgmma
            # the table's S block width where the tune's build can take it, else 16 columns
            wg_cols = tune.wg_cols or (v.wg_cols if wgmma and wg_cols_fit(v.wg_cols, kv_tile, stages, v.kv_fp8)
                                       else 16)
            v = KernelVariant(
                arch,
                v.dtype,
                v.head_dim,
                kv_tile,
                stages,
                tune.min_ctas_per_sm or v.min_ctas_per_sm,
                warps,
                tune.timing,
                v.kv_dtype,
                tune.rescale_slack_log2,
                tune.source,
                wgmma,
                wg_cols,
                tune.wide_stages or 0,
                v.t8 if tune.t8 is None else tune.t8,
            )
        return v

    @staticmethod
    def from_table(arch: str, dtype: str, head_dim: int, kv_dtype: str = "") -> KernelVariant:
        """The tile table's entry; FP8 pools take the table's fp8 entries where it has them (else the 16-bit
        ones: their stages then take half the shared memory, plus one converted 16-bit tile)."""
        table = load_tile_table(arch.replace("_", ""))
        fp8 = kv_dtype in _FP8_INTERPRETATION
        warps = table.warps[head_dim]
        wgmma = wgmma_by_default(arch, warps, table.wgmma(head_dim, fp8))
        return KernelVariant(
            arch,
            dtype,
            head_dim,
            table.kv_tile(head_dim, fp8),
            table.stages_for(head_dim, fp8),
            table.min_ctas_per_sm[head_dim],
            warps,
            kv_dtype=kv_dtype,
            wgmma=wgmma,
            wg_cols=table.wg_cols_for(head_dim, fp8) if wgmma else 16,
            t8=table.t8(head_dim, fp8),
        )

    def options(self, include_dir: str) -> list[str]:
        return [
            # wgmma exists only in the arch-specific target (sm_90a cubins load on sm_90 devices)
            f"--gpu-architecture={self.arch}{'a' if self.wgmma else ''}",
            "-std=c++17",
            f"-I{include_dir}",
            f"-DPAT_DTYPE_{self.dtype.upper()}",
            *([f"-DPAT_KV_FP8={_FP8_INTERPRETATION[self.kv_dtype]}"] if self.kv_fp8 else []),
            f"-DHEAD_DIM={self.head_dim}",
            f"-DKV_TILE={self.kv_tile}",
            f"-DSTAGES={self.stages}",
            f"-DPAT_MIN_BLOCKS={self.min_ctas_per_sm}",
            f"-DPAT_WARPS={self.warps}",
            f"-DMERGE_WARPS={MERGE_WARPS}",
            "--ptxas-options=-v",
            *host_layout_defines(),
            *item_layout_defines(),
            f"-DPAT_RESCALE_SLACK_LOG2={self.rescale_slack_log2}",
            f"-DPAT_WG_COLS={self.wg_cols}",
        ] + (["-DPAT_TIMING"] if self.timing else []) + (["-DPAT_WGMMA"] if self.wgmma else []) + (
            [f"-DPAT_WIDE={self.wide_stages}"] if self.wide_stages else []) + (["-DPAT_T8"] if self.t8 else [])

    @property
    def smem_bytes(self) -> int:
        """Dynamic shared memory of pat_pack_forward; the kernel holds the same formula (and the host checks
        it against the kernel's constant at load): Q + K/V stages in the pool's element type (+ one converted
        16-bit K/V tile for FP8 pools), or the fp32 combine buffer of the largest tile, whichever is larger."""
        m = 16 * self.warps  # pat_pack_forward's largest tile m (the wide launch's 128-row items have their own)
        tile = self.kv_tile * self.head_dim
        converted = 2 * tile * 2 if self.kv_fp8 else 0
        main = m * self.head_dim * 2 + 2 * self.stages * tile * self.kv_elem_bytes + converted
        combine = (m * self.head_dim + 2 * m) * 4
        return max(main, combine)


#: "1" builds 64-row items on warpgroup MMAs wherever the arch and the table's warps allow (KernelVariant.wgmma),
#: "0" nowhere; unset: where the tile table says (``wgmma_head_dims``). Plans do not read it: with "0", d256's least
#: tile m (``TileTable.least_tile_m``) still pads private rows to 64-row items, which then run on mma.sync (correct,
#: untimed).
WGMMA_ENV = "PAT_SGLANG_WGMMA"


def wgmma_by_default(arch: str, warps: int, table_says: bool) -> bool:
    """Whether the table's variant for ``arch`` takes warpgroup MMAs: only where the build can have them (sm_90 with 4
    warps: newer GPUs run the newest table, sm_90's, without them), and there as ``PAT_SGLANG_WGMMA`` says (1: yes;
    0: no), else as the tile table says."""
    flag = os.environ.get(WGMMA_ENV, "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"{WGMMA_ENV}={flag!r}: use 1 (warpgroup MMAs for 64-row items) or 0")
    wanted = table_says if flag == "" else flag == "1"
    return wanted and wgmma_buildable(arch, warps)


def wgmma_buildable(arch: str, warps: int) -> bool:
    """Whether a variant can take warpgroup MMAs: sm_90 (they are sm_90a's alone) with 4 warps (the CTA is the 64-row
    item's one warpgroup)."""
    return arch == "sm_90" and warps == 4


def all_variants(arch: str) -> list[KernelVariant]:
    """Every module the tile table for ``arch`` asks for (both dtypes x (16-bit and both FP8 KV formats), all
    head dims)."""
    kv_names = ("", *(name for name, _ in FP8_KV_FORMATS.values()))
    return [
        KernelVariant.from_table(arch, dt, d, kv)
        for dt in DTYPE_NAMES.values()
        for kv in kv_names
        for d in SUPPORTED_HEAD_DIMS
    ]


@dataclass(frozen=True)
class CompiledVariant:
    variant: KernelVariant
    cubin: bytes
    log: str
    from_cache: bool

    def resource_usage(self) -> dict[str, dict[str, int]]:
        """Per kernel: registers, spill bytes and stack frame, from the ptxas report."""
        out: dict[str, dict[str, int]] = {}
        current = None
        for line in self.log.splitlines():
            m = re.search(r"Compiling entry function '(\w+)'", line)
            m = m or re.search(r"Function properties for (\w+)", line)
            if m:
                current = m.group(1)
                out.setdefault(current, {})
            if current is None:
                continue
            for key, pat in (
                ("stack_bytes", r"(\d+) bytes stack frame"),
                ("spill_store_bytes", r"(\d+) bytes spill stores"),
                ("spill_load_bytes", r"(\d+) bytes spill loads"),
                ("registers", r"Used (\d+) registers"),
            ):
                m = re.search(pat, line)
                if m:
                    out[current][key] = int(m.group(1))
        return out


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise KernelBuildError("cuda-python (cuda-bindings) is needed to build the PAT kernels") from e
    return nvrtc


def _check(result, what: str):
    err = result[0]
    if int(err) != 0:
        raise KernelBuildError(f"{what} failed: {err!r}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def include_dir() -> str:
    try:
        from cuda import pathfinder

        found = pathfinder.find_nvidia_header_directory("cudart")
        if found:
            return str(found)
    except Exception:  # noqa: BLE001 - fall through to the toolkit folder
        pass
    for cand in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if cand and Path(cand, "include", "cuda_bf16.h").exists():
            return str(Path(cand, "include"))
    raise KernelBuildError("cuda_bf16.h not found: install cuda-toolkit[nvrtc,cudart]==13.* or set CUDA_HOME")


_compile_lock = threading.Lock()


def nvrtc_compile(source: str, file_name: str, options: list[str], what: str) -> tuple[bytes, str]:
    """(cubin, NVRTC's log) of ``source`` built with ``options``; ``KernelBuildError`` with the log naming ``what``
    where it does not compile. One build at a time in this process."""
    nvrtc = _nvrtc()
    with _compile_lock:
        prog = _check(nvrtc.nvrtcCreateProgram(source.encode(), file_name.encode(), 0, [], []), "nvrtcCreateProgram")
        try:
            res = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            buf = b" " * size
            _check((nvrtc.nvrtcGetProgramLog(prog, buf)[0], None), "nvrtcGetProgramLog")
            log = buf.decode(errors="replace").rstrip("\0")
            if int(res[0]) != 0:
                raise KernelBuildError(f"NVRTC failed to compile {what}:\n{log}")
            size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            cubin = b" " * size
            _check((nvrtc.nvrtcGetCUBIN(prog, cubin)[0], None), "nvrtcGetCUBIN")
        finally:
            nvrtc.nvrtcDestroyProgram(prog)
    return cubin, log


def compile_variant(variant: KernelVariant, use_cache: bool = True) -> CompiledVariant:
    """NVRTC-compile ``variant`` to a cubin (or take it from the disk cache)."""
    nvrtc = _nvrtc()
    src = Path(variant.source).read_text() if variant.source else kernel_source()
    inc = include_dir()
    opts = variant.options(inc)
    major, minor = _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    # The include path differs between machines but not what it holds; key on the options without it.
    key_opts = [o for o in opts if not o.startswith("-I")]
    key = hashlib.sha256("\0".join([src, *key_opts, f"nvrtc{major}.{minor}"]).encode()).hexdigest()[:24]
    v = variant
    kv = "" if v.kv_dtype == v.dtype else f"_kv{v.kv_dtype}"
    wg = "_wg" if v.wgmma else ""
    path = cache_dir() / f"pat_{v.arch}{wg}_{v.dtype}{kv}_d{v.head_dim}_n{v.kv_tile}_s{v.stages}_w{v.warps}_{key}.cubin"

    if use_cache and path.exists():
        meta = path.with_suffix(".json")
        log = json.loads(meta.read_text())["log"] if meta.exists() else ""
        return CompiledVariant(variant, path.read_bytes(), log, True)

    cubin, log = nvrtc_compile(src, "pat_decode.cu", opts, str(variant))
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(cubin)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps({"variant": str(variant), "log": log}))
    return CompiledVariant(variant, cubin, log, False)


# ---------------------------------------------------------------------------------------------- launch
class _ForwardParams(ctypes.Structure):
    _fields_ = [
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("part_o", ctypes.c_void_p),
        ("part_lse", ctypes.c_void_p),
        ("items", ctypes.c_void_p),
        ("slot_table", ctypes.c_void_p),
        ("item_req", ctypes.c_void_p),
        ("item_dst", ctypes.c_void_p),
        ("num_items", ctypes.c_void_p),
        ("seq_lens", ctypes.c_void_p),
        ("req_rows", ctypes.c_void_p),
        ("q_stride", ctypes.c_longlong),
        ("out_stride", ctypes.c_longlong),
        ("kv_stride_slot", ctypes.c_longlong),
        ("kv_stride_head", ctypes.c_longlong),
        ("row_stride", ctypes.c_longlong),
        ("num_q_heads", ctypes.c_int),
        ("num_kv_heads", ctypes.c_int),
        ("scale_log2", ctypes.c_float),
        ("v_scale", ctypes.c_float),
    ]


class _MergeParams(ctypes.Structure):
    _fields_ = [
        ("out", ctypes.c_void_p),
        ("part_o", ctypes.c_void_p),
        ("part_lse", ctypes.c_void_p),
        ("merge_indptr", ctypes.c_void_p),
        ("merge_partials", ctypes.c_void_p),
        ("out_stride", ctypes.c_longlong),
        ("num_q_heads", ctypes.c_int),
        ("num_requests", ctypes.c_int),
    ]


def host_layout_defines() -> list[str]:
    """Sizes of the ctypes launch-parameter structs, checked by static_asserts in the kernel source."""
    return [
        f"-DPAT_HOST_FWD_SIZE={ctypes.sizeof(_ForwardParams)}",
        f"-DPAT_HOST_MERGE_SIZE={ctypes.sizeof(_MergeParams)}",
    ]


def _driver():
    from cuda.bindings import driver

    return driver


def _drv(result, what: str):
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver call {what} failed: {err!r}")
    return result[1] if len(result) == 2 else result[1:]


class _LoadedKernels:
    """Both kernels of one variant, loaded as a context-independent CUlibrary."""

    def __init__(self, compiled: CompiledVariant) -> None:
        driver = _driver()
        self.variant = compiled.variant
        self._cubin = compiled.cubin  # the library may reference the image lazily
        self.library = _drv(driver.cuLibraryLoadData(compiled.cubin, None, None, 0, None, None, 0), "cuLibraryLoadData")
        self.forward = _drv(driver.cuLibraryGetKernel(self.library, b"pat_pack_forward"), "cuLibraryGetKernel")
        self.merge = _drv(driver.cuLibraryGetKernel(self.library, b"pat_merge"), "cuLibraryGetKernel")
        self.wide = (_drv(driver.cuLibraryGetKernel(self.library, b"pat_wide_forward"), "cuLibraryGetKernel")
                     if self.variant.wide_stages else None)
        self._configured: set[int] = set()

    def read_timing(self, num_ctas: int) -> np.ndarray:
        """[num_ctas, 4] globaltimer stamps (ns) of a -DPAT_TIMING build: start, first tile, loop end, end."""
        driver = _driver()
        ptr, size = _drv(driver.cuLibraryGetGlobal(self.library, b"pat_timing"), "cuLibraryGetGlobal")
        host = np.zeros((size // 32, 4), dtype=np.uint64)
        _drv((driver.cuMemcpyDtoH(host.ctypes.data, ptr, size)[0], None), "cuMemcpyDtoH")
        return host[:num_ctas]

    def configure(self, device_index: int) -> None:
        if device_index in self._configured:
            return
        driver = _driver()
        dev = _drv(driver.cuDeviceGet(device_index), "cuDeviceGet")
        self._set_smem(dev, self.forward, b"pat_forward_smem_bytes", self.variant.smem_bytes)
        if self.wide is not None:
            self._set_smem(dev, self.wide, b"pat_wide_smem_bytes", self.variant.wide_smem_bytes)
        self._configured.add(device_index)

    def _set_smem(self, dev, kernel, symbol: bytes, nbytes: int) -> None:
        """Allow ``kernel`` ``nbytes`` of dynamic shared memory, after checking the host's formula for it against the
        kernel's own constant ``symbol`` (one copy at load)."""
        allow_dynamic_smem(kernel, nbytes, dev)
        kernel_says = library_int32(self.library, symbol)
        if kernel_says != nbytes:
            raise RuntimeError(f"shared-memory size mismatch ({symbol.decode()}): kernel {kernel_says}, host {nbytes}")


def allow_dynamic_smem(kernel, nbytes: int, dev) -> None:  # noqa: ANN001 (a CUkernel, a CUdevice)
    """Let ``kernel`` launch with ``nbytes`` of dynamic shared memory on ``dev`` (above 48 KB it must opt in)."""
    driver = _driver()
    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    _drv((driver.cuKernelSetAttribute(attr, nbytes, kernel, dev)[0], None), "smem attr")


def library_int32(library, symbol: bytes) -> int:  # noqa: ANN001 (a CUlibrary)
    """The value of a loaded library's ``extern "C" __device__ const int`` named ``symbol``."""
    driver = _driver()
    ptr, _ = _drv(driver.cuLibraryGetGlobal(library, symbol), "cuLibraryGetGlobal")
    host = np.zeros(1, dtype=np.int32)
    _drv((driver.cuMemcpyDtoH(host.ctypes.data, ptr, 4)[0], None), "cuMemcpyDtoH")
    return int(host[0])


_loaded: dict[KernelVariant, _LoadedKernels] = {}
_load_lock = threading.Lock()
_ctx_ready = threading.local()


def _ensure_context(device_index: int) -> None:
    """The driver API needs a current context on this thread; torch's primary context is the one."""
    if getattr(_ctx_ready, "device", None) == device_index:
        return
    driver = _driver()
    torch.cuda.init()
    ctx = _drv(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if int(ctx) == 0:
        dev = _drv(driver.cuDeviceGet(device_index), "cuDeviceGet")
        ctx = _drv(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        _drv((driver.cuCtxSetCurrent(ctx)[0], None), "cuCtxSetCurrent")
    _ctx_ready.device = device_index


def device_arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise ValueError(f"unsupported GPU (sm_{major}{minor}): PAT kernels need sm_80 or newer")
    return f"sm_{major}{minor}"


def kernels_for(heads: HeadConfig, device: torch.device, tune: KernelTune | None = None) -> _LoadedKernels:
    """The loaded kernels of the tile table's variant for ``heads`` on ``device`` (``tune`` overrides it). Where the
    table or ``PAT_SGLANG_WGMMA`` chose warpgroup MMAs and that build cannot be made or loaded here (an NVRTC or
    driver without sm_90a), the mma.sync build serves instead, with one warning; a sweep's explicit
    ``KernelTune(wgmma=True)`` fails instead."""
    variant = KernelVariant.for_config(heads, device_arch(device), tune)
    index = device.index if device.index is not None else torch.cuda.current_device()
    _ensure_context(index)
    with _load_lock:
        k = _loaded.get(variant)
        if k is None:
            try:
                k = _LoadedKernels(compile_variant(variant))
            except (KernelBuildError, RuntimeError) as err:
                if not variant.wgmma or (tune is not None and tune.wgmma):
                    raise
                logger.warning("PAT: the warpgroup-MMA kernel build failed here (%s); using the mma.sync build",
                               str(err).splitlines()[0])
                plain = variant.without_wgmma()
                k = _loaded.get(plain) or _LoadedKernels(compile_variant(plain))
                _loaded[plain] = k
            _loaded[variant] = k
        k.configure(index)
    return k


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _check_open_ends(seq_lens: torch.Tensor, req_rows: torch.Tensor, q: torch.Tensor) -> None:
    """The per-request arrays open items are ended from: 1-D int64, contiguous, on q's device, one entry (at least)
    per request of q."""
    for name, t in (("seq_lens", seq_lens), ("req_rows", req_rows)):
        if t.dtype != torch.int64 or t.dim() != 1 or t.stride(0) != 1 or t.device != q.device:
            raise ValueError(f"{name} must be a contiguous 1-D int64 tensor on {q.device}, got {t.dtype} "
                             f"{tuple(t.shape)} on {t.device}")
        if t.shape[0] < q.shape[0]:
            raise ValueError(f"{name} has {t.shape[0]} entries for a batch of {q.shape[0]}")


def _check_layout(
    heads: HeadConfig, q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, out: torch.Tensor
) -> None:
    """Dtypes and strides the variant for ``heads`` reads (pools already viewed through ``kv_pool_view``)."""
    for name, t, want in (("q", q, heads.dtype), ("out", out, heads.dtype), ("k_buffer", k_buffer, heads.kv_dtype),
                          ("v_buffer", v_buffer, heads.kv_dtype)):
        if t.dtype != want:
            raise ValueError(f"{name} is {t.dtype}; the kernels were built for {want} (heads {heads})")
    d = q.shape[2]
    for name, t in (("q", q), ("out", out)):
        if t.stride(2) != 1 or t.stride(1) != d or t.stride(0) % 8:
            raise ValueError(f"{name} must have contiguous heads ([*, heads, head_dim] rows, 16-byte aligned)")
    if k_buffer.stride() != v_buffer.stride():
        raise ValueError("k_buffer and v_buffer must have the same strides")
    align = 16 // k_buffer.element_size()  # elements in 16 bytes: every head row starts on a cp.async boundary
    if k_buffer.stride(2) != 1 or k_buffer.stride(1) % align or k_buffer.stride(0) % align:
        raise ValueError("KV pools must be [num_slots, num_kv_heads, head_dim] with contiguous, aligned head rows")
    if k_buffer.stride(0) * k_buffer.element_size() >= 2**31:  # the loader's slot offset: a 32 x 32 -> 64-bit product
        raise ValueError(f"KV pool slot stride of {k_buffer.stride(0)} elements is 2 GiB or more")
    for t in (q, k_buffer, v_buffer, out):
        if t.data_ptr() % 16:
            raise ValueError("q, out and the KV pools must be 16-byte aligned")


class PlanLaunch:
    """One plan's launches, resolved once: the kernels, the partial workspace, both parameter structs and their
    argument arrays, the grids. A call writes only the q/k/v/out pointers, strides and scale, and launches
    (eager ``run`` per layer costs two driver calls and a few field writes, not a plan walk).

    ``tensors``: the plan's device tensors by name (``items``, ``slot_table``, ``item_req``, ``item_dst``,
    ``merge_indptr``, ``merge_partials``, optionally ``num_items``), ``part_o``/``part_lse`` the workspace.

    ``row_stride``: the plan may have open items (``planner.ITEM_OPEN_END``); then every call passes ``seq_lens`` and
    ``req_rows`` (per request: its length and slot-table row now, int64 on the device, SGLang's
    ``forward_batch.seq_lens`` and ``req_pool_indices``), which the forward kernel reads to end them.

    ``wide_items``: the first so many items run on the wide launch (``KernelVariant.wide_stages``), the rest on
    pat_pack_forward after it."""

    def __init__(
        self,
        kern: _LoadedKernels,
        heads: HeadConfig,
        tensors: dict[str, torch.Tensor | None],
        grid_items: int,
        merge_requests: int,
        merge: bool,
        row_stride: int | None = None,
        wide_items: int = 0,
        check_inputs: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> None:
        if wide_items and kern.wide is None:
            raise ValueError(f"{wide_items} wide items, but the build has no wide launch")
        self.kern = kern
        self.wide_items = wide_items
        self.heads = heads
        self.tensors = tensors  # keeps the buffers alive while the structs point at them
        self.grid_items = grid_items
        self.merge_requests = merge_requests
        self.merge = merge
        self.fwd = _ForwardParams()
        for name in ("part_o", "part_lse", "items", "slot_table", "item_req", "item_dst", "num_items"):
            setattr(self.fwd, name, _ptr(tensors.get(name)))
        self.fwd.num_q_heads = heads.num_q_heads
        self.fwd.num_kv_heads = heads.num_kv_heads
        self.open = row_stride is not None
        self.fwd.row_stride = row_stride or 0
        # With a wide launch, pat_pack_forward's items start past the wide ones; the wide launch gets its own copy of
        # the parameters (refreshed from these at every launch) with the items from the first.
        self.fwd_wide = _ForwardParams()
        self.wide_items_ptr = self.fwd.items
        self.fwd.items += wide_items * ITEM_FIELDS * 4
        self.fwd_wide_args = (ctypes.c_void_p * 1)(ctypes.addressof(self.fwd_wide))
        self.fwd_args = (ctypes.c_void_p * 1)(ctypes.addressof(self.fwd))
        self.mp = _MergeParams()
        for name in ("part_o", "part_lse", "merge_indptr", "merge_partials"):
            setattr(self.mp, name, _ptr(tensors.get(name)))
        self.mp.num_q_heads = heads.num_q_heads
        self.mp.num_requests = merge_requests
        self.merge_args = (ctypes.c_void_p * 1)(ctypes.addressof(self.mp))
        # The launches in their order; each reads the struct its argument array points at, rewritten every call.
        kernels = []
        if wide_items > 0:
            kernels.append(KernelLaunch(int(kern.wide), (heads.num_kv_heads, wide_items), WIDE_THREADS,
                                        kern.variant.wide_smem_bytes, ctypes.addressof(self.fwd_wide_args),
                                        "pat_wide_forward"))
        if grid_items > wide_items:
            kernels.append(KernelLaunch(int(kern.forward), (heads.num_kv_heads, grid_items - wide_items),
                                        kern.variant.threads, kern.variant.smem_bytes, ctypes.addressof(self.fwd_args),
                                        "pat_pack_forward"))
        if merge:
            kernels.append(KernelLaunch(int(kern.merge), (merge_requests, -(-heads.num_q_heads // MERGE_WARPS)),
                                        32 * MERGE_WARPS, 0, ctypes.addressof(self.merge_args), "pat_merge"))
        self.launcher = KernelLauncher(kernels)
        self.check_inputs = check_inputs
        self._checked: tuple | None = None
        self._pools: dict[tuple[int, int], _PoolFacts] = {}

    def __call__(
        self,
        q: torch.Tensor,
        k_buffer: torch.Tensor,
        v_buffer: torch.Tensor,
        out: torch.Tensor,
        sm_scale: float,
        k_scale: float = 1.0,
        v_scale: float = 1.0,
        seq_lens: torch.Tensor | None = None,
        req_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``k_scale``/``v_scale``: dequantised KV = stored * scale (SGLang's per-tensor FP8 scales). ``seq_lens``,
        ``req_rows``: where open items end (see the class)."""
        pools = self._pools.get((id(k_buffer), id(v_buffer)))
        if pools is None or pools.k() is not k_buffer or pools.v() is not v_buffer:
            pools = self._pool_facts(k_buffer, v_buffer)
        if pools.viewed:
            k_buffer, v_buffer = kv_pool_view(k_buffer, self.heads), kv_pool_view(v_buffer, self.heads)
        # Everything the checks below read; the strides' tuples (which include each one's dims) come first.
        device = q.device
        key = (q.stride(), out.stride(), q.shape, out.shape, q.dtype, out.dtype, device, out.device, pools.layout)
        f = self.fwd
        if self.open:
            if seq_lens is None or req_rows is None:
                raise ValueError("the plan has open items: pass seq_lens and req_rows (per request, int64)")
            key += (seq_lens.dtype, seq_lens.device, seq_lens.shape, seq_lens.stride(), req_rows.dtype,
                    req_rows.device, req_rows.shape, req_rows.stride())
            f.seq_lens, f.req_rows = seq_lens.data_ptr(), req_rows.data_ptr()
        if key != self._checked:
            if self.check_inputs is not None:
                self.check_inputs(q, k_buffer, v_buffer)
            if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
                raise ValueError(f"out must match q: {tuple(out.shape)} {out.dtype} vs {tuple(q.shape)} {q.dtype}")
            _check_layout(self.heads, q, k_buffer, v_buffer, out)
            if self.open:
                _check_open_ends(seq_lens, req_rows, q)
            self._checked = key
        f.q, f.k, f.v, f.out = q.data_ptr(), k_buffer.data_ptr(), v_buffer.data_ptr(), out.data_ptr()
        if (f.q | f.k | f.v | f.out) % 16:
            raise ValueError("q, out and the KV pools must be 16-byte aligned")
        f.q_stride, f.out_stride = key[0][0], key[1][0]
        f.kv_stride_slot, f.kv_stride_head = pools.stride_slot, pools.stride_head
        scale_log2 = sm_scale * k_scale * _LOG2E  # the K scale folds into the scores: q.(s k) = s (q.k)
        if not 0.0 < scale_log2 < math.inf:  # the kernel scales each block's max: a monotone map only for scale > 0
            raise ValueError(f"sm_scale * k_scale must be positive and finite, got {sm_scale!r} * {k_scale!r}")
        f.scale_log2 = scale_log2
        f.v_scale = v_scale
        self.mp.out, self.mp.out_stride = f.out, f.out_stride
        self.launch(_raw_stream(device.index), device.index)
        return out

    def _pool_facts(self, k_buffer: torch.Tensor, v_buffer: torch.Tensor) -> _PoolFacts:
        """The pools' layout as the kernels read them, remembered for these two pool objects (held weakly: a pool
        freed, or another object at its address, is read afresh). A model's layers each pass their own pools, which
        keep their layout for the server's life; a pool object whose shape or strides are changed in place
        (``resize_``, ``as_strided_``) would keep the remembered layout: pass a new tensor instead."""
        k_view, v_view = kv_pool_view(k_buffer, self.heads), kv_pool_view(v_buffer, self.heads)
        layout = (k_view.stride(), v_view.stride(), k_view.shape, v_view.shape, k_view.dtype, v_view.dtype,
                  k_view.device, v_view.device)
        strides = (*layout[0], 0, 0)  # K's; read by the launch only once the checks passed ([slots, heads, dim])
        facts = _PoolFacts(weakref.ref(k_buffer), weakref.ref(v_buffer), layout, strides[0], strides[1],
                           k_view is not k_buffer or v_view is not v_buffer)
        if len(self._pools) >= _MAX_POOLS_REMEMBERED:
            self._pools.clear()
        self._pools[(id(k_buffer), id(v_buffer))] = facts
        return facts

    def launch(self, stream: int, device_index: int | None = None) -> None:
        """The launches with the arguments the last call wrote (``launch.KernelLauncher``: kernel by kernel, then as
        one CUDA graph from the second call outside a capture on; ``bench/eager_launch.py`` times them alone)."""
        if self.wide_items > 0:
            ctypes.memmove(ctypes.addressof(self.fwd_wide), ctypes.addressof(self.fwd), ctypes.sizeof(self.fwd))
            self.fwd_wide.items = self.wide_items_ptr
        self.launcher.launch(stream, device_index)


class _PoolFacts(NamedTuple):
    """What ``PlanLaunch`` reads of a (K, V) pool pair, kept while both live: weak references to them, their layout
    (strides, shapes, dtypes and devices as the kernels view them: part of the checked call's key), the slot and head
    strides the kernels take, and whether the pools are viewed per call (SGLang's uint8 storage of FP8 pools)."""

    k: weakref.ref
    v: weakref.ref
    layout: tuple
    stride_slot: int
    stride_head: int
    viewed: bool


_MAX_POOLS_REMEMBERED = 1024  # (K, V) pairs a launch remembers the layout of (a model's layers; cleared when full)


def _raw_stream(device_index: int | None) -> int:
    """torch's current stream on the device, as the raw ``CUstream`` value."""
    if device_index is None:
        device_index = torch.cuda.current_device()
    return torch._C._cuda_getCurrentRawStream(device_index)


_LOG2E = math.log2(math.e)
_PLAN_TENSORS = ("items", "slot_table", "item_req", "item_dst", "merge_indptr", "merge_partials")


def wide_first(items: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The plan's items with those of the wide launch (tile m >= WIDE_MIN_TILE_M) first, each group in its own order,
    and how many those are (each item row stands alone: its KV range, requests and tile m)."""
    wide = items[:, ITEM_TILE_M] >= WIDE_MIN_TILE_M
    order = torch.cat([torch.nonzero(wide).flatten(), torch.nonzero(~wide).flatten()])
    return items[order].contiguous(), int(wide.sum())


def plan_launch(plan: PackPlan, device: torch.device, tune: KernelTune | None = None) -> PlanLaunch:
    """The plan's resolved launch on ``device`` (made on first use, then cached with the plan); ``tune`` overrides the
    tile table's build (benchmark sweeps)."""
    cache = plan.__dict__.setdefault("_launch", {})
    key = (device, tune)
    launch = cache.get(key)
    if launch is not None:
        return launch
    heads = plan.heads
    for name in _PLAN_TENSORS:
        if getattr(plan, name).device != device:
            raise ValueError(f"plan.{name} is on {getattr(plan, name).device}, q on {device}: call plan.to(device)")
    kern = kernels_for(heads, device, tune)
    if max(plan.tile_ms) > kern.variant.max_tile_m:
        raise ValueError(f"plan uses tile m {max(plan.tile_ms)}; the kernel is built for {kern.variant.max_tile_m}")
    n_part = max(plan.num_partials, 1)
    tensors: dict[str, torch.Tensor | None] = {name: getattr(plan, name) for name in _PLAN_TENSORS}
    wide_items = 0
    if kern.variant.wide_stages:
        items, wide_items = wide_first(plan.items.cpu())
        tensors["items"] = items.to(device)
    tensors["part_o"] = torch.empty((n_part, heads.num_q_heads, heads.head_dim), dtype=heads.dtype, device=device)
    tensors["part_lse"] = torch.empty((n_part, heads.num_q_heads), dtype=torch.float32, device=device)
    # The input checks hold the plan's facts, not the plan (which caches this launch: no reference cycle).
    check = functools.partial(check_run_inputs, plan.heads, plan.num_requests, plan.max_slot)
    launch = PlanLaunch(kern, heads, tensors, plan.num_items, plan.num_requests, merge=plan.num_partials > 0,
                        row_stride=plan.row_stride if plan.num_open else None, wide_items=wide_items,
                        check_inputs=check)
    cache[key] = launch
    return launch


def launch_plan(
    plan: PackPlan,
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    sm_scale: float,
    out: torch.Tensor | None = None,
    tune: KernelTune | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    seq_lens: torch.Tensor | None = None,
    req_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eager forward + merge of ``plan`` (its tensors must already be on ``q``'s device). ``tune``
    overrides the tile table (benchmark sweeps); ``k_scale``/``v_scale`` dequantise FP8 pools; ``seq_lens``/
    ``req_rows`` (per request, int64 on the device): where the plan's open items end (needed if it has any)."""
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    return plan_launch(plan, q.device, tune)(q, k_buffer, v_buffer, out, sm_scale, k_scale, v_scale, seq_lens,
                                             req_rows)


# The static buffers in their order within one flat allocation: those a re-made plan shares with the plan loaded before
# it first, the items (new in every plan) last, so that every load is one copy of one contiguous span.
_LOAD_ORDER = ("item_req", "item_dst", "merge_indptr", "merge_partials", "num_items", "items")
_ALIGN = 64  # int32 elements (256 bytes) each buffer starts on: the items are read with aligned 32-byte loads


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _views(flat: torch.Tensor, offsets: dict[str, int], sizes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The named buffers as views of ``flat`` (each at its offset, in its shape)."""
    return {n: flat[offsets[n] : offsets[n] + math.prod(s)].view(s) for n, s in sizes.items()}


def _head_shape(h: HeadConfig) -> tuple:
    return h.num_q_heads, h.num_kv_heads, h.head_dim, h.dtype, h.kv_dtype


def _first_changed(plan: PackPlan, last: PackPlan) -> int:
    """Index in ``_LOAD_ORDER`` of the first buffer whose contents for ``plan`` differ from those ``last`` loaded
    (plans are never edited, so a tensor shared by both holds the same values; the items always differ)."""
    same = (
        same_plan_array(plan, last, "item_req"),
        same_plan_array(plan, last, "item_dst"),
        same_plan_array(plan, last, "merge_indptr"),
        same_plan_array(plan, last, "merge_partials"),
        plan.num_items == last.num_items,
    )
    return same.index(False) if False in same else len(same)


def _stage_plan(host: dict[str, np.ndarray], plan: PackPlan, names: tuple[str, ...],
                staged: tuple[np.ndarray, tuple[int, ...], tuple[int, ...]] | None = None) -> None:
    """Write the used prefix of ``plan``'s buffers ``names`` (the tail of ``_LOAD_ORDER``) into the staging arrays
    ``host``: with ``staged`` (the set's flat array, and its buffers' element offsets and sizes in ``_LOAD_ORDER``) in
    one call of the host core's extension module (``kernels/host_glue.c`` ``stage_plan``) where it loads, else numpy
    copies of the plan's host arrays (``planner.plan_array``), the reference."""
    glue = host_core.loaded_glue() if staged is not None else None
    if glue is not None:
        got = glue.stage_plan(
            *staged, len(_LOAD_ORDER) - len(names),
            *(plan_array(plan, n) for n in ("items", "item_req", "item_dst", "merge_indptr", "merge_partials")),
            plan.num_requests,
        )
        if got is not NotImplemented:
            return
    _stage_plan_numpy(host, plan, names)


def _stage_plan_numpy(host: dict[str, np.ndarray], plan: PackPlan, names: tuple[str, ...]) -> None:
    """``_stage_plan`` in numpy."""
    for name in names:
        if name == "num_items":
            host["num_items"][0] = plan.num_items
        elif name == "merge_indptr":
            indptr = plan_array(plan, "merge_indptr")
            b = plan.num_requests
            host["merge_indptr"][: b + 1] = indptr
            host["merge_indptr"][b + 1 :] = indptr[-1]  # padding requests: no partials
        else:
            values = plan_array(plan, name)
            host[name][: values.shape[0]] = values


class StaticPlanBuffers:
    """Fixed-capacity plan buffers for CUDA-graph capture and replay.

    ``limits_for(batch)`` is what the planner must fit (``plan_forest(..., limits=...)``); ``load(plan)`` runs outside
    the graph (host staging in pinned memory, then one async copy on the current stream: the buffers are views of one
    allocation); ``run`` only launches, with grids fixed by the capacities: the forward grid is
    ``limits_for(batch).max_items`` CTAs per KV head (items past the plan's count exit at once) and the merge grid is
    the batch (requests with no partials, and padding, exit at once). The slot table (SGLang's ``req_to_token``) is the
    same tensor for every plan: its address is captured in the graph, and so are those of the per-request arrays open
    items are ended from (``run``'s ``seq_lens``/``req_rows``: the graph runner's static
    ``seq_lens``/``req_pool_indices`` buffers, which it fills before every replay), and the row stride. A plan loaded
    again (the decode-step planner hands out the same plan for unchanged batches) costs nothing: the device buffers hold
    it already.
    """

    def __init__(
        self,
        heads: HeadConfig,
        max_batch: int,
        max_items: int,
        max_partials: int,
        device: torch.device | str,
        split_items: int | None = None,
    ) -> None:
        check_supported(heads)
        self.heads = heads
        self.device = torch.device(device)
        # "cuda" is the current device: name it, so that a plan's tensors (always on cuda:N) compare equal to it
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.max_batch = max_batch
        self.max_items = max(max_items, max_batch)  # the no-sharing plan (one item per request) always fits
        self.max_partials = max_partials
        self.max_entries = max_partials + max_batch  # (item, request) pairs: partial slots + direct rows
        self.limits = PlanLimits(self.max_items, self.max_partials, self.max_entries)
        # ``limits_for``: with ``split_items`` each batch size gets its own forward grid (None: one grid, max_items)
        self.split_items = split_items
        self._limits_by_batch: dict[int, PlanLimits] = {}
        sizes = {
            "items": (self.max_items, ITEM_FIELDS),
            "item_req": (self.max_entries,),
            "item_dst": (self.max_entries,),
            "merge_indptr": (max_batch + 1,),
            "merge_partials": (max(max_partials, 1),),
            "num_items": (1,),
        }
        # Every buffer is a view of one flat int32 tensor (device) and of one flat pinned tensor per staging set, laid
        # out in ``_LOAD_ORDER``: a load copies the one span from the first buffer it changes to the end of the items,
        # in a single copy (each host-to-device copy costs host time, and a load used to make up to six).
        self._offsets: dict[str, int] = {}
        end = 0
        for name in _LOAD_ORDER:
            self._offsets[name] = end
            end += _aligned(math.prod(sizes[name]))
        pin = self.device.type == "cuda"
        self._dev_flat = torch.zeros(end, dtype=torch.int32, device=self.device)
        self.dev = _views(self._dev_flat, self._offsets, sizes)
        # Two pinned staging sets, alternating per load: a set is overwritten only after the copies of two loads
        # ago have left it, which is long done, so the event wait before writing is normally a no-op.
        self._stage_flat = [torch.zeros(end, dtype=torch.int32, pin_memory=pin) for _ in range(2)]
        self._stages = [_views(flat, self._offsets, sizes) for flat in self._stage_flat]
        self._events = [torch.cuda.Event() if pin else None for _ in range(2)]
        # numpy views of the staging sets: the host writes of a load are numpy copies (a torch op costs several
        # times as much host time per call, and a load makes up to a dozen), or one call of the host core's extension
        # module over the set's flat array with the buffers' offsets and sizes (``_stage_plan``)
        self._stages_np = [{n: t.numpy() for n, t in stage.items()} for stage in self._stages]
        layout = (tuple(self._offsets[n] for n in _LOAD_ORDER), tuple(math.prod(sizes[n]) for n in _LOAD_ORDER))
        self._staged = [(flat.numpy(), *layout) for flat in self._stage_flat]
        # Per buffer of ``_LOAD_ORDER``: the span a load that changes it first copies, from it to the end of the
        # allocation (device view, and each staging set's), made once: slicing per load costs host time, copying the
        # unused tail of the items buffer along costs only copy-engine time (a few microseconds)
        self._spans = [
            (self._dev_flat[off:], tuple(flat[off:] for flat in self._stage_flat))
            for off in (self._offsets[name] for name in _LOAD_ORDER)
        ]
        self._stage = 1
        self.host = self._stages[0]
        self._checked: tuple[HeadConfig, torch.Tensor] | None = None  # (heads, slot table) the last load checked
        self.part_o = torch.empty(
            (max(max_partials, 1), heads.num_q_heads, heads.head_dim), dtype=heads.dtype, device=self.device
        )
        self.part_lse = torch.empty((max(max_partials, 1), heads.num_q_heads), dtype=torch.float32, device=self.device)
        self.plan: PackPlan | None = None
        self.slot_table: torch.Tensor | None = None
        self.row_stride: int | None = None  # of the plans with open items (one per slot table)
        self._open_ptrs: tuple[int, int] | None = None  # seq_lens / req_rows addresses the launches read
        self._launch: PlanLaunch | None = None

    def limits_for(self, batch: int) -> PlanLimits:
        """What a plan for a batch of ``batch`` rows (padding included) must fit. The forward grid of that batch's
        launch has ``max_items`` of these limits per KV head, fixed when the graph is captured; CTAs past the plan's
        item count start and exit at once, but each still takes a slot (a grid sized for the largest batch gave a
        batch of 64 about eight CTAs for each one with work). With ``split_items`` the grid is two items per request
        (packs and leaves) plus the KV splits' items (``planner.max_split_items``), at most ``max_items``."""
        if self.split_items is None:
            return self.limits
        limits = self._limits_by_batch.get(batch)
        if limits is None:
            items = min(self.max_items, 2 * batch + self.split_items)
            limits = self._limits_by_batch[batch] = PlanLimits(items, self.max_partials, self.max_entries)
        return limits

    def load(self, plan: PackPlan) -> None:
        """Copy ``plan`` into the fixed buffers; ``ValueError`` if it exceeds a capacity or reads another slot
        table than the one the graphs were captured with.

        One host-to-device copy, from one of two pinned staging sets: the span from the first buffer that changed
        since the last load to the end of the buffers (the unused tails of the buffers go along; the kernels read
        nothing past the plan's counts). Nothing here waits on the device unless the set's copies from
        two loads ago are still in flight. The plan loaded last is not copied again (plans are never edited)."""
        if plan is self.plan:
            return
        self._check(plan)
        # Buffers the previous load already put on the device (a re-made plan shares all but its items) need no copy:
        # the device buffers hold them, and later copies on this stream are ordered after the kernels that read them.
        # The copy starts at the first buffer (in ``_LOAD_ORDER``) that changed; every buffer from there on is written
        # to the staging set, whose other contents are two loads old.
        last = self.plan
        first = 0 if last is None else _first_changed(plan, last)
        self._stage ^= 1
        stage = self._stage
        event = self._events[stage]
        if event is not None:
            event.synchronize()  # this set's copies (two loads ago) have left it: normally already true
        self.host = self._stages[stage]
        _stage_plan(self._stages_np[stage], plan, _LOAD_ORDER[first:], self._staged[stage])
        device_span, staged_spans = self._spans[first]
        device_span.copy_(staged_spans[stage], non_blocking=True)
        if event is not None:
            event.record()
        self.plan = plan

    def _check(self, plan: PackPlan) -> None:
        """``ValueError`` if ``plan`` does not fit the buffers (``load``'s conditions). The heads and the slot table's
        device are compared once per object (the decode-step planner hands every plan the same two)."""
        h = plan.heads
        checked = self._checked
        if (checked is None or h is not checked[0]) and _head_shape(h) != _head_shape(self.heads):
            raise ValueError(f"plan heads {h} differ from the buffers' {self.heads}")
        num_items = plan.num_items
        for what, n, cap in (("batch", plan.num_requests, self.max_batch), ("items", num_items, self.max_items),
                             ("partials", plan.num_partials, self.max_partials),
                             ("entries", int(plan_array(plan, "item_req").shape[0]), self.max_entries)):
            if n > cap:
                raise ValueError(f"plan has {n} {what}, the static buffers hold {cap}")
        grid = self.limits_for(plan.num_requests).max_items
        if num_items > grid:  # items past the grid would never run: refuse, never a silently partial output
            raise ValueError(f"plan has {num_items} items, the forward grid of a batch of {plan.num_requests} "
                             f"runs {grid} (plan with limits_for({plan.num_requests}))")
        table = plan.slot_table
        if (checked is None or table is not checked[1]) and table.device != self.device:
            raise ValueError(f"plan.slot_table is on {table.device}, the buffers on {self.device}")
        if self.slot_table is None:
            self.slot_table = table
        elif table.data_ptr() != self.slot_table.data_ptr():
            raise ValueError("the plan reads another slot table than the one the CUDA graphs were captured with")
        if plan.row_stride is not None:
            if self.row_stride is None:
                self.row_stride = plan.row_stride
            elif plan.row_stride != self.row_stride:
                raise ValueError(f"the plan's row stride {plan.row_stride} differs from the buffers' {self.row_stride}")
        self._checked = (h, table)

    def run(
        self,
        q: torch.Tensor,
        k_buffer: torch.Tensor,
        v_buffer: torch.Tensor,
        sm_scale: float,
        out: torch.Tensor,
        k_scale: float = 1.0,
        v_scale: float = 1.0,
        seq_lens: torch.Tensor | None = None,
        req_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Launch-only forward + merge over the loaded plan (capturable in a CUDA graph); the scales are captured
        as values, like ``sm_scale`` (SGLang's per-layer ``k_scale_float``/``v_scale_float`` are constants).
        ``seq_lens``/``req_rows``: per request of ``q``, its length and row (int64; SGLang's graph-runner buffers),
        read by the kernel where the plan's open items end; every call must pass the same buffers (their addresses
        are captured)."""
        if self.plan is None:
            raise RuntimeError("StaticPlanBuffers.run before load()")
        if not q.is_cuda:
            from .reference import run_reference

            b = self.plan.num_requests
            compute = torch.float64 if q.dtype == torch.float64 else torch.float32
            result = run_reference(self.plan, q[:b], k_buffer, v_buffer, sm_scale, compute, k_scale, v_scale,
                                   seq_lens, req_rows)
            out[:b].copy_(result.to(out.dtype))
            return out
        if self.row_stride is not None:
            if seq_lens is None or req_rows is None:
                raise ValueError("the buffers serve plans with open items: pass seq_lens and req_rows")
            ptrs = (seq_lens.data_ptr(), req_rows.data_ptr())
            if self._open_ptrs is None:
                self._open_ptrs = ptrs
            elif ptrs != self._open_ptrs:
                raise ValueError("seq_lens/req_rows are other tensors than the ones the CUDA graphs were captured with")
        launch = self._launch
        grid = self.limits_for(q.shape[0]).max_items
        if (
            launch is None
            or launch.merge_requests != min(self.max_batch, q.shape[0])
            or launch.grid_items != grid
            or launch.open != (self.row_stride is not None)
        ):
            tensors: dict[str, torch.Tensor | None] = dict(self.dev)
            tensors["slot_table"] = self.slot_table
            tensors["part_o"] = self.part_o
            tensors["part_lse"] = self.part_lse
            launch = PlanLaunch(
                kernels_for(self.heads, q.device), self.heads, tensors, grid,
                min(self.max_batch, q.shape[0]), merge=True, row_stride=self.row_stride,
            )
            self._launch = launch
        return launch(q, k_buffer, v_buffer, out, sm_scale, k_scale, v_scale, seq_lens, req_rows)
