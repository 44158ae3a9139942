"""Head, device and tile configuration, and the one place that says what PAT supports.

Role in pack-forward-merge: the planner sizes packs and splits from ``HeadConfig`` and ``DeviceSpec``;
the tile table (``configs/tiles/sm*.json``) lists the (query rows x KV tokens) shapes the pack-forward
kernel is compiled for. ``check_supported`` raises a ``ValueError`` naming the problem for anything the
kernels do not serve, so callers (the SGLang backend) can fall back to another backend.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import torch


def cache_root() -> Path:
    """Where compiled artefacts are kept between processes: ``$PAT_SGLANG_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pat-sglang`` (``~/.cache/pat-sglang``); kernels under ``cubin/``, the host library under
    ``host/``."""
    root = os.environ.get("PAT_SGLANG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pat-sglang"
    )
    return Path(root)


def data_dir(package: str, repo_folder: str) -> Traversable:
    """A data folder: the repository's own (``configs/``, ``kernels/``) when ``pat_sglang`` is imported from a source
    checkout, else the copy shipped inside the installed package (``pat_sglang.configs`` <- ``configs/``). The
    checkout comes first so that an editable install of one checkout never hands another checkout (a worktree on
    PYTHONPATH) its kernels or tile tables."""
    checkout = resources.files("pat_sglang").joinpath("..")
    if checkout.joinpath("pyproject.toml").is_file() and checkout.joinpath(repo_folder).is_dir():
        return checkout.joinpath(repo_folder)
    try:
        return resources.files(package)
    except ModuleNotFoundError:
        return checkout.joinpath(repo_folder)


SUPPORTED_HEAD_DIMS = (64, 128, 256)
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
# KV pools in FP8 (SGLang's --kv-cache-dtype fp8_e4m3 / fp8_e5m2) with q and out in one of SUPPORTED_DTYPES; the
# kernel dequantises with per-tensor scales (dequantised = stored * scale). fnuz (ROCm) formats are not served.
FP8_KV_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
MAX_GQA_GROUP = 16  # GLM-4.5-Air 96/8 (12), Qwen3-235B-A22B 64/4 (16)
# Batch and KV length have no kernel limit short of the grid (planner.MAX_ITEMS work items) and int32 slot
# indices; tests/gpu covers batch 1-1024 and one request of 128k tokens.

# Bytes the merge moves per (request, partial, q head) beyond the KV: an output row in the 16-bit q dtype written by
# pack-forward and read back by merge (PARTIAL_ELEM_BYTES per element), plus its fp32 log-sum-exp.
PARTIAL_ELEM_BYTES = 2
PARTIAL_LSE_BYTES = 4


@dataclass(frozen=True)
class HeadConfig:
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.bfloat16  # q and out
    kv_dtype: torch.dtype | None = None  # the KV pools; None: the same as dtype (then set to it)

    def __post_init__(self) -> None:
        if self.kv_dtype is None:
            object.__setattr__(self, "kv_dtype", self.dtype)  # one spelling per config: equality and hashing agree
        if self.num_q_heads <= 0 or self.num_kv_heads <= 0 or self.head_dim <= 0:
            raise ValueError(f"head counts and head_dim must be positive: {self}")
        if self.num_q_heads % self.num_kv_heads:
            raise ValueError(
                f"num_q_heads ({self.num_q_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )

    @property
    def group(self) -> int:
        """Query heads per KV head (the GQA ratio)."""
        return self.num_q_heads // self.num_kv_heads

    @property
    def elem_bytes(self) -> int:
        """Bytes of one q/out element."""
        return self.dtype.itemsize

    @property
    def kv_elem_bytes(self) -> int:
        """Bytes of one KV pool element (1 for FP8 pools)."""
        assert self.kv_dtype is not None  # set in __post_init__
        return self.kv_dtype.itemsize

    @property
    def kv_fp8(self) -> bool:
        return self.kv_dtype in FP8_KV_DTYPES

    @property
    def kv_token_bytes(self) -> int:
        """K plus V bytes of one token over all KV heads, in the pool's element size."""
        return 2 * self.num_kv_heads * self.head_dim * self.kv_elem_bytes

    @property
    def partial_bytes(self) -> int:
        """Bytes one extra partial of one request costs: written once, read once, all q heads."""
        return 2 * self.num_q_heads * (self.head_dim * PARTIAL_ELEM_BYTES + PARTIAL_LSE_BYTES)


