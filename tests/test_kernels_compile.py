"""CPU: every kernel variant the tile tables ask for (16-bit and FP8 KV pools) compiles with NVRTC to a cubin for
sm_80 and sm_90, with no spills to local memory, and the runtime's cache and error paths behave."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pat_sglang.config import load_tile_table
from pat_sglang.kernels import (
    CI_ARCHS,
    KernelBuildError,
    KernelTune,
    KernelVariant,
    all_variants,
    compile_variant,
)

VARIANTS = [v for arch in CI_ARCHS for v in all_variants(arch)]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.arch}-{v.dtype}-kv{v.kv_dtype}-d{v.head_dim}")
def test_variant_compiles_without_spills(variant: KernelVariant) -> None:
    built = compile_variant(variant, use_cache=False)
    assert built.cubin[:4] == b"\x7fELF", "NVRTC must hand back a cubin (ELF), not PTX"
    usage = built.resource_usage()
    assert set(usage) == {"pat_pack_forward", "pat_merge"}, built.log
    for kernel, report in usage.items():
        assert report.get("spill_store_bytes", 0) == 0, f"{kernel} spills: {report}"
        assert report.get("spill_load_bytes", 0) == 0, f"{kernel} spills: {report}"
        assert report.get("stack_bytes", 0) == 0, f"{kernel} has a stack frame: {report}"
        assert 0 < report["registers"] <= 255
    # the register cap the tile table promises holds (registers per thread for min_ctas_per_sm CTAs)
    cap = 65536 // (variant.threads * variant.min_ctas_per_sm)
    assert usage["pat_pack_forward"]["registers"] <= cap


@pytest.mark.parametrize("arch", CI_ARCHS)
def test_shared_memory_fits_the_arch(arch: str) -> None:
    limit = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}[arch]
    for v in all_variants(arch):
        assert v.smem_bytes * v.min_ctas_per_sm <= limit + 1024 * (v.min_ctas_per_sm - 1), v


def test_cache_reuses_cubin(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PAT_SGLANG_CACHE_DIR", str(tmp_path))
    v = all_variants("sm_90")[0]
    first = compile_variant(v)
    second = compile_variant(v)
    assert not first.from_cache and second.from_cache
    assert first.cubin == second.cubin
    assert second.resource_usage() == first.resource_usage()


def test_compile_error_shows_the_log(monkeypatch) -> None:
    import pat_sglang.kernels as k

    monkeypatch.setattr(k, "kernel_source", lambda: "this is not CUDA;")
    with pytest.raises(KernelBuildError, match="(?s)NVRTC failed.*error"):
        compile_variant(all_variants("sm_90")[0], use_cache=False)


def test_host_parameter_layout_is_checked_by_the_build(monkeypatch) -> None:
    """A ctypes struct that drifts from the kernel's parameter struct must fail the NVRTC build."""
    import pat_sglang.kernels as k

    good = k.host_layout_defines()
    bad = [d.replace("PAT_HOST_FWD_SIZE=", "PAT_HOST_FWD_SIZE=8+") for d in good]  # one field more
    monkeypatch.setattr(k, "host_layout_defines", lambda: bad)
    with pytest.raises(KernelBuildError, match="host layout"):
        compile_variant(all_variants("sm_90")[0], use_cache=False)


def test_unsupported_arch_and_head_dim() -> None:
    with pytest.raises(ValueError, match="sm_80 or newer"):
        load_tile_table("sm75")
    with pytest.raises(ValueError, match="head_dim"):
        load_tile_table("sm90").kv_tile(96)


def test_gqa_ratios_up_to_sixteen() -> None:
    """Ratios 1-16 pass the kernels' check (GLM-4.5-Air 12, Qwen3-235B-A22B 16); above, a clear refusal."""
    import torch

    from pat_sglang.config import MAX_GQA_GROUP, HeadConfig, check_supported

    assert MAX_GQA_GROUP == 16
    for group in (1, 3, 7, 8, 12, 16):
        check_supported(HeadConfig(group, 1, 128, torch.bfloat16))
    with pytest.raises(ValueError, match="unsupported GQA ratio 32"):
        check_supported(HeadConfig(32, 1, 128, torch.bfloat16))


def test_variants_cover_every_kv_format() -> None:
    """CI builds the FP8 KV variants too: each (q dtype, KV format, head dim) once per arch."""
    from pat_sglang.config import SUPPORTED_HEAD_DIMS
    from pat_sglang.kernels import DTYPE_NAMES, FP8_KV_FORMATS

    for arch in CI_ARCHS:
        got = {(v.dtype, v.kv_dtype, v.head_dim) for v in all_variants(arch)}
        kv_names = [name for name, _ in FP8_KV_FORMATS.values()]
        want = {(dt, kv or dt, d) for dt in DTYPE_NAMES.values() for kv in ["", *kv_names] for d in SUPPORTED_HEAD_DIMS}
        assert got == want