@dataclass(frozen=True)
class DeviceSpec:
    """What the planner needs to know of the GPU."""

    sm_count: int = 132
    ctas_per_sm: int = 2
    arch: str = "sm90"

    @staticmethod
    def from_torch(device: torch.device | None = None) -> DeviceSpec:
        props = torch.cuda.get_device_properties(device)
        arch = f"sm{props.major}{props.minor}"
        return DeviceSpec(sm_count=props.multi_processor_count, arch=arch)

    @property
    def target_ctas(self) -> int:
        return self.sm_count * self.ctas_per_sm


KERNEL_TILE_MS = (16, 32, 64, 128)  # tile m = 16 * row warps


@dataclass(frozen=True)
class TileTable:
    """Per-arch tile table (``configs/tiles/sm*.json``)."""

    tile_ms: tuple[int, ...]  # query rows per CTA, ascending
    kv_tile_tokens: dict[int, int]  # head_dim -> KV tokens per shared-memory stage
    min_ctas_per_sm: dict[int, int]  # head_dim -> CTAs per SM the register budget is built for
    stages: dict[int, int]  # head_dim -> shared-memory pipeline depth
    warps: dict[int, int]  # head_dim -> warps per CTA (tile m can be at most 16 * warps)
    arch: str
    # FP8 KV pools: head_dim -> KV tokens per stage / pipeline depth where they differ from the 16-bit entries (an FP8
    # token row is half the bytes, and the tile loop's time is set per tile, not per byte)
    fp8_kv_tile_tokens: dict[int, int] = field(default_factory=dict)
    fp8_stages: dict[int, int] = field(default_factory=dict)
    # Head dims whose 16-bit-KV builds run 64-row items on warpgroup MMAs (sm_90 tables; ``KernelVariant.wgmma``);
    # FP8-KV builds take the fp8 entry's list (none when absent)
    wgmma_head_dims: frozenset[int] = frozenset()
    fp8_wgmma_head_dims: frozenset[int] = frozenset()
    # head_dim -> the least tile m its items take where its build runs 64-row items on warpgroup MMAs
    # (``least_tile_m``): at d256 a private request's 4 rows run faster padded to 64 rows on wgmma, the CTA's four
    # warps computing, than as one warp's 16-row mma.sync item; FP8-KV builds take the fp8 entry's (none where absent:
    # their 16-row items take K and V straight from the FP8 stage and beat the padded 64-row ones)
    min_tile_m: dict[int, int] = field(default_factory=dict)
    fp8_min_tile_m: dict[int, int] = field(default_factory=dict)
    # head_dim -> the KV tokens from which a pack is long: a long pack's row blocks take the smallest tile that holds
    # their rows, not the least tile m (``least_tile_m``). At d256 a private request's 16-row mma.sync item streams a
    # long row faster than the padded 64-row wgmma one, a short row slower. Absent: the least tile m holds for every
    # pack. FP8-KV builds take the fp8 entry's.
    min_tile_m_tokens: dict[int, int] = field(default_factory=dict)
    fp8_min_tile_m_tokens: dict[int, int] = field(default_factory=dict)
    # head_dim -> KV columns per wgmma S block of its 16-bit-KV build's 64-row items (``KernelVariant.wg_cols``;
    # 16 where absent); FP8-KV builds take the fp8 entry's (16 where absent)
    wg_cols: dict[int, int] = field(default_factory=dict)
    fp8_wg_cols: dict[int, int] = field(default_factory=dict)
    # Head dims whose FP8-KV builds run long 16-row items of at most 8 query rows with the KV tokens as the MMA's M
    # (``KernelVariant.t8``; FP8 pools at head dim 128 or 256 only)
    fp8_t8_head_dims: frozenset[int] = frozenset()

    def wgmma(self, head_dim: int, fp8: bool = False) -> bool:
        """Whether this head dim's build (``fp8``: over FP8 pools) takes warpgroup MMAs for 64-row items."""
        return head_dim in (self.fp8_wgmma_head_dims if fp8 else self.wgmma_head_dims)

    def tile_for(self, rows: int) -> int:
        """Index of the smallest tile whose m holds ``rows`` query rows (the largest if none does)."""
        for i, m in enumerate(self.tile_ms):
            if m >= rows:
                return i
        return len(self.tile_ms) - 1

    @property
    def max_m(self) -> int:
        return self.tile_ms[-1]

    def with_warps(self, warps: int) -> TileTable:
        """This table for CTAs of ``warps`` warps at every head dim (a sweep's variant, ``KernelTune.warps``): the
        tile m values such a CTA holds (16 rows per warp): fewer warps drop the larger ones, so plans cut bigger packs
        into more row blocks; more warps add the powers of two above the table's largest up to 16 * warps (8 warps:
        128-row items, which the kernel's 8-warp builds take)."""
        largest = max(self.tile_ms)
        wider = tuple(m for m in (2 * largest, 4 * largest, 8 * largest) if m <= 16 * warps)
        tile_ms = tuple(m for m in self.tile_ms if m <= 16 * warps) + wider
        if not tile_ms:
            raise ValueError(f"{warps} warps hold no tile m of {self.tile_ms}")
        return self._with_tile_ms(tile_ms, warps={d: warps for d in self.warps})

    def _with_tile_ms(self, tile_ms: tuple[int, ...], **changes: object) -> TileTable:
        """This table with ``tile_ms`` (and ``changes``), keeping only the least tile ms (``min_tile_m``,
        ``fp8_min_tile_m``) that are among them, and their long packs' tokens."""

        def held(least: dict[int, int]) -> dict[int, int]:
            return {d: m for d, m in least.items() if m in tile_ms}

        min_tile_m, fp8_min_tile_m = held(self.min_tile_m), held(self.fp8_min_tile_m)
        return replace(self, tile_ms=tile_ms, min_tile_m=min_tile_m, fp8_min_tile_m=fp8_min_tile_m,
                       min_tile_m_tokens={d: n for d, n in self.min_tile_m_tokens.items() if d in min_tile_m},
                       fp8_min_tile_m_tokens={d: n for d, n in self.fp8_min_tile_m_tokens.items()
                                              if d in fp8_min_tile_m}, **changes)

    def with_tile_m(self, m: int) -> TileTable:
        """This table with tile m ``m`` added (e.g. 128: the items of the wide launch's two consumer warpgroups,
        ``KernelVariant.wide_stages``); the build's warps are unchanged."""
        if m not in KERNEL_TILE_MS:
            raise ValueError(f"tile m {m}: one of {KERNEL_TILE_MS}")
        return replace(self, tile_ms=tuple(sorted({*self.tile_ms, m})))

    def least_tile_m(self, head_dim: int, fp8: bool = False) -> tuple[int, int | None]:
        """(the least tile m of ``head_dim``'s row blocks, the KV tokens from which a pack is long and its row blocks
        take the smallest tile that holds their rows again, None: no pack is): the table's ``min_tile_m`` and
        ``min_tile_m_tokens`` (FP8 pools: the fp8 entry's) where that build takes warpgroup MMAs, else (0, None)."""
        m = (self.fp8_min_tile_m if fp8 else self.min_tile_m).get(head_dim)
        if m is None or not self.wgmma(head_dim, fp8):
            return 0, None
        return m, (self.fp8_min_tile_m_tokens if fp8 else self.min_tile_m_tokens).get(head_dim)

    def with_min_tile_m(self, m: int) -> TileTable:
        """This table with only the tile m values of at least ``m`` rows (a sweep's variant, ``KernelTune.min_tile_m``):
        e.g. 64, every item on the 64-row path (warpgroup MMAs where the build has them), padding rows included. The
        least tile m holds for every head dim and pack: the table's own per-head-dim ones (``min_tile_m``,
        ``fp8_min_tile_m``) and their long packs' tokens are dropped, so 16 puts d256's private rows back on 16-row
        items."""
        tile_ms = tuple(t for t in self.tile_ms if t >= m)
        if not tile_ms:
            raise ValueError(f"no tile m of {self.tile_ms} holds {m} rows")
        return replace(self, tile_ms=tile_ms, min_tile_m={}, fp8_min_tile_m={}, min_tile_m_tokens={},
                       fp8_min_tile_m_tokens={})

    def with_min_tile_m_tokens(self, tokens: int) -> TileTable:
        """This table with every least tile m's long packs from ``tokens`` KV tokens on (a sweep's variant,
        ``KernelTune.min_tile_m_tokens``)."""
        if tokens < 1:
            raise ValueError(f"long packs' tokens must be positive, got {tokens}")
        return replace(self, min_tile_m_tokens=dict.fromkeys(self.min_tile_m, tokens),
                       fp8_min_tile_m_tokens=dict.fromkeys(self.fp8_min_tile_m, tokens))

    def with_max_tile_m(self, m: int) -> TileTable:
        """This table with only the tile m values of at most ``m`` rows (a sweep's variant, ``KernelTune.max_tile_m``):
        bigger packs are cut into row blocks of the largest left, e.g. 32: no 64-row items, so no warpgroup MMAs and,
        over FP8 pools, no tile converted CTA-wide. Least tile ms above ``m`` are dropped."""
        tile_ms = tuple(t for t in self.tile_ms if t <= m)
        if not tile_ms:
            raise ValueError(f"no tile m of {self.tile_ms} is at most {m} rows")
        return self._with_tile_ms(tile_ms)

    def t8(self, head_dim: int, fp8: bool = False) -> bool:
        """Whether this head dim's build (``fp8``: over FP8 pools) takes the KV tokens as the MMA's M in long items of
        at most 8 query rows (``KernelVariant.t8``; 16-bit pools never do)."""
        return fp8 and head_dim in self.fp8_t8_head_dims

    def wg_cols_for(self, head_dim: int, fp8: bool = False) -> int:
        """KV columns per wgmma S block of this head dim's build (``fp8``: over FP8 pools; 16 without wgmma)."""
        if not self.wgmma(head_dim, fp8):
            return 16
        return (self.fp8_wg_cols if fp8 else self.wg_cols).get(head_dim, 16)

    def kv_tile(self, head_dim: int, fp8: bool = False) -> int:
        """KV tokens per shared-memory stage for this head dim (``fp8``: for FP8 pools)."""
        if head_dim not in self.kv_tile_tokens:
            raise ValueError(f"unsupported head_dim {head_dim}: the {self.arch} tile table has {self.kv_tile_tokens}")
        if fp8 and head_dim in self.fp8_kv_tile_tokens:
            return self.fp8_kv_tile_tokens[head_dim]
        return self.kv_tile_tokens[head_dim]

    def stages_for(self, head_dim: int, fp8: bool = False) -> int:
        """Pipeline depth for this head dim (``fp8``: for FP8 pools)."""
        if fp8 and head_dim in self.fp8_stages:
            return self.fp8_stages[head_dim]
        return self.stages[head_dim]