def test_fp8_variant_options_and_shared_memory() -> None:
    """An FP8 variant names its format for the kernel; its tile (twice the tokens) holds the bytes of a 16-bit tile,
    and its stages add one converted 16-bit tile."""
    bf16 = KernelVariant.from_table("sm_90", "bf16", 128)
    fp8 = KernelVariant.from_table("sm_90", "bf16", 128, "fp8_e4m3")
    assert "-DPAT_KV_FP8=__NV_E4M3" in fp8.options("/inc")
    assert not any(o.startswith("-DPAT_KV_FP8") for o in bf16.options("/inc"))
    assert "-DPAT_KV_FP8=__NV_E5M2" in KernelVariant.from_table("sm_90", "fp16", 64, "fp8_e5m2").options("/inc")
    tile = fp8.kv_tile * fp8.head_dim
    q_bytes = fp8.max_tile_m * fp8.head_dim * 2
    m = fp8.max_tile_m
    assert fp8.smem_bytes == max(q_bytes + 2 * fp8.stages * tile + 2 * tile * 2, (m * fp8.head_dim + 2 * m) * 4)
    assert bf16.smem_bytes - q_bytes == 2 * bf16.stages * bf16.kv_tile * bf16.head_dim * 2
    assert tile == bf16.kv_tile * bf16.head_dim * 2  # one FP8 tile: the bytes of a 16-bit one
    with pytest.raises(ValueError, match="KV dtype"):
        KernelVariant("sm_90", "bf16", 128, 16, 4, kv_dtype="int8")


def test_kernel_source_is_the_imported_checkouts() -> None:
    """The kernels and tile tables come from the checkout whose pat_sglang is imported, never from another checkout
    an editable install points at (a worktree on PYTHONPATH would otherwise build the main tree's kernel)."""
    import pat_sglang
    from pat_sglang.config import data_dir
    from pat_sglang.kernels import kernel_source

    root = Path(pat_sglang.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("pat_sglang is an installed package here, not a checkout")
    assert Path(str(data_dir("pat_sglang.kernels_src", "kernels"))).resolve() == root / "kernels"
    assert Path(str(data_dir("pat_sglang.configs", "configs"))).resolve() == root / "configs"
    assert kernel_source() == (root / "kernels" / "pat_decode.cu").read_text()


def test_fp8_pools_take_the_tables_fp8_tiles() -> None:
    """sm_90, head dim 128: FP8 pools stream 32-token tiles three deep (the bytes of a 16-bit 16-token tile), 16-bit
    pools keep theirs; d256's FP8 entry takes 32-token tiles three deep on wgmma; a table without fp8 entries (sm_80)
    serves FP8 pools with the 16-bit ones."""
    table = load_tile_table("sm90")
    sm80 = load_tile_table("sm80")
    for kv in ("fp8_e4m3", "fp8_e5m2"):
        v = KernelVariant.from_table("sm_90", "bf16", 128, kv)
        assert (v.kv_tile, v.stages) == (table.fp8_kv_tile_tokens[128], table.fp8_stages[128]) == (32, 3)
        assert f"-DKV_TILE={v.kv_tile}" in v.options("inc")
        v256 = KernelVariant.from_table("sm_90", "bf16", 256, kv)
        assert (v256.kv_tile, v256.stages, v256.wgmma, v256.wg_cols) == (32, 3, True, 32)
        assert table.kv_tile(256) == 16
        v80 = KernelVariant.from_table("sm_80", "bf16", 256, kv)
        assert (v80.kv_tile, v80.stages) == (sm80.kv_tile(256), sm80.stages[256])
        # d64's 16-token 16-bit tile has 8 chunks per FP8 row for 8 threads of a row: its fp8 entry takes 32 tokens
        assert (KernelVariant.from_table("sm_90", "bf16", 64, kv).kv_tile, table.kv_tile(64)) == (32, 16)
    v16 = KernelVariant.from_table("sm_90", "bf16", 128)
    assert (v16.kv_tile, v16.stages) == (table.kv_tile(128), table.stages[128]) == (16, 4)


def test_tile_table_refuses_a_16bit_tile_fp8_pools_cannot_load(tmp_path, monkeypatch) -> None:
    """A 16-bit entry serves FP8 pools where no fp8 entry is given, so it must fit their loader too: d64's 16-token tile
    (8 threads per row, 4 FP8 chunks) is refused without d64's fp8 entry."""
    fp8_d128_only = {"kv_tile_tokens": {"128": 32}, "stages": {"128": 2}}
    _assert_table_refused(tmp_path, monkeypatch, "sm90", {"fp8": fp8_d128_only}, "kv tile 16 for head_dim 64")


def _assert_table_refused(tmp_path: Path, monkeypatch, arch: str, edit: dict, match: str) -> None:
    """Loading the shipped tile table of ``arch`` with the top-level entries of ``edit`` replaced raises a
    ``ValueError`` matching ``match``."""
    import json

    import pat_sglang.config as config

    src = Path(config.__file__).resolve().parent.parent.joinpath(f"configs/tiles/{arch}.json")
    table = {**json.loads(src.read_text()), **edit}
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / f"{arch}.json").write_text(json.dumps(table))
    monkeypatch.setattr(config, "data_dir", lambda *_: tmp_path)
    config.load_tile_table.cache_clear()
    try:
        with pytest.raises(ValueError, match=match):
            config.load_tile_table(arch)
    finally:
        config.load_tile_table.cache_clear()