T8_HEAD_DIMS = (128, 256)  # head dims of whole 128-byte FP8 rows: those the t8 build takes (KernelVariant.t8)
WG_COLS_CHOICES = (16, 32, 64)  # KV columns per wgmma S block the kernel builds (-DPAT_WG_COLS)


def wg_cols_fit(cols: int, kv_tile: int, stages: int, kv_fp8: bool = False) -> bool:
    """Whether a build of ``kv_tile``-token stages, ``stages`` deep, can run 64-row wgmma items over S blocks of
    ``cols`` KV columns: a divisor of the tile, or (16-bit pools) a multiple spanning G = cols / kv_tile stages of the
    kernel's ring layout, with G dividing the stages and at least G more stages to load into (STAGES >= 2G)."""
    if cols not in WG_COLS_CHOICES:
        return False
    if cols <= kv_tile:
        return kv_tile % cols == 0
    group = cols // kv_tile
    return cols % kv_tile == 0 and stages % group == 0 and stages >= 2 * group and not kv_fp8


@cache
def load_tile_table(arch: str = "sm90") -> TileTable:
    """The tile table for ``arch``; archs newer than the newest table use the newest."""
    tile_dir = data_dir("pat_sglang.configs", "configs").joinpath("tiles")
    tables = sorted(
        (p for p in tile_dir.iterdir() if p.name.startswith("sm") and p.name.endswith(".json")),
        key=lambda p: int(p.name[2:-5]),
    )
    if not tables:
        raise FileNotFoundError(f"no tile tables under {tile_dir}")
    want = int(arch.removeprefix("sm").rstrip("a"))
    usable = [p for p in tables if int(p.name[2:-5]) <= want]
    if not usable:
        raise ValueError(f"unsupported GPU arch {arch}: PAT kernels need sm_80 or newer")
    path = usable[-1]
    data = json.loads(path.read_text())
    tile_ms = tuple(int(m) for m in data["tile_m"])
    if list(tile_ms) != sorted(tile_ms) or not set(tile_ms) <= set(KERNEL_TILE_MS):
        raise ValueError(f"{path}: tile_m must be ascending and drawn from {KERNEL_TILE_MS}")
    def per_head_dim(key: str) -> dict[int, int]:
        return {int(d): int(n) for d, n in data[key].items()}

    kv_tiles, min_ctas, stages, warps = (
        per_head_dim(k) for k in ("kv_tile_tokens", "min_ctas_per_sm", "stages", "warps")
    )
    fp8 = data.get("fp8", {})
    fp8_tiles = {int(d): int(n) for d, n in fp8.get("kv_tile_tokens", {}).items()}
    fp8_stages = {int(d): int(n) for d, n in fp8.get("stages", {}).items()}
    if not set(fp8_tiles) | set(fp8_stages) <= set(kv_tiles):
        extra = sorted((set(fp8_tiles) | set(fp8_stages)) - set(kv_tiles))
        raise ValueError(f"{path}: fp8 entries for head dims the table lacks: {extra}")

    def fits_loader(n: int, d: int, kv_bytes: int) -> bool:
        # The loader splits a head row's 16-byte chunks between the threads of a row: d/8 of them for 16-bit pools,
        # d/16 for FP8 pools (kv_bytes = the pool's element size).
        threads = 32 * warps[d]
        return n % 16 == 0 and threads % n == 0 and (d * kv_bytes // 16) % (threads // n) == 0

    wgmma_dims = frozenset(int(d) for d in data.get("wgmma_head_dims", []))
    fp8_wgmma_dims = frozenset(int(d) for d in fp8.get("wgmma_head_dims", []))
    for dims in (wgmma_dims, fp8_wgmma_dims):
        if not dims <= set(kv_tiles):
            raise ValueError(f"{path}: wgmma_head_dims for head dims the table lacks: {sorted(dims - set(kv_tiles))}")
        if dims and (want < 90 or any(warps[d] != 4 for d in dims)):
            raise ValueError(f"{path}: wgmma_head_dims need sm_90 and 4 warps (one warpgroup per 64-row item)")
    for d, n in fp8_tiles.items():
        if not fits_loader(n, d, 1):
            raise ValueError(f"{path}: fp8 kv tile {n} for head_dim {d} does not fit the kernel's load layout")
    for d, n in kv_tiles.items():
        # the 16-bit entry serves FP8 pools too where no fp8 entry is given
        if not fits_loader(n, d, 2) or (d not in fp8_tiles and not fits_loader(n, d, 1)):
            raise ValueError(f"{path}: kv tile {n} for head_dim {d} does not fit the kernel's load layout")
        if tile_ms[-1] > 16 * warps[d]:
            need = tile_ms[-1] // 16
            raise ValueError(f"{path}: tile m {tile_ms[-1]} needs {need} warps; head_dim {d} has {warps[d]}")
    min_tile_m = {int(d): int(m) for d, m in data.get("min_tile_m", {}).items()}
    fp8_min_tile_m = {int(d): int(m) for d, m in fp8.get("min_tile_m", {}).items()}
    min_tile_m_tokens = {int(d): int(n) for d, n in data.get("min_tile_m_tokens", {}).items()}
    fp8_min_tile_m_tokens = {int(d): int(n) for d, n in fp8.get("min_tile_m_tokens", {}).items()}
    for least, tokens, where in ((min_tile_m, min_tile_m_tokens, ""), (fp8_min_tile_m, fp8_min_tile_m_tokens, "fp8 ")):
        for d, m in least.items():
            if d not in kv_tiles or m not in tile_ms or m > 16 * warps[d]:
                raise ValueError(f"{path}: {where}min_tile_m {m} for head_dim {d}: not one of the table's tile ms "
                                 f"{tile_ms} that head dim's {warps.get(d)} warps hold")
        for d, n in tokens.items():
            if d not in least or n < 1:
                raise ValueError(f"{path}: {where}min_tile_m_tokens {n} for head_dim {d}: a positive token count "
                                 f"for a head dim with a {where}min_tile_m")
    wg_cols = {int(d): int(n) for d, n in data.get("wg_cols", {}).items()}
    fp8_wg_cols = {int(d): int(n) for d, n in fp8.get("wg_cols", {}).items()}
    for cols, dims, fp8_pools in ((wg_cols, wgmma_dims, False), (fp8_wg_cols, fp8_wgmma_dims, True)):
        where = "fp8 " if fp8_pools else ""
        for d, n in cols.items():
            if d not in dims:
                raise ValueError(f"{path}: {where}wg_cols for head_dim {d}, which has no {where}wgmma build in this "
                                 "table")
            tile = fp8_tiles.get(d, kv_tiles[d]) if fp8_pools else kv_tiles[d]
            depth = fp8_stages.get(d, stages[d]) if fp8_pools else stages[d]
            if not wg_cols_fit(n, tile, depth, fp8_pools):
                raise ValueError(f"{path}: {where}wg_cols {n} for head_dim {d}: S blocks of {WG_COLS_CHOICES} KV "
                                 f"columns that fit its {tile}-token tiles x {depth} stages")
    fp8_t8_dims = frozenset(int(d) for d in fp8.get("t8_head_dims", []))
    if not fp8_t8_dims <= set(kv_tiles) & set(T8_HEAD_DIMS):
        raise ValueError(f"{path}: fp8 t8_head_dims {sorted(fp8_t8_dims)}: the t8 build takes head dims "
                         f"{T8_HEAD_DIMS} (whole 128-byte FP8 rows) of this table's {sorted(kv_tiles)}")
    return TileTable(
        tile_ms, kv_tiles, min_ctas, stages, warps, path.name[:-5], fp8_tiles, fp8_stages, wgmma_dims, fp8_wgmma_dims,
        min_tile_m, fp8_min_tile_m, min_tile_m_tokens, fp8_min_tile_m_tokens, wg_cols, fp8_wg_cols, fp8_t8_dims,
    )


def kv_pool_view(buffer: torch.Tensor, heads: HeadConfig) -> torch.Tensor:
    """The KV pool as the kernels and the reference read it: SGLang stores FP8 pools as uint8 (``store_dtype``;
    its ``get_key_buffer`` hands out float8 views), so a uint8 pool is viewed as the FP8 format ``heads``
    declares. Anything else is returned as is (and checked by the caller)."""
    if buffer.dtype == torch.uint8 and heads.kv_fp8:
        return buffer.view(heads.kv_dtype)
    return buffer


def check_supported(heads: HeadConfig) -> None:
    """Raise ``ValueError`` if the kernels cannot serve this head configuration."""
    if heads.head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"unsupported head_dim {heads.head_dim}: PAT kernels support {SUPPORTED_HEAD_DIMS}")
    if heads.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {heads.dtype}: PAT kernels support bfloat16 and float16")
    if heads.kv_dtype != heads.dtype and heads.kv_dtype not in FP8_KV_DTYPES:
        raise ValueError(
            f"unsupported KV dtype {heads.kv_dtype} with q dtype {heads.dtype}: PAT kernels read KV in the q dtype "
            f"or in FP8 ({', '.join(str(d) for d in FP8_KV_DTYPES)})"
        )
    if heads.group > MAX_GQA_GROUP:
        raise ValueError(f"unsupported GQA ratio {heads.group}: PAT kernels support 1 to {MAX_GQA_GROUP}")