@pytest.mark.parametrize("bad", [{"kv_tile_tokens": {"128": 24}}, {"stages": {"96": 2}}])
def test_tile_table_refuses_bad_fp8_entries(tmp_path, monkeypatch, bad: dict) -> None:
    _assert_table_refused(tmp_path, monkeypatch, "sm90", {"fp8": bad}, "fp8")


@pytest.mark.parametrize(
    ("arch", "edit"),
    [
        ("sm90", {"wgmma_head_dims": [96]}),
        ("sm90", {"fp8": {"wgmma_head_dims": [512]}}),
        ("sm80", {"wgmma_head_dims": [128]}),
    ],
)
def test_tile_table_refuses_bad_wgmma_entries(tmp_path, monkeypatch, arch: str, edit: dict) -> None:
    """wgmma head dims the table lacks, or on a table for a GPU without warpgroup MMAs, fail at load."""
    _assert_table_refused(tmp_path, monkeypatch, arch, edit, "wgmma_head_dims")


@pytest.mark.parametrize(
    "edit",
    [
        {"wg_cols": {"128": 48}},  # not a block width the kernel builds
        {"wg_cols": {"128": 64}},  # 4 stages of 16 tokens: nothing left to load into while a block computes
        {"wg_cols": {"96": 32}},  # a head dim the table lacks
        {"wg_cols": {"128": 32}, "wgmma_head_dims": [64, 256]},  # no wgmma build at that head dim
    ],
)
def test_tile_table_refuses_bad_wg_cols(tmp_path, monkeypatch, edit: dict) -> None:
    """A ``wg_cols`` entry the head dim's wgmma build cannot run fails at load, not in NVRTC."""
    _assert_table_refused(tmp_path, monkeypatch, "sm90", edit, "wg_cols")


_FP8_TILES = {"kv_tile_tokens": {"64": 32, "128": 32, "256": 32}, "stages": {"64": 4, "128": 2, "256": 3}}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"min_tile_m": {"256": 48}}, "min_tile_m 48"),  # not one of the table's tile ms
        ({"min_tile_m": {"96": 64}}, "min_tile_m 64 for head_dim 96"),  # a head dim the table lacks
        ({"fp8": {**_FP8_TILES, "min_tile_m": {"256": 128}}}, "fp8 min_tile_m 128"),  # more rows than 4 warps hold
        ({"min_tile_m_tokens": {"128": 1024}}, "min_tile_m_tokens 1024 for head_dim 128"),  # d128 has no least m
        ({"min_tile_m_tokens": {"256": 0}}, "min_tile_m_tokens 0"),  # not a positive count
        ({"fp8": {**_FP8_TILES, "min_tile_m_tokens": {"256": 512}}}, "fp8 min_tile_m_tokens 512"),  # none for FP8
    ],
)
def test_tile_table_refuses_bad_min_tile_m(tmp_path, monkeypatch, edit: dict, match: str) -> None:
    """A least tile m (16-bit pools, or the fp8 entry's for FP8 pools) the head dim's CTAs cannot hold fails at load,
    as does a long packs' token count that is not positive or names a head dim without a least tile m."""
    _assert_table_refused(tmp_path, monkeypatch, "sm90", edit, match)


def test_fp8_min_tile_m_is_the_fp8_entrys(tmp_path, monkeypatch) -> None:
    """FP8 pools take the fp8 entry's least tile m, not the 16-bit one: a table that gives FP8 d128 a least tile m of
    64 plans FP8 d128 items on 64 rows and leaves 16-bit d128 on 16-row items; FP8 d256, absent from the entry, keeps
    16-row items though 16-bit d256 pads to 64."""
    import json

    import pat_sglang.config as config

    src = Path(config.__file__).resolve().parent.parent.joinpath("configs/tiles/sm90.json")
    data = json.loads(src.read_text())
    data["fp8"] = {**data["fp8"], "min_tile_m": {"128": 64}}
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "sm90.json").write_text(json.dumps(data))
    monkeypatch.setattr(config, "data_dir", lambda *_: tmp_path)
    config.load_tile_table.cache_clear()
    try:
        table = config.load_tile_table("sm90")
        assert table.least_tile_m(128, fp8=True) == (64, None) and table.least_tile_m(128) == (0, None)
        assert table.least_tile_m(256, fp8=True) == (0, None) and table.least_tile_m(256)[0] == 64
    finally:
        config.load_tile_table.cache_clear()


_FP8_D128 = {"kv_tile_tokens": {"64": 32, "128": 32}, "stages": {"64": 4, "128": 2}, "wgmma_head_dims": [128]}


@pytest.mark.parametrize(
    "fp8",
    [
        {**_FP8_D128, "wg_cols": {"128": 64}},  # wider than the 32-token FP8 tile: FP8 stages have no ring layout
        {**_FP8_D128, "wg_cols": {"64": 32}},  # no FP8 wgmma build at d64
        {**_FP8_D128, "wg_cols": {"128": 48}},  # not a block width the kernel builds
    ],
)
def test_tile_table_refuses_bad_fp8_wg_cols(tmp_path, monkeypatch, fp8: dict) -> None:
    """The fp8 entry's ``wg_cols`` is checked against the FP8 build's own tiles and wgmma head dims."""
    _assert_table_refused(tmp_path, monkeypatch, "sm90", {"fp8": fp8}, "fp8 wg_cols")


def test_fp8_wgmma_build_takes_the_fp8_entrys_wg_cols() -> None:
    """The shipped table: FP8 d128 builds 64-row items on wgmma over one 32-column block per 32-token FP8 tile, FP8
    d64 over 16-column blocks (32 spill under fp16 queries); the 16-bit build of the same head dim keeps its own
    entry; sm_80 stays on mma.sync."""
    table = load_tile_table("sm90")
    for d, cols in ((64, 16), (128, 32)):
        fp8 = KernelVariant.from_table("sm_90", "fp16", d, "fp8_e4m3")
        assert fp8.wgmma and fp8.kv_tile == 32 and fp8.wg_cols == table.wg_cols_for(d, fp8=True) == cols
    assert KernelVariant.from_table("sm_90", "bf16", 128).wg_cols == table.wg_cols_for(128) == 32
    assert KernelVariant.from_table("sm_90", "bf16", 64).wg_cols == table.wg_cols_for(64) == 16
    sm80 = KernelVariant.from_table("sm_80", "bf16", 64, "fp8_e5m2")
    assert not sm80.wgmma and sm80.wg_cols == 16


@pytest.mark.parametrize("slack", [-1, 8])
@pytest.mark.parametrize("arch", CI_ARCHS)
def test_rescale_slack_variants_compile_without_spills(arch: str, slack: int) -> None:
    """The sweep's rescale variants (every tile; an FA4-style slack) build for each arch at d128, no spills, within
    the table's register cap."""
    base = next(v for v in all_variants(arch) if v.head_dim == 128 and v.dtype == "bf16" and not v.kv_fp8)
    variant = dataclasses.replace(base, rescale_slack_log2=slack)
    built = compile_variant(variant, use_cache=False)
    usage = built.resource_usage()["pat_pack_forward"]
    assert usage.get("spill_store_bytes", 0) == 0 and usage.get("spill_load_bytes", 0) == 0, usage
    assert usage["registers"] <= 65536 // (variant.threads * variant.min_ctas_per_sm)
    assert f"-DPAT_RESCALE_SLACK_LOG2={slack}" in variant.options("x")


def test_layout_check_refuses_what_the_loader_cannot_address() -> None:
    """The host's layout check (``kernels._check_layout``, run before a plan's first launch with new tensors) refuses
    a pool whose slot stride reaches 2 GiB (the loader's 32 x 32 -> 64-bit slot offset) and passes SGLang's ordinary
    layout."""
    import torch

    from pat_sglang.config import HeadConfig
    from pat_sglang.kernels import _check_layout

    heads = HeadConfig(8, 2, 128, torch.bfloat16)
    q = torch.zeros(3, 8, 128, dtype=torch.bfloat16)
    pool = torch.zeros(16, 2, 128, dtype=torch.bfloat16)
    _check_layout(heads, q, pool, pool, q)
    # one slot whose row stride is 2^30 elements (2 GiB of bf16): only its first row exists
    huge = torch.zeros(2 * 128, dtype=torch.bfloat16).as_strided((1, 2, 128), (2**30, 128, 1))
    with pytest.raises(ValueError, match="2 GiB"):
        _check_layout(heads, q, huge, huge, q)


def test_a_variant_builds_another_kernel_source(tmp_path: Path) -> None:
    """``KernelVariant.source`` (``tile_sweep.py`` variants ``...@FILE``) compiles that file with the same options:
    a copy of ours builds to the same resource usage, and a source that fails to build is reported as ours would be."""
    from pat_sglang.kernels import kernel_source

    base = next(v for v in all_variants("sm_90") if v.head_dim == 128 and v.dtype == "bf16" and not v.kv_fp8)
    copy = tmp_path / "copy.cu"
    copy.write_text(kernel_source())
    ours = compile_variant(base, use_cache=False).resource_usage()
    theirs = compile_variant(dataclasses.replace(base, source=str(copy)), use_cache=False).resource_usage()
    assert theirs == ours
    broken = tmp_path / "broken.cu"
    broken.write_text(kernel_source() + "\n#error this source is the one built\n")
    with pytest.raises(KernelBuildError, match="this source is the one built"):
        compile_variant(dataclasses.replace(base, source=str(broken)), use_cache=False)


def _nvdisasm() -> str:
    """nvdisasm: on the PATH, or the copy in triton's wheel (installed with torch)."""
    import shutil

    import triton

    found = shutil.which("nvdisasm") or str(Path(triton.__file__).parent / "backends/nvidia/bin/nvdisasm")
    assert Path(found).is_file(), "nvdisasm is needed to read the cubin's SASS"
    return found


def _forward_sass(cubin: bytes, tmp_path: Path) -> str:
    """The SASS of pat_pack_forward in ``cubin``."""
    import subprocess

    path = tmp_path / "forward.cubin"
    path.write_bytes(cubin)
    sass = subprocess.run([_nvdisasm(), "-c", str(path)], capture_output=True, text=True, check=True).stdout
    start = sass.index(".text.pat_pack_forward:")
    end = sass.find(".text.", start + 1)
    return sass[start : end if end > 0 else len(sass)]


WGMMA_VARIANTS = [dataclasses.replace(v, wgmma=True) for v in all_variants("sm_90")]


@pytest.mark.parametrize("variant", WGMMA_VARIANTS, ids=lambda v: f"{v.dtype}-kv{v.kv_dtype}-d{v.head_dim}")
def test_wgmma_variants_build_on_warpgroup_mmas(variant: KernelVariant, tmp_path: Path) -> None:
    """Every sm_90 table variant built with warpgroup MMAs (64-row items) targets sm_90a, has no spills within the
    table's register cap, and its SASS runs the 64-row tile on HGMMA: per S block of ``wg_cols`` KV columns (the
    table's, 16 where it gives none) HEAD_DIM / 16 m64n{wg_cols}k16 for S and wg_cols / 16 PV MMAs per 128 output
    columns (m64n64 at head dim 64), V read transposed; the generic-to-async proxy fence before the tile barrier; the
    16- and 32-row items still on mma.sync (HMMA)."""
    opts = variant.options("x")
    assert "--gpu-architecture=sm_90a" in opts and "-DPAT_WGMMA" in opts
    built = compile_variant(variant, use_cache=False)
    usage = built.resource_usage()["pat_pack_forward"]
    assert usage.get("spill_store_bytes", 0) == 0 and usage.get("spill_load_bytes", 0) == 0, usage
    assert usage.get("stack_bytes", 0) == 0, usage
    assert usage["registers"] <= 65536 // (variant.threads * variant.min_ctas_per_sm)
    sass = _forward_sass(built.cubin, tmp_path)
    d = variant.head_dim
    cols = variant.wg_cols
    assert cols == load_tile_table("sm90").wg_cols_for(d, variant.kv_fp8)
    s_mmas = re.findall(rf"HGMMA\.64x{cols}x16\.F32\b", sass)
    pv_n = 64 if d == 64 else 128
    pv_mmas = re.findall(rf"HGMMA\.64x{pv_n}x16\.F32\b.*tnspB", sass)
    assert s_mmas and len(s_mmas) % (d // 16) == 0, f"{len(s_mmas)} S MMAs for head dim {d}"
    blocks = len(s_mmas) // (d // 16)  # the S blocks the compiler unrolled
    assert len(pv_mmas) == blocks * (cols // 16) * max(1, d // 128), f"{len(pv_mmas)} PV MMAs for {blocks} blocks"
    assert "FENCE.VIEW.ASYNC.S" in sass
    assert "HMMA" in sass.replace("HGMMA", ""), "16- and 32-row items stay on mma.sync"


@pytest.mark.parametrize(("head_dim", "kv_tile", "stages", "ctas", "cols"), [
    (64, 32, 4, 4, 32), (128, 32, 3, 3, 32), (128, 64, 2, 2, 64), (128, 64, 2, 2, 32), (256, 32, 2, 2, 32),
    (64, 16, 4, 6, 32), (128, 16, 4, 4, 32), (128, 16, 6, 3, 32), (128, 16, 8, 2, 64), (256, 16, 4, 2, 32),
])
def test_wide_wgmma_blocks_build(head_dim: int, kv_tile: int, stages: int, ctas: int, cols: int,
                                 tmp_path: Path) -> None:
    """``wg_cols`` 32 / 64 (bench/tile_sweep.py ``/nN``): the 64-row tile's S is HEAD_DIM / 16 m64n{cols}k16 MMAs per
    block and its P V cols / 16 chained MMAs per 128 output columns, with no spills within the register cap; a
    width wider than the KV tile spans several stages of the ring layout (16-bit pools, a tile count that divides the
    stages at most twice); any other width, or one without wgmma, is refused."""
    variant = KernelVariant("sm_90", "bf16", head_dim, kv_tile, stages, ctas, wgmma=True, wg_cols=cols)
    assert f"-DPAT_WG_COLS={cols}" in variant.options("x")
    built = compile_variant(variant, use_cache=False)
    usage = built.resource_usage()["pat_pack_forward"]
    assert usage.get("spill_store_bytes", 0) == 0 and usage.get("spill_load_bytes", 0) == 0, usage
    assert usage["registers"] <= 65536 // (variant.threads * ctas)
    sass = _forward_sass(built.cubin, tmp_path)
    s_mmas = len(re.findall(rf"HGMMA\.64x{cols}x16\.F32\b", sass))
    pv_n = 64 if head_dim == 64 else 128
    pv_mmas = len(re.findall(rf"HGMMA\.64x{pv_n}x16\.F32\b.*tnspB", sass))
    assert s_mmas and s_mmas % (head_dim // 16) == 0, f"{s_mmas} S MMAs"
    blocks = s_mmas // (head_dim // 16)
    assert pv_mmas == blocks * (cols // 16) * max(1, head_dim // 128), f"{pv_mmas} PV MMAs for {blocks} blocks"
    assert not re.search(r"HGMMA\.64x16x16", sass), "no 16-column S blocks left"
    with pytest.raises(ValueError, match="divisor"):
        KernelVariant("sm_90", "bf16", head_dim, 16, 3, 2, wgmma=True, wg_cols=32)  # 2 tiles do not divide 3 stages
    with pytest.raises(ValueError, match="divisor"):
        KernelVariant("sm_90", "bf16", head_dim, 16, 2, 2, wgmma=True, wg_cols=32)  # nothing left in flight
    with pytest.raises(ValueError, match="divisor"):
        KernelVariant("sm_90", "bf16", head_dim, 16, 4, 2, kv_dtype="fp8_e4m3", wgmma=True, wg_cols=32)
    with pytest.raises(ValueError, match="needs wgmma"):
        KernelVariant("sm_90", "bf16", head_dim, kv_tile, stages, ctas, wg_cols=cols)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_wide_wgmma_blocks_build_over_fp8_pools(head_dim: int, tmp_path: Path) -> None:
    """FP8 pools' 32-token tiles with 32-column wgmma S blocks (one block per converted tile): no spills, and the
    64-row tile's S on m64n32k16."""
    table = load_tile_table("sm90")
    kv_tile, stages = table.kv_tile(head_dim, fp8=True), table.stages_for(head_dim, fp8=True)
    variant = KernelVariant("sm_90", "bf16", head_dim, kv_tile, stages, table.min_ctas_per_sm[head_dim],
                            kv_dtype="fp8_e4m3", wgmma=True, wg_cols=32)
    built = compile_variant(variant, use_cache=False)
    usage = built.resource_usage()["pat_pack_forward"]
    assert usage.get("spill_store_bytes", 0) == 0 and usage.get("spill_load_bytes", 0) == 0, usage
    sass = _forward_sass(built.cubin, tmp_path)
    assert re.search(r"HGMMA\.64x32x16\.F32", sass) and not re.search(r"HGMMA\.64x16x16", sass)


def test_plain_builds_have_no_warpgroup_mmas(tmp_path: Path, monkeypatch) -> None:
    """Without wgmma the build targets plain sm_90 and its SASS has no HGMMA; the table variants take wgmma exactly
    where the sm_90 table lists the head dim for their KV format (every head dim for both formats since 2026-12-03:
    docs/perf/kernels/2026-12-03-h200-fp8-d64-wgmma/), and sm_80's never."""
    from pat_sglang.kernels import WGMMA_ENV

    monkeypatch.delenv(WGMMA_ENV, raising=False)
    table = load_tile_table("sm90")
    picked = {(v.head_dim, v.kv_fp8): v.wgmma for v in all_variants("sm_90")}
    assert picked == {(d, fp8): table.wgmma(d, fp8) for d in (64, 128, 256) for fp8 in (False, True)}
    assert not any(v.wgmma for v in all_variants("sm_80"))
    base = next(v for v in all_variants("sm_90") if v.head_dim == 128 and v.dtype == "bf16" and not v.kv_fp8)
    plain = base.without_wgmma()
    assert "--gpu-architecture=sm_90" in plain.options("x")
    assert "HGMMA" not in _forward_sass(compile_variant(plain, use_cache=False).cubin, tmp_path)


def test_wgmma_needs_sm90_and_one_warpgroup() -> None:
    base = next(v for v in all_variants("sm_90") if v.head_dim == 128 and v.dtype == "bf16" and not v.kv_fp8)
    with pytest.raises(ValueError, match="sm_90"):
        dataclasses.replace(base, arch="sm_80", wgmma=True)
    with pytest.raises(ValueError, match="4 warps"):
        dataclasses.replace(base, warps=8, wgmma=True)


def test_wgmma_switch(monkeypatch) -> None:
    """``PAT_SGLANG_WGMMA=1`` turns warpgroup MMAs on for the table's sm_90 variants (never sm_80's), ``0`` off, unset
    leaves the table's choice; a sweep's ``KernelTune.wgmma`` overrides either way; another value is refused."""
    import torch

    from pat_sglang.config import HeadConfig
    from pat_sglang.kernels import WGMMA_ENV

    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    heads_fp8 = HeadConfig(32, 8, 64, torch.bfloat16, torch.float8_e4m3fn)
    monkeypatch.delenv(WGMMA_ENV, raising=False)
    assert KernelVariant.for_config(heads, "sm_90").wgmma  # the table's choice at d128
    assert KernelVariant.for_config(heads_fp8, "sm_90").wgmma == load_tile_table("sm90").wgmma(64, fp8=True)
    assert not KernelVariant.for_config(heads_fp8, "sm_90", KernelTune(wgmma=False)).wgmma
    assert KernelVariant.for_config(heads_fp8, "sm_90", KernelTune(wgmma=True)).wgmma
    # a tune of fewer warps than a warpgroup keeps the table's choice only where it can build it: mma.sync, no refusal
    assert not KernelVariant.for_config(heads, "sm_90", KernelTune(warps=2)).wgmma
    with pytest.raises(ValueError, match="4 warps"):
        KernelVariant.for_config(heads, "sm_90", KernelTune(warps=2, wgmma=True))
    # a newer GPU runs sm_90's table (the newest), but wgmma is sm_90a's alone: mma.sync there, no refusal
    assert not KernelVariant.for_config(heads, "sm_100").wgmma and not KernelVariant.for_config(heads, "sm_120").wgmma
    monkeypatch.setenv(WGMMA_ENV, "0")
    assert not KernelVariant.for_config(heads, "sm_90").wgmma and not KernelVariant.for_config(heads_fp8, "sm_90").wgmma
    monkeypatch.setenv(WGMMA_ENV, "1")
    assert KernelVariant.for_config(heads_fp8, "sm_90").wgmma
    assert KernelVariant.for_config(heads, "sm_90").wgmma
    assert not KernelVariant.for_config(heads, "sm_80").wgmma and not KernelVariant.for_config(heads, "sm_100").wgmma
    assert not KernelVariant.for_config(heads, "sm_90", KernelTune(wgmma=False)).wgmma
    assert KernelVariant.for_config(heads, "sm_90", KernelTune(kv_tile=32)).wgmma  # a tune that leaves it alone
    monkeypatch.setenv(WGMMA_ENV, "yes")
    with pytest.raises(ValueError, match=WGMMA_ENV):
        KernelVariant.for_config(heads, "sm_90")


def test_a_failed_wgmma_build_falls_back_to_mma_sync(monkeypatch, caplog) -> None:
    """Where the table's wgmma build cannot be made (an NVRTC without sm_90a, say), ``kernels_for`` serves the
    mma.sync build with one warning; an explicit ``KernelTune(wgmma=True)`` (a sweep) gets the error instead. The
    device side is stubbed: only the choice of build is under test."""
    import logging

    import torch

    import pat_sglang.kernels as k
    from pat_sglang.config import HeadConfig

    class Loaded:
        def __init__(self, compiled) -> None:
            self.variant = compiled.variant

        def configure(self, index: int) -> None:
            pass

    def compile_stub(variant, use_cache=True):
        if variant.wgmma:
            raise k.KernelBuildError("NVRTC failed to compile: sm_90a is not a supported architecture\n...")
        return k.CompiledVariant(variant, b"\x7fELF", "", False)

    monkeypatch.delenv(k.WGMMA_ENV, raising=False)
    monkeypatch.setattr(k, "device_arch", lambda device: "sm_90")
    monkeypatch.setattr(k, "_ensure_context", lambda index: None)
    monkeypatch.setattr(k, "_LoadedKernels", Loaded)
    monkeypatch.setattr(k, "compile_variant", compile_stub)
    monkeypatch.setattr(k, "_loaded", {})
    heads = HeadConfig(32, 8, 128, torch.bfloat16)
    device = torch.device("cuda", 0)
    with caplog.at_level(logging.WARNING, logger="pat_sglang.kernels"):
        loaded = k.kernels_for(heads, device)
        again = k.kernels_for(heads, device)
    assert not loaded.variant.wgmma and again is loaded
    assert [r.message for r in caplog.records if "mma.sync build" in r.message] != []
    assert len([r for r in caplog.records if "warpgroup-MMA" in r.message]) == 1  # once: the choice is cached
    with pytest.raises(k.KernelBuildError, match="sm_90a"):
        k.kernels_for(heads, device, k.KernelTune(wgmma=True, kv_tile=32))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_fp8_pools_run_fp16_mmas_whatever_the_query_dtype(dtype: str, tmp_path: Path) -> None:
    """FP8 pairs convert to fp16 in one instruction, so FP8 builds run their MMAs in fp16 for bf16 queries too
    (pat_decode.cu's element types): the SASS has the one-instruction conversion, no fp16 -> fp32 step on the way
    to bf16 and no bf16 MMA, while the outputs keep the query dtype."""
    variant = next(v for v in all_variants("sm_90") if v.kv_dtype == "fp8_e4m3" and v.dtype == dtype
                   and v.head_dim == 128)
    sass = _forward_sass(compile_variant(variant, use_cache=False).cubin, tmp_path)
    assert "F2FP.F16.E4M3.UNPACK_B" in sass
    assert "HADD2.F32" not in sass, "FP8 values widened to fp32 on the way to bf16"
    mmas = re.findall(r"\bH(?:G)?MMA\.\S+", sass)
    assert mmas and not any("BF16" in m for m in mmas), sorted(set(mmas))
    # outputs and partials stay in the query dtype: bf16 pairs packed from fp32 only where that is bf16
    assert ("F2FP.BF16.F32.PACK_AB" in sass) == (dtype == "bf16")


@pytest.mark.parametrize(("num_q_heads", "head_dim"), [(64, 128), (32, 256)])
def test_timing_builds_over_fp8_pools_compile(num_q_heads: int, head_dim: int) -> None:
    """``bench/item_costs.py --kv-dtype fp8_e4m3`` stamps FP8 CTAs with a ``-DPAT_TIMING`` build of the table's FP8
    variant (warpgroup MMAs on sm_90): it builds, with no spills."""
    import torch

    from pat_sglang.config import HeadConfig

    variant = KernelVariant.for_config(HeadConfig(num_q_heads, 8, head_dim, torch.bfloat16, torch.float8_e4m3fn),
                                       "sm_90")
    timed = dataclasses.replace(variant, timing=True)
    assert "-DPAT_TIMING" in timed.options("include") and "-DPAT_TIMING" not in variant.options("include")
    built = compile_variant(timed, use_cache=False)
    assert built.cubin[:4] == b"\x7fELF"
    report = built.resource_usage()["pat_pack_forward"]
    assert report.get("spill_store_bytes", 0) == 0 and report.get("stack_bytes", 0) == 0, report


def test_shared_memory_check_reads_the_kernels_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_LoadedKernels._set_smem`` (run at every kernel load on the GPU) compares the host's shared-memory formula
    with the kernel's own constant, read by ``library_int32``: through a stand-in driver, an equal value passes and
    sets the attribute, another is refused naming both."""
    import ctypes
    import types

    import numpy as np

    from pat_sglang import kernels

    stored = {b"pat_forward_smem_bytes": 49152}
    calls = []

    def get_global(library, symbol):
        return 0, stored[symbol], 4  # (CUresult, device pointer: here the value itself, size)

    def dtoh(dst, ptr, size):
        ctypes.memmove(dst, np.array([ptr], dtype=np.int32).ctypes.data, size)
        return (0,)

    fake = types.SimpleNamespace(
        CUfunction_attribute=types.SimpleNamespace(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES="max-smem"),
        cuKernelSetAttribute=lambda attr, n, kernel, dev: calls.append((attr, n)) or (0,),
        cuLibraryGetGlobal=get_global,
        cuMemcpyDtoH=dtoh,
    )
    monkeypatch.setattr(kernels, "_driver", lambda: fake)
    assert kernels.library_int32("lib", b"pat_forward_smem_bytes") == 49152
    loaded = object.__new__(kernels._LoadedKernels)
    loaded.library = "lib"
    loaded._set_smem(0, "kernel", b"pat_forward_smem_bytes", 49152)
    assert calls == [("max-smem", 49152)]
    with pytest.raises(RuntimeError, match="shared-memory size mismatch .*kernel 49152, host 40960"):
        loaded._set_smem(0, "kernel", b"pat_forward_smem_bytes", 40960)


@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize(("dtype", "kv"), [("bf16", "fp8_e4m3"), ("fp16", "fp8_e5m2")])
def test_t8_builds_compile_without_spills(head_dim: int, dtype: str, kv: str, tmp_path: Path) -> None:
    """The sm_90 table's FP8 builds at d128 and d256 take the ``t8`` layout (long items of <= 8 query rows with the KV
    tokens as the MMA's M): no spills within the table's register cap, the same shared memory as the build without
    it, and more mma.sync instructions (its own S^T and O^T block beside the 16-row one); builds it cannot take are
    refused."""
    t8 = KernelVariant.from_table("sm_90", dtype, head_dim, kv)
    assert t8.t8 and load_tile_table("sm90").t8(head_dim, fp8=True)
    base = dataclasses.replace(t8, t8=False)
    assert "-DPAT_T8" in t8.options("x") and "-DPAT_T8" not in base.options("x")
    assert t8.smem_bytes == base.smem_bytes
    built = compile_variant(t8, use_cache=False)
    usage = built.resource_usage()["pat_pack_forward"]
    assert usage.get("spill_store_bytes", 0) == 0 and usage.get("stack_bytes", 0) == 0, usage
    assert usage["registers"] <= 65536 // (base.threads * base.min_ctas_per_sm)
    hmma = _forward_sass(built.cubin, tmp_path).count("HMMA.16816")
    assert hmma > _forward_sass(compile_variant(base, use_cache=False).cubin, tmp_path).count("HMMA.16816")
    for bad in (KernelVariant.from_table("sm_90", dtype, head_dim), KernelVariant.from_table("sm_90", dtype, 64, kv)):
        assert not bad.t8
        with pytest.raises(ValueError, match="t8 items"):
            dataclasses.replace(bad, t8=True)
    assert not KernelVariant.from_table("sm_80", dtype, head_dim, kv).t8  # sm_80's table: never timed there


@pytest.mark.parametrize("dims", [[64], [96], [128, 512]])
def test_tile_table_refuses_bad_t8_head_dims(tmp_path, monkeypatch, dims: list[int]) -> None:
    """The fp8 entry's ``t8_head_dims`` must be head dims of whole 128-byte FP8 rows (128, 256) that the table has."""
    import json

    import pat_sglang.config as config

    shipped = Path(config.__file__).resolve().parent.parent / "configs/tiles/sm90.json"
    fp8 = json.loads(shipped.read_text())["fp8"]
    _assert_table_refused(tmp_path, monkeypatch, "sm90", {"fp8": {**fp8, "t8_head_dims": dims}}, "t8_head_dims")
