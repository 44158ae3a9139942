"""PAT decode attention vs fa3, FlashInfer, SGLang's Triton decode kernel and torch SDPA on named decode workloads.

One call on the GPU machine builds, checks and times everything, then prints a table and writes
``results.json``, ``results.csv``, ``results.md`` and ``results.png`` into ``--out``.

Workloads (``pat_sglang.workloads``, defined as in the FlashInfer H100 anchor run of 2026-11-24, docs/perf/): a (bs
32/64/128/256), b, c, d (64x4096, 256x1024), e with Llama-3-8B heads (32 q / 8 kv, d=128, bf16), plus 64/8 and
32/32 heads on a subset: the ``core`` case set (the default). Page size 1, KV slots in a random permutation of the
pool. ``--set`` picks other named sets (``CASE_SETS``): the shapes of issue 10 (small batch x long context without
sharing, MHA and GQA 8 there, head dims 64 and 256, fp16, page size 16); ``issue10`` is their union, ``all`` adds
``core``. With page size 16 every tree node gets whole pages (slots of a page contiguous, pages scattered); fa3
reads them through a page table of page indices, the other implementations through the per-token slot list (as
SGLang's FlashInfer and Triton backends do at any page size).

Peers: fa3 (``sgl_kernel.flash_attn.flash_attn_with_kvcache``, called as SGLang 0.5.17's fa3 backend calls it for
decode, timed as CUDA-graph replays), FlashInfer's paged decode (with and without tensor cores) and cascade, SGLang's
Triton decode kernel, torch SDPA per request (these eager). A peer whose package is missing is 'not run: <reason>'.

Method: every implementation is checked against float64 attention on a
sample of requests before it is timed (relative error < 2e-2, no NaN; outputs poisoned first where the API
takes ``out=``); timing is the median over many calls with CUDA events around each call, after warm-up,
rotating among ``--sets`` input sets (different q and KV pools) so the KV does not sit in L2; PAT is also timed
as CUDA-graph replays, fa3 only so. The floor is unique KV bytes / device-to-device copy bandwidth measured in the
same run (bytes read + written). PAT's plan is built once outside the timed region (its CPU time is reported apart).

Robustness: the peers and PAT run in separate child processes (``--phase peers`` / ``--phase pat``), each
writing its JSON as it goes, so a PAT kernel fault (a sticky CUDA error, a crash) cannot lose the peers'
numbers; inside a phase, every implementation x workload is in its own try/except and a failure is recorded
as 'not run: <reason>'.

FP8 KV (``--kv-dtype fp8_e4m3|fp8_e5m2``): every case reads FP8 pools (stored as ``(x / scale).to(fp8)`` with
the non-unit per-tensor scales ``FP8_KV_SCALES``, bf16 q and out); PAT and FlashInfer's decode (``kv_data_type``
FP8, ``k_scale``/``v_scale`` at run), SGLang's Triton decode (k/v scale arguments) and fa3 (``k_descale`` /
``v_descale`` of shape [batch, kv heads], q cast to the FP8 format inside the timed call, as SGLang's fa3 backend
does) time the same FP8 inputs; the reference is float64 over the dequantised KV (for fa3, with q rounded to FP8 as
fa3 sees it) and the floor counts 1-byte KV. Cascade and SDPA are not run on FP8.

CPU only: ``--dry-run`` lists the workloads and checks their byte counts against the anchors file. That file (our
FlashInfer H100 reference measurement) is not shipped: pass it with ``--anchors PATH``; without it the anchor
comparison (dry-run check, ``anchorFI`` column) is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
import types
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pat_sglang.workloads import (  # noqa: E402
    STANDARD_WORKLOADS,
    WORKLOAD_LABELS,
    DecodeBatch,
    make_qkv,
    tree_batch,
    workload_d,
)

ANCHORS: Path | None = None  # the anchors file is not shipped; ``--anchors PATH`` (None: no anchor comparison)
PEERS = ("fi_dec", "fi_dec_tc", "fi_casc", "sgl_triton", "sdpa", "fa3")
PEER_LABELS = {
    "fi_dec": "FI dec",
    "fi_dec_tc": "FI decTC",
    "fi_casc": "FI casc",
    "sgl_triton": "SGL triton",
    "sdpa": "SDPA/req",
    "fa3": "fa3(g)",  # (g): timed as CUDA-graph replays, the others eager
}
GRAPH_PEERS = ("fa3",)  # peers timed as CUDA-graph replays (as SGLang serves decode); the rest eager
FI_PEERS = ("fi_dec", "fi_dec_tc", "fi_casc")
TOL = 2e-2
# fa3 over FP8 pools also rounds P to FP8: against float64 attention of its FP8-rounded q it is off by 2.4-2.7e-2 on
# the FP8 cases (H200 2026-12-01, docs/perf/kernels/2026-12-01-fp8-f16-mma/); the check guards the call, not
# fa3's precision, so it takes this bound there
FA3_FP8_TOL = 4e-2
KV_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}  # --kv-dtype (besides auto)
FP8_KV_SCALES = (0.5, 0.75)  # (k_scale, v_scale) of the FP8 inputs: dequantised = stored * scale
FP8_PEERS = ("fi_dec", "fi_dec_tc", "sgl_triton", "fa3")  # peers with an FP8-KV path here
# Copy bandwidth (read + write) the dry run divides by for its floors: the H200's, measured by this bench on
# 2026-11-29 (docs/perf/kernels/2026-11-29-h200-fp8/); a GPU run measures its own.
DRY_RUN_COPY_BW = 4.144e12

# The anchors' workloads plus no-sharing batches of the same 262k tokens at smaller batch x longer context (issue
# 10: the no-sharing target spans bs 8-256 x 1k-32k; bs 64 x 4k and bs 256 x 1k are in the anchors already).
# Small batches without sharing (a lightly loaded server: 1-4 requests), where every kernel is short and the launches'
# fixed costs weigh most; the dispatch gate hands such batches to PAT wherever its no-sharing ratio is below 1 / margin
# (FP8 pools at head dim 128 under fa3 and FlashInfer since 2026-12-02). Their pools fit in L2 even rotated, so the
# times compare the kernels with each other, not with the bytes floor.
SMALL_BATCHES = ((1, 1024), (1, 8192), (2, 4096), (4, 2048), (4, 16384))
BENCH_WORKLOADS: dict[str, list[tuple[int, int]]] = {
    **STANDARD_WORKLOADS,
    **{f"d{bs}x{ctx}": workload_d(bs, ctx) for bs, ctx in ((8, 32768), (16, 16384), (32, 8192), (128, 2048))},
    **{f"d{bs}x{ctx}": workload_d(bs, ctx) for bs, ctx in SMALL_BATCHES},
}


def workload_label(name: str) -> str:
    """The anchors file's label of a standard workload; a description of the bench's own ones."""
    if name in WORKLOAD_LABELS:
        return WORKLOAD_LABELS[name]
    levels = BENCH_WORKLOADS[name]
    if len(levels) == 1:
        bs, ctx = levels[0]
        return f"d: no sharing, {bs} x {ctx}"
    return f"{name}: levels {levels}"


@dataclass(frozen=True)
class Case:
    workload: str  # key of BENCH_WORKLOADS
    num_q_heads: int
    num_kv_heads: int
    head_dim: int = 128
    dtype: str = "bf16"
    kv_dtype: str = ""  # "": KV in dtype; a key of KV_DTYPES: FP8 pools
    page_size: int = 1  # tokens per KV page: the pool's allocation unit (fa3 reads whole pages via a page table)

    @property
    def key(self) -> str:
        # defaults (bf16, page size 1, KV in the q dtype) leave the key as it was before these fields existed, so
        # the core set's keys still match earlier results
        dtype = f"/{self.dtype}" if self.dtype != "bf16" else ""
        page = f"/p{self.page_size}" if self.page_size != 1 else ""
        kv = f"/kv{self.kv_dtype}" if self.kv_dtype else ""
        return f"{self.workload}/{self.num_q_heads}q{self.num_kv_heads}kv/d{self.head_dim}{dtype}{page}{kv}"

    @property
    def label(self) -> str:
        return workload_label(self.workload)

    def batch(self, rng: np.random.Generator | int | None = 0) -> DecodeBatch:
        """The case's decode batch: its workload's tree laid out in pages of ``page_size`` slots."""
        return tree_batch(BENCH_WORKLOADS[self.workload], page_size=self.page_size, rng=rng)

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]

    @property
    def torch_kv_dtype(self) -> torch.dtype:
        return KV_DTYPES[self.kv_dtype] if self.kv_dtype else self.torch_dtype

    @property
    def kv_token_bytes(self) -> int:
        return 2 * self.num_kv_heads * self.head_dim * self.torch_kv_dtype.itemsize


def all_cases() -> list[Case]:
    """The ``core`` set: the anchors' workloads with Llama-3-8B heads, 64/8 and 32/32 heads on four of them."""
    cases = [Case(w, 32, 8) for w in STANDARD_WORKLOADS]
    for hq, hkv in ((64, 8), (32, 32)):
        cases += [Case(w, hq, hkv) for w in ("a128", "b", "d256x1024", "e")]
    return cases


ODD_GQA_HEADS = ((28, 4), (40, 8))  # (q heads, KV heads) of the ``oddgqa`` set
WIDE_GQA_HEADS = ((48, 4), (64, 4))  # of the ``widegqa`` set: GLM-4.5-Air at TP 2 (12), Qwen3-235B-A22B (16)
LONG_CONTEXT = ("d8x32768", "d16x16384", "d32x8192", "d128x2048")  # no sharing, 262k tokens each
# one shared-prefix tree, one multi-level tree and three no-sharing batches (bs 64/256/8): each new head dim, dtype or
# page size on both kinds of batch
VARIANT_WORKLOADS = ("a128", "b", "d64x4096", "d256x1024", "d8x32768")


def long_context_cases() -> list[Case]:
    """No sharing, small batch x long context (Llama-3-8B heads), plus MHA (32/32) and GQA 8 (64/8) there."""
    cases = [Case(w, 32, 8) for w in LONG_CONTEXT]
    cases += [Case("d8x32768", 64, 8), Case("d8x32768", 32, 32), Case("d32x8192", 32, 32)]
    return cases


def page16_cases() -> list[Case]:
    """Page size 16 (every tree node in whole pages); ``e``'s six levels are multiples of 16 too."""
    return [Case(w, 32, 8, page_size=16) for w in ("a128", "b", "e", "d64x4096", "d8x32768")]


# Named case sets (``--set``). Each of the issue-10 parts needs at most one new FlashInfer JIT family (head dim or
# dtype), so a part fits one device call even on a cold JIT cache; ``issue10`` and ``all`` are for a warm one.
CASE_SETS: dict[str, Callable[[], list[Case]]] = {
    "core": all_cases,
    "longctx": long_context_cases,
    "page16": page16_cases,
    "hd64": lambda: [Case(w, 32, 8, head_dim=64) for w in VARIANT_WORKLOADS],
    "hd256": lambda: [Case(w, 32, 8, head_dim=256) for w in VARIANT_WORKLOADS],
    # head dim 256 at GQA 2, as Gemma-2 / Gemma-3 serve it (e.g. 16 q / 8 kv heads): a private request is 2 query rows
    "hd256gqa2": lambda: [Case(w, 16, 8, head_dim=256) for w in VARIANT_WORKLOADS],
    "fp16": lambda: [Case(w, 32, 8, dtype="fp16") for w in VARIANT_WORKLOADS],
    "small": lambda: [Case(f"d{bs}x{ctx}", 32, 8) for bs, ctx in SMALL_BATCHES],
    # GQA ratios that are not powers of two, as served models have them: Qwen2.5-7B 28/4 (7), Qwen2.5-14B 40/8 (5)
    "oddgqa": lambda: [Case(w, hq, hkv) for hq, hkv in ODD_GQA_HEADS for w in ("a128", "b", "e", "d64x4096")],
    # GQA ratios above 8 (config.MAX_GQA_GROUP 16)
    "widegqa": lambda: [Case(w, hq, hkv) for hq, hkv in WIDE_GQA_HEADS for w in ("a128", "b", "e", "d64x4096")],
}
ISSUE10_SETS = ("longctx", "page16", "hd64", "hd256", "hd256gqa2", "fp16")
CASE_SETS["issue10"] = lambda: [c for name in ISSUE10_SETS for c in CASE_SETS[name]()]
CASE_SETS["all"] = lambda: (CASE_SETS["core"]() + CASE_SETS["issue10"]() + CASE_SETS["small"]() + CASE_SETS["oddgqa"]()
                             + CASE_SETS["widegqa"]())


def cases_for_sets(names: str) -> list[Case]:
    """The cases of comma-separated set names, in order, each case once."""
    cases: dict[str, Case] = {}
    for name in (n for n in names.split(",") if n):
        if name not in CASE_SETS:
            raise ValueError(f"unknown case set {name!r}; known: {', '.join(CASE_SETS)}")
        for c in CASE_SETS[name]():
            cases.setdefault(c.key, c)
    return list(cases.values())


def unique_kv_bytes(case: Case, batch: DecodeBatch | None = None) -> int:
    """Bytes of the KV the batch reads, each token once. Page size does not enter: every implementation reads the
    tokens up to each request's length, not whole trailing pages."""
    batch = batch if batch is not None else case.batch()
    return batch.unique_tokens() * case.kv_token_bytes


def floor_us(case: Case, copy_bw: float, batch: DecodeBatch | None = None) -> float:
    """The bandwidth floor: unique KV bytes / copy bandwidth (bytes read + written per second), microseconds."""
    return unique_kv_bytes(case, batch) / copy_bw * 1e6


# ---------------------------------------------------------------------------------------------- dry run (CPU)
def parse_anchors(path: Path | None = ANCHORS) -> dict[str, dict[str, float]]:
    """Rows of the anchors file keyed by label: bs, uniq Ktok, req Ktok, floor, FI columns (us); {} for None."""
    rows: dict[str, dict[str, float]] = {}
    if path is None:
        return rows
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"anchors file not found: {path} (given with --anchors PATH)")
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("workload"):
            continue
        label, rest = line[:40].strip(), line[40:].split()
        if len(rest) < 8:
            continue
        cols = ("bs", "uniq_ktok", "req_ktok", "floor_us", "fi_dec", "fi_dec_tc", "fi_casc", "best_fi_over_floor")
        rows[label] = {c: float(v) for c, v in zip(cols, rest, strict=False)}
    return rows


def dry_run(cases: list[Case], anchors_path: Path | None = ANCHORS, n_sets: int = 3,
            copy_bw: float = DRY_RUN_COPY_BW) -> int:
    """List the cases (batch, tokens, unique KV, floor at ``copy_bw``, GPU memory of ``n_sets`` input pools) and
    check the anchors' workloads against the anchors file; returns the number of mismatches."""
    anchors = parse_anchors(anchors_path)
    bad = 0
    print(f"floors at {copy_bw / 1e12:.3f} TB/s copy bandwidth (read+write); pools = {n_sets} input sets of k+v")
    print(f"{'case':<34} {'bs':>4} {'uniq Ktok':>9} {'req Ktok':>9} {'uniq MB':>8} {'floor us':>8} "
          f"{'pools GB':>8}  anchors")
    for c in cases:
        batch = c.batch()
        uniq, req = batch.unique_tokens() / 1e3, batch.request_tokens() / 1e3
        row = anchors.get(WORKLOAD_LABELS[c.workload]) if c.workload in WORKLOAD_LABELS else None
        note = "no anchor row" if anchors else "-"
        if row is not None:
            ok = abs(row["uniq_ktok"] - uniq) <= 0.051 and abs(row["req_ktok"] - req) <= 0.051
            ok = ok and row["bs"] == batch.batch
            note = "matches" if ok else f"MISMATCH anchors bs {row['bs']} uniq {row['uniq_ktok']} req {row['req_ktok']}"
            bad += not ok
        mb = unique_kv_bytes(c, batch) / 1e6
        pools_gb = n_sets * batch.num_slots * c.kv_token_bytes / 1e9
        print(f"{c.key:<34} {batch.batch:>4} {uniq:>9.1f} {req:>9.1f} {mb:>8.1f} {floor_us(c, copy_bw, batch):>8.1f} "
              f"{pools_gb:>8.2f}  {note}")
    return bad


# ---------------------------------------------------------------------------------------------- GPU helpers
def measure_copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read + written (median of 20)."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return 2 * src.numel() * 2 / statistics.median(times)


def time_eager(fn: Callable[[int], Any], n_sets: int, reps: int, warmup: int = 5) -> float:
    """Median microseconds of one call, CUDA events around each call, rotating input sets."""
    for i in range(warmup):
        fn(i % n_sets)
    torch.cuda.synchronize()
    events = []
    for r in range(reps):
        for s in range(n_sets):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(s)
            b.record()
            events.append((a, b))
        if r == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) * 1e3 for a, b in events)


def time_graph(fn: Callable[[int], Any], n_sets: int, reps: int) -> float:
    """Median microseconds per call over CUDA-graph replays of one call per input set."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for s in range(n_sets):
            fn(s)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in range(n_sets):
            fn(s)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        times.append((a, b))
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) * 1e3 for a, b in times) / n_sets


class Inputs:
    """``n_sets`` independent (q, k, v) sets on the GPU for one case, plus the batch layout and a float64
    reference for a sample of requests (computed on the GPU in float64)."""

    def __init__(self, case: Case, n_sets: int, n_sample: int = 8, seed: int = 0) -> None:
        self.case = case
        self.batch: DecodeBatch = case.batch(rng=seed)
        b = self.batch
        self.sets = [
            make_qkv(b.batch, case.num_q_heads, case.num_kv_heads, case.head_dim, b.num_slots, case.torch_dtype,
                     "cuda", seed=seed * 101 + s + 1)
            for s in range(n_sets)
        ]
        self.k_scale, self.v_scale = FP8_KV_SCALES if case.kv_dtype else (1.0, 1.0)
        if case.kv_dtype:  # FP8 pools as SGLang stores them: (x / scale) in the FP8 format
            fp8 = case.torch_kv_dtype
            self.sets = [(q, (k.float() / self.k_scale).to(fp8), (v.float() / self.v_scale).to(fp8))
                         for q, k, v in self.sets]
        self.indptr = b.kv_indptr.cuda()
        self.indices = b.kv_indices.cuda()
        self.sm_scale = 1.0 / math.sqrt(case.head_dim)
        rng = np.random.default_rng(seed)
        self.sample = sorted(rng.choice(b.batch, size=min(n_sample, b.batch), replace=False).tolist())
        self.ref = self.reference(0)
        # an implementation that computes from other inputs than set 0's as given (fa3 on FP8 pools rounds q to
        # FP8) is checked against its own reference, computed from what it reads
        self.refs: dict[str, torch.Tensor] = {}
        self.tols: dict[str, float] = {}  # an implementation's own error bound, where it is not TOL

    def reference(self, s: int, q: torch.Tensor | None = None) -> torch.Tensor:
        """Float64 attention of set ``s`` (its q, or ``q``) on the sampled requests."""
        q_set, k, v = self.sets[s]
        q = q_set if q is None else q
        ip = self.batch.kv_indptr.tolist()
        group = self.case.num_q_heads // self.case.num_kv_heads
        out = []
        for r in self.sample:
            idx = self.indices[ip[r] : ip[r + 1]].long()
            kk = _dequantised(k, idx, self.k_scale).repeat_interleave(group, dim=1)
            vv = _dequantised(v, idx, self.v_scale).repeat_interleave(group, dim=1)
            sc = torch.einsum("hd,thd->ht", q[r].double(), kk) * self.sm_scale
            out.append(torch.einsum("ht,thd->hd", torch.softmax(sc, dim=-1), vv))
        return torch.stack(out)

    def check(self, out: torch.Tensor, impl: str = "") -> float:
        """Relative error of ``out`` (set 0) on the sample against ``impl``'s reference (the common one unless the
        implementation registered its own in ``refs``); raises on NaN or error >= its bound (``tols``, else TOL)."""
        ref = self.refs.get(impl, self.ref)
        tol = self.tols.get(impl, TOL)
        got = out[self.sample].double()
        if torch.isnan(got).any():
            raise RuntimeError("output has NaN (unwritten elements?)")
        err = float((got - ref).norm() / ref.norm())
        if not err < tol:
            raise RuntimeError(f"relative error {err:.3e} >= {tol}")
        return err


def _dequantised(pool: torch.Tensor, idx: torch.Tensor, scale: float) -> torch.Tensor:
    """Rows ``idx`` of a pool in float64, times ``scale`` (FP8 rows gathered as bytes)."""
    rows = pool.view(torch.uint8)[idx].view(pool.dtype) if pool.element_size() == 1 else pool[idx]
    return rows.double() * scale


# ---------------------------------------------------------------------------------------------- peers
def _fi_workspace() -> torch.Tensor:
    return torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")


def peer_fi_decode(inp: Inputs, tensor_cores: bool) -> Callable[[int], Any]:
    import flashinfer

    c, b = inp.case, inp.batch
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_fi_workspace(), "NHD", use_tensor_cores=tensor_cores)
    wrapper.plan(
        inp.indptr, inp.indices, torch.ones(b.batch, dtype=torch.int32, device="cuda"),
        c.num_q_heads, c.num_kv_heads, c.head_dim, 1,
        q_data_type=c.torch_dtype, kv_data_type=c.torch_kv_dtype, sm_scale=inp.sm_scale,
    )
    caches = [(k.view(-1, 1, c.num_kv_heads, c.head_dim), v.view(-1, 1, c.num_kv_heads, c.head_dim))
              for _, k, v in inp.sets]
    outs = [torch.full_like(q, float("nan")) for q, _, _ in inp.sets]
    # FP8: the scales as SGLang's flashinfer backend passes them (floats, at run)
    scales = {"k_scale": inp.k_scale, "v_scale": inp.v_scale} if c.kv_dtype else {}

    def fn(s: int) -> torch.Tensor:
        return wrapper.run(inp.sets[s][0], caches[s], out=outs[s], **scales)

    return fn


def cascade_levels(
    batch: DecodeBatch, device: str = "cuda"
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Per tree level: qo_indptr (requests under each node, contiguous), kv_indptr, kv_indices."""
    tree = batch.tree
    depth = [0] * tree.num_nodes
    for i, p in enumerate(tree.parents):
        depth[i] = 0 if p < 0 else depth[p] + 1
    req_pos = {n: r for r, n in enumerate(tree.request_nodes)}
    qo, kvp, kvi = [], [], []
    for d in range(max(depth) + 1):
        nodes = [i for i in range(tree.num_nodes) if depth[i] == d]
        q_counts, kv_counts, idx = [], [], []
        for n in nodes:
            reqs = [req_pos[x] for x in tree.request_nodes if n in tree.path(x)]
            if reqs != list(range(min(reqs), max(reqs) + 1)):
                raise ValueError("cascade needs each node's requests contiguous")
            q_counts.append(len(reqs))
            kv_counts.append(tree.lengths[n])
            idx.append(batch.node_slots[n])
        qo.append(torch.tensor(np.concatenate([[0], np.cumsum(q_counts)]), dtype=torch.int32, device=device))
        kvp.append(torch.tensor(np.concatenate([[0], np.cumsum(kv_counts)]), dtype=torch.int32, device=device))
        kvi.append(torch.from_numpy(np.concatenate(idx).astype(np.int32)).to(device))
    return qo, kvp, kvi


def peer_fi_cascade(inp: Inputs) -> Callable[[int], Any]:
    import flashinfer

    c = inp.case
    qo, kvp, kvi = cascade_levels(inp.batch)
    wrapper = flashinfer.MultiLevelCascadeAttentionWrapper(len(qo), _fi_workspace(), "NHD")
    last = [torch.ones(p.shape[0] - 1, dtype=torch.int32, device="cuda") for p in kvp]
    wrapper.plan(qo, kvp, kvi, last, c.num_q_heads, c.num_kv_heads, c.head_dim, 1, causal=False,
                 sm_scale=inp.sm_scale, q_data_type=c.torch_dtype, kv_data_type=c.torch_dtype)
    caches = [(k.view(-1, 1, c.num_kv_heads, c.head_dim), v.view(-1, 1, c.num_kv_heads, c.head_dim))
              for _, k, v in inp.sets]

    def fn(s: int) -> torch.Tensor:
        return wrapper.run(inp.sets[s][0], caches[s])

    return fn


def _load_sglang_triton() -> tuple[types.ModuleType, types.ModuleType]:
    """SGLang 0.5.17's Triton decode kernel (``sglang/kernels/ops/attention/decode_attention.py``) and its
    split heuristic (``metadata.py``), loaded by path: importing the ``sglang`` package pulls in transformers
    and the server. The files come from an installed sglang (found without importing it) or the wheel."""
    rel = "sglang/kernels/ops/attention/"
    files = ("score_mod.py", "metadata.py", "decode_attention.py")
    src: dict[str, str] = {}
    spec = importlib.util.find_spec("sglang")
    if spec is not None and spec.submodule_search_locations:
        base = Path(list(spec.submodule_search_locations)[0]) / "kernels/ops/attention"
        if all((base / f).exists() for f in files):
            src = {f: (base / f).read_text() for f in files}
    if not src:
        wheels = sorted((REPO / ".whl").glob("sglang-*.whl"))
        if not wheels:
            raise RuntimeError("sglang not installed and no sglang wheel in .whl/")
        with zipfile.ZipFile(wheels[-1]) as z:
            src = {f: z.read(rel + f).decode() for f in files}
    stubs = {
        "sglang": types.ModuleType("sglang"),
        "sglang.srt": types.ModuleType("sglang.srt"),
        "sglang.srt.utils": types.ModuleType("sglang.srt.utils"),
        "sglang.kernels": types.ModuleType("sglang.kernels"),
        "sglang.kernels.ops": types.ModuleType("sglang.kernels.ops"),
        "sglang.kernels.ops.attention": types.ModuleType("sglang.kernels.ops.attention"),
    }
    stubs["sglang.srt.utils"].is_hip = lambda: False  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "pat_bench_sgl"
    tmp.mkdir(parents=True, exist_ok=True)
    mods = {}
    try:
        for f in files:
            name = "sglang.kernels.ops.attention." + f[:-3]
            path = tmp / f
            path.write_text(src[f])  # triton.jit needs the source on disk (inspect.getsource)
            spec_f = importlib.util.spec_from_file_location(name, path)
            assert spec_f is not None and spec_f.loader is not None
            mod = importlib.util.module_from_spec(spec_f)
            sys.modules[name] = mod
            spec_f.loader.exec_module(mod)
            mods[f] = mod
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return mods["decode_attention.py"], mods["metadata.py"]


def peer_sgl_triton(inp: Inputs, max_kv_splits: int = 8) -> Callable[[int], Any]:
    dec, meta = _load_sglang_triton()
    c, b = inp.case, inp.batch
    bs = b.batch
    indices64 = inp.indices.long()  # SGLang's triton backend keeps kv_indices in int64
    seq_lens = (inp.indptr[1:] - inp.indptr[:-1]).to(torch.int32)
    num_kv_splits = torch.empty(bs, dtype=torch.int32, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    meta.get_num_kv_splits_triton[(1,)](
        num_kv_splits, seq_lens, bs, 1, c.num_q_heads, c.num_kv_heads, max_kv_splits, sms,
        MAX_NUM_SEQ=max(256, 1 << (bs - 1).bit_length()),
    )
    logits = torch.empty(bs, c.num_q_heads, max_kv_splits, c.head_dim, dtype=torch.float32, device="cuda")
    lse = torch.empty(bs, c.num_q_heads, max_kv_splits, dtype=torch.float32, device="cuda")
    outs = [torch.full_like(q, float("nan")) for q, _, _ in inp.sets]

    def fn(s: int) -> torch.Tensor:
        q, k, v = inp.sets[s]
        dec.decode_attention_fwd(q, k, v, outs[s], inp.indptr, indices64, logits, lse, num_kv_splits,
                                 max_kv_splits, inp.sm_scale, inp.k_scale, inp.v_scale)
        return outs[s]

    return fn


def peer_sdpa(inp: Inputs) -> Callable[[int], Any]:
    import torch.nn.functional as F

    c = inp.case
    ip = inp.batch.kv_indptr.tolist()
    idx = [inp.indices[ip[r] : ip[r + 1]].long() for r in range(inp.batch.batch)]
    outs = [torch.full_like(q, float("nan")) for q, _, _ in inp.sets]

    def fn(s: int) -> torch.Tensor:
        q, k, v = inp.sets[s]
        for r, ix in enumerate(idx):
            kk = k[ix].transpose(0, 1)[None]  # [1, hkv, T, d]
            vv = v[ix].transpose(0, 1)[None]
            o = F.scaled_dot_product_attention(q[r][None, :, None], kk, vv, scale=inp.sm_scale,
                                               enable_gqa=c.num_q_heads != c.num_kv_heads)
            outs[s][r] = o[0, :, 0]
        return outs[s]

    return fn


def fa3_page_table(
    kv_indptr: torch.Tensor, kv_indices: torch.Tensor, page_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """fa3's paged-KV view of a flat decode batch (host tensors in, host tensors out).

    Returns ``page_table [batch, max pages]`` (int32: row ``r`` lists request ``r``'s pool pages in order, zero past
    its last page) and ``cache_seqlens [batch]`` (int32 token counts). SGLang's fa3 backend derives the same from
    ``req_to_token``: every ``page_size``-th token slot, divided by ``page_size``. fa3 then reads token ``t`` of a
    request at slot ``page_table[t // page_size] * page_size + t % page_size``, so a request's slots must be whole
    pages in order; a ValueError says when they are not (fa3 would read other slots than the flat list names).
    """
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    indptr, indices = kv_indptr.long().cpu(), kv_indices.long().cpu()
    lens = indptr[1:] - indptr[:-1]
    if lens.numel() == 0 or int(lens.min()) < 1:
        raise ValueError("fa3 page table: every request needs >= 1 KV token")
    max_len = int(lens.max())
    pos = torch.arange(max_len)
    valid = pos[None, :] < lens[:, None]
    at = (indptr[:-1, None] + pos[None, :]).clamp(max=indices.numel() - 1)
    slots = torch.where(valid, indices[at], 0)  # [batch, max_len] token slots, 0 past each request's end
    page_first = slots[:, ::page_size]  # slot of each page's first token
    page_valid = valid[:, ::page_size]
    if page_size > 1:
        expect = page_first.repeat_interleave(page_size, dim=1)[:, :max_len] + pos % page_size
        misaligned = (page_first % page_size != 0) & page_valid
        if bool(misaligned.any()) or bool(((slots != expect) & valid).any()):
            raise ValueError(f"fa3 page table: a request's KV slots are not whole pages of {page_size} in order")
    table = torch.where(page_valid, page_first // page_size, 0).to(torch.int32)
    return table, lens.to(torch.int32)


def fa3_decode(
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sets: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    page_size: int,
    sm_scale: float,
    kv_scales: tuple[float, float] | None = None,
) -> Callable[[int], torch.Tensor]:
    """fa3's decode on input set ``s`` (``q [batch, hq, d]``, pools ``[slots, hkv, d]``), called as SGLang 0.5.17's
    fa3 backend calls it in ``forward_decode``: one query token per request (``cu_seqlens_q`` = 0..batch,
    ``max_seqlen_q`` 1, causal), the pools viewed ``[pages, page_size, hkv, d]`` with a page table of page indices,
    and the scheduler metadata computed once for the batch (``get_scheduler_metadata``, as the backend does per
    batch, not per layer). FP8 pools (``kv_scales`` given): ``k_descale``/``v_descale`` the per-tensor scales
    expanded to ``[batch, hkv]`` and q cast to the pool's FP8 format inside the call, as the backend does; the output
    is then bf16. Every output starts as NaN, so an unwritten element fails the check.

    The one fa3 call of the benches (``tile_sweep.py`` imports it). Raises RuntimeError when ``sgl_kernel``'s fa3
    (its ``flash_ops`` library) does not import."""
    try:
        from sgl_kernel.flash_attn import flash_attn_with_kvcache, get_scheduler_metadata
    except (ImportError, OSError) as e:
        raise RuntimeError(f"sgl_kernel fa3 does not import ({type(e).__name__}: {e})") from e

    q0, k0, _ = sets[0]
    device = q0.device
    bs, hq, d = q0.shape
    hkv = k0.shape[1]
    fp8 = k0.element_size() == 1
    if fp8 and kv_scales is None:
        raise ValueError("FP8 pools need kv_scales")
    table_host, seqlens_host = fa3_page_table(kv_indptr, kv_indices, page_size)
    table, seqlens = table_host.to(device), seqlens_host.to(device)
    cu_seqlens_q = torch.arange(bs + 1, dtype=torch.int32, device=device)
    scheduler_metadata = get_scheduler_metadata(
        batch_size=bs, max_seqlen_q=1, max_seqlen_k=int(seqlens_host.max()), num_heads=hq, num_heads_k=hkv,
        headdim=d, cache_seqlens=seqlens, qkv_dtype=k0.dtype, cu_seqlens_q=cu_seqlens_q, page_size=page_size,
        causal=True, has_softcap=False, num_splits=0,
    )
    caches = [(k.view(-1, page_size, hkv, d), v.view(-1, page_size, hkv, d)) for _, k, v in sets]
    descale: dict[str, torch.Tensor] = {}
    if fp8 and kv_scales is not None:
        descale = {
            name: torch.tensor([scale], dtype=torch.float32, device=device).expand(bs, hkv)
            for name, scale in zip(("k_descale", "v_descale"), kv_scales, strict=True)
        }
    outs = [torch.full_like(q, float("nan"), dtype=torch.bfloat16 if fp8 else q.dtype) for q, _, _ in sets]

    def fn(s: int) -> torch.Tensor:
        q = sets[s][0]
        flash_attn_with_kvcache(
            q=q.to(k0.dtype) if fp8 else q, k_cache=caches[s][0], v_cache=caches[s][1], page_table=table,
            cache_seqlens=seqlens, cu_seqlens_q=cu_seqlens_q, max_seqlen_q=1, softmax_scale=sm_scale, causal=True,
            window_size=(-1, -1), softcap=0.0, num_splits=0, scheduler_metadata=scheduler_metadata, out=outs[s],
            **descale,
        )
        return outs[s]

    return fn


def peer_fa3(inp: Inputs) -> Callable[[int], Any]:
    c = inp.case
    fn = fa3_decode(inp.batch.kv_indptr, inp.batch.kv_indices, inp.sets, c.page_size, inp.sm_scale,
                    (inp.k_scale, inp.v_scale) if c.kv_dtype else None)
    if c.kv_dtype:  # fa3 attends with q rounded to the FP8 format: hold it to float64 attention of that q
        q0 = inp.sets[0][0]
        inp.refs["fa3"] = inp.reference(0, q=q0.to(c.torch_kv_dtype).to(q0.dtype))
        inp.tols["fa3"] = FA3_FP8_TOL
    return fn


PEER_BUILDERS: dict[str, Callable[[Inputs], Callable[[int], Any]]] = {
    "fi_dec": lambda inp: peer_fi_decode(inp, False),
    "fi_dec_tc": lambda inp: peer_fi_decode(inp, True),
    "fi_casc": peer_fi_cascade,
    "sgl_triton": peer_sgl_triton,
    "sdpa": peer_sdpa,
    "fa3": peer_fa3,
}


# ---------------------------------------------------------------------------------------------- phases
def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def run_phase(phase: str, cases: list[Case], args: argparse.Namespace, out: Path) -> None:
    """Time ``phase`` ('peers' or 'pat') on every case; results go to ``out/phase_<phase>.json`` as they come."""
    res: dict[str, Any] = {"phase": phase, "device": torch.cuda.get_device_name(0), "cases": {}}
    if phase == "peers":
        res["requested"] = list(args.peers)  # the report leaves the others out of its failures
    path = out / f"phase_{phase}.json"
    if phase == "pat":
        res["copy_bw"] = measure_copy_bandwidth()
        print(f"copy bandwidth (read+write): {res['copy_bw'] / 1e12:.3f} TB/s", flush=True)
    _save(path, res)
    deadline = time.monotonic() + args.phase_budget
    for case in cases:
        entry: dict[str, Any] = {}
        res["cases"][case.key] = entry
        if time.monotonic() > deadline:
            entry["error"] = "not run: phase time budget spent"
            _save(path, res)
            continue
        try:
            inp = Inputs(case, args.sets)
        except Exception as e:  # noqa: BLE001
            entry["error"] = f"inputs: {_short(e)}"
            _save(path, res)
            continue
        names = PEERS if phase == "peers" else ("pat",)
        for name in names:
            if phase == "peers" and name not in args.peers:
                continue
            if case.kv_dtype and name not in (*FP8_PEERS, "pat"):
                entry[name] = {"error": "not run: no FP8-KV path in this bench"}
                continue
            if name == "sdpa" and inp.batch.batch > args.sdpa_max_batch:
                entry[name] = {"error": f"not run: batch > --sdpa-max-batch {args.sdpa_max_batch}"}
                continue
            if time.monotonic() > deadline:
                entry[name] = {"error": "not run: phase time budget spent"}
                continue
            t0 = time.monotonic()
            try:
                entry[name] = time_impl(name, inp, args)
            except Exception as e:  # noqa: BLE001
                entry[name] = {"error": f"not run: {_short(e)}"}
                if args.verbose:
                    traceback.print_exc()
            entry[name]["wall_s"] = round(time.monotonic() - t0, 2)
            print(f"[{phase}] {case.key:<26} {name:<10} {_fmt_entry(entry[name])}", flush=True)
            _save(path, res)
        del inp
        torch.cuda.empty_cache()
    _save(path, res)


def _fmt_entry(e: dict) -> str:
    if "us" in e:
        g = f" graph {e['graph_us']:.1f}" if e.get("graph_us") else ""
        g += f" (eager {e['eager_us']:.1f})" if e.get("eager_us") else ""
        timing = " graph" if e.get("timing") == "graph" else ""
        return f"{e['us']:.1f} us{timing}{g} err {e['err']:.1e} (build {e.get('build_s', 0):.1f} s)"
    return e.get("error", "?")


def time_impl(name: str, inp: Inputs, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    if name == "pat":
        fn, extra = build_pat(inp)
    else:
        fn, extra = PEER_BUILDERS[name](inp), {}
    out = fn(0)  # first call: JIT compile / module load
    torch.cuda.synchronize()
    build_s = time.monotonic() - t0
    if name == "pat":
        out.fill_(float("nan"))
        out = fn(0)
        torch.cuda.synchronize()
    err = inp.check(out, name)
    reps = args.reps if name != "sdpa" else max(3, args.reps // 10)
    if name in GRAPH_PEERS:  # the table's number is the graph replay; the eager time is kept beside it
        us = time_graph(fn, len(inp.sets), reps)
        extra = {**extra, "timing": "graph", "eager_us": time_eager(fn, len(inp.sets), reps)}
    else:
        us = time_eager(fn, len(inp.sets), reps)
    r: dict[str, Any] = {"us": us, "err": err, "build_s": round(build_s, 2), **extra}
    # PAT and FlashInfer also as CUDA-graph replays (how SGLang runs decode), so that one pair of the report is timed
    # graph against graph and launch gaps favour neither; a kernel that cannot be captured keeps its eager time alone
    if (name == "pat" or name in FI_PEERS) and not args.no_graph:
        try:
            r["graph_us"] = time_graph(fn, len(inp.sets), reps)
        except Exception as e:  # noqa: BLE001
            r["graph_error"] = _short(e)
    return r


def build_pat(inp: Inputs) -> tuple[Callable[[int], Any], dict[str, Any]]:
    import pat_sglang
    from pat_sglang.config import DeviceSpec, HeadConfig

    c = inp.case
    heads = HeadConfig(c.num_q_heads, c.num_kv_heads, c.head_dim, c.torch_dtype, c.torch_kv_dtype)
    dev = DeviceSpec.from_torch(torch.device("cuda"))
    host_ip, host_ix = inp.batch.kv_indptr, inp.batch.kv_indices
    plan_times = []
    plan = None
    for _ in range(5):
        t0 = time.perf_counter()
        plan = pat_sglang.plan(host_ip, host_ix, heads, dev)
        plan_times.append(time.perf_counter() - t0)
    assert plan is not None
    gplan = plan.to("cuda")
    torch.cuda.synchronize()
    outs = [torch.full_like(q, float("nan")) for q, _, _ in inp.sets]

    def fn(s: int) -> torch.Tensor:
        q, k, v = inp.sets[s]
        return pat_sglang.run(gplan, q, k, v, inp.sm_scale, out=outs[s], k_scale=inp.k_scale, v_scale=inp.v_scale)

    st = plan.stats
    extra = {
        "plan_us": statistics.median(plan_times) * 1e6,
        "num_items": plan.num_items,
        "num_partials": plan.num_partials,
        "kv_bytes_planned": st.kv_bytes_planned if st else None,
        "partial_bytes": st.partial_bytes if st else None,
    }
    return fn, extra


# ---------------------------------------------------------------------------------------------- report
def build_rows(cases: list[Case], peers: dict, pat: dict, anchors_path: Path | None = ANCHORS) -> list[dict[str, Any]]:
    bw = pat.get("copy_bw") or peers.get("copy_bw")
    anchors = parse_anchors(anchors_path)
    rows = []
    for c in cases:
        batch = c.batch()
        uniq = unique_kv_bytes(c, batch)
        row: dict[str, Any] = {
            "case": c.key, "label": c.label, "bs": batch.batch, "page_size": c.page_size,
            "uniq_MB": uniq / 1e6, "req_MB": batch.request_tokens() * c.kv_token_bytes / 1e6,
            "floor_us": floor_us(c, bw, batch) if bw else None,
        }
        pe = peers.get("cases", {}).get(c.key, {})
        requested = peers.get("requested", PEERS)  # a phase file of an older run names none: every peer was asked
        for p in PEERS:
            missing = "not run: peers phase missing" if p in requested else ""  # unrequested (--peers): no failure
            e = pe.get(p, {"error": pe.get("error", missing)})
            row[p] = e.get("us")
            row[p + "_note"] = e.get("error", "")
            if p in FI_PEERS:
                row[p + "_graph"] = e.get("graph_us")
        pa = pat.get("cases", {}).get(c.key, {})
        e = pa.get("pat", {"error": pa.get("error", "not run: PAT phase missing")})
        row["pat"] = e.get("us")
        row["pat_graph"] = e.get("graph_us")
        row["pat_note"] = e.get("error", "")
        row["plan_us"] = e.get("plan_us")
        # what the anchor run measured: Llama-3-8B heads, d128, bf16, page size 1
        anchor_shape = (c.num_q_heads, c.num_kv_heads, c.head_dim, c.dtype, c.page_size, c.kv_dtype)
        anchor = anchors.get(WORKLOAD_LABELS.get(c.workload, "")) if anchor_shape == (32, 8, 128, "bf16", 1, "") \
            else None
        row["anchor_fi_best"] = min(anchor[k] for k in ("fi_dec", "fi_dec_tc", "fi_casc") if anchor[k] == anchor[k]) \
            if anchor else None
        fi = [row[p] for p in FI_PEERS if row[p]]
        row["fi_best"] = min(fi) if fi else None
        row["fi_best_peer"] = min((p for p in FI_PEERS if row[p]), key=lambda p: row[p]) if fi else None
        fi_graph = [p for p in FI_PEERS if row.get(p + "_graph")]
        row["fi_best_graph"] = min(row[p + "_graph"] for p in fi_graph) if fi_graph else None
        row["fi_best_graph_peer"] = min(fi_graph, key=lambda p: row[p + "_graph"]) if fi_graph else None
        row["pat_over_floor"] = row["pat"] / row["floor_us"] if row["pat"] and row["floor_us"] else None
        # issue 10's floor target is stated for PAT as CUDA-graph replays (the eager column adds ~2-17 us of launch)
        row["pat_graph_over_floor"] = row["pat_graph"] / row["floor_us"] if row["pat_graph"] and row["floor_us"] \
            else None
        row["speedup_vs_fi"] = row["fi_best"] / row["pat"] if row["pat"] and row["fi_best"] else None
        row["pat_over_best"], row["best_base"] = pat_over_best(row)
        row["bw_frac"] = row["floor_us"] / row["pat"] if row["pat"] and row["floor_us"] else None
        rows.append(row)
    return rows


def pat_over_best(row: dict[str, Any]) -> tuple[float | None, str | None]:
    """PAT's time over the best baseline's (fa3 or FlashInfer), each pair timed alike: PAT graph / FlashInfer's best
    graph replay where both were captured (else PAT eager / FlashInfer's best eager), PAT graph / fa3 (graph; PAT eager
    when its graph time is missing, which only makes PAT look slower). Returns the larger ratio and the baseline it
    comes from (a FlashInfer peer timed as graphs carries ``(g)``): <= 1 means PAT is never slower than the best
    baseline. (None, None) when PAT or both baselines are missing."""
    ratios: list[tuple[float, str]] = []
    if row.get("pat_graph") and row.get("fi_best_graph"):
        ratios.append((row["pat_graph"] / row["fi_best_graph"], (row.get("fi_best_graph_peer") or "fi") + "(g)"))
    elif row.get("pat") and row.get("fi_best"):
        ratios.append((row["pat"] / row["fi_best"], row.get("fi_best_peer") or "fi"))
    pat_graph = row.get("pat_graph") or row.get("pat")
    if pat_graph and row.get("fa3"):
        ratios.append((pat_graph / row["fa3"], "fa3"))
    if not ratios:
        return None, None
    ratio, base = max(ratios)
    return ratio, base


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


COLS = [("case", "case", "<34"), ("bs", "bs", ">4"), ("uniq_MB", "uniqMB", ">7"), ("floor_us", "floor", ">7")]
COLS += [(p, PEER_LABELS[p], ">10") for p in PEERS]
COLS += [("fi_best_graph", "FIbest(g)", ">9")]
COLS += [("pat", "PAT", ">8"), ("pat_graph", "PATgraph", ">8"), ("pat_over_floor", "PAT/flr", ">7"),
         ("pat_graph_over_floor", "PATg/flr", ">8"),
         ("speedup_vs_fi", "xFIbest", ">7"), ("pat_over_best", "PAT/best", ">8"), ("best_base", "bestBase", ">9"),
         ("bw_frac", "bwfrac", ">6"), ("plan_us", "plan_us", ">8"), ("anchor_fi_best", "anchorFI", ">8")]
RATIO_COLS = ("pat_over_floor", "pat_graph_over_floor", "speedup_vs_fi", "pat_over_best", "bw_frac")


def format_table(rows: list[dict[str, Any]]) -> str:
    head = " ".join(format(t, a) for _, t, a in COLS)
    lines = [head]
    for r in rows:
        cells = []
        for k, _, a in COLS:
            v = r.get(k)
            if isinstance(v, str) or k == "bs":
                cells.append(format(str(v), a))
            else:
                fmt = ".2f" if k in RATIO_COLS else ".1f"
                cells.append(format(_f(v, fmt), a))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def write_reports(out: Path, cases: list[Case], peers: dict, pat: dict, anchors_path: Path | None = ANCHORS) -> str:
    rows = build_rows(cases, peers, pat, anchors_path)
    table = format_table(rows)
    notes = []
    for r in rows:
        for k in (*PEERS, "pat"):
            if r.get(k + "_note"):
                notes.append(f"{r['case']} {k}: {r[k + '_note']}")
    bw = pat.get("copy_bw")
    header = (
        f"device: {pat.get('device') or peers.get('device')}; copy bandwidth (read+write) "
        f"{_f(bw / 1e12 if bw else None, '.3f')} TB/s; times in us, median per call, CUDA events, "
        f"rotating input sets; CUDA-graph replays: fa3(g), PATgraph, FIbest(g) (FlashInfer's fastest kernel as graph "
        f"replays); eager: FI dec/decTC/casc, SGL triton, SDPA/req, PAT; PAT/best = max(PATgraph / FIbest(g) (PAT / "
        f"FI best, eager, where FlashInfer was not captured), PATgraph / fa3), bestBase = the baseline of that max; "
        f"PAT/flr = eager PAT / floor, PATg/flr = PATgraph / floor (issue 10's floor ratio)"
    )
    (out / "results.json").write_text(json.dumps({"rows": rows, "peers": peers, "pat": pat}, indent=1))
    keys = list(rows[0].keys()) if rows else []
    with open(out / "results.csv", "w") as f:
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join("" if r[k] is None else str(r[k]).replace(",", ";") for k in keys) + "\n")
    md = [header, "", "| " + " | ".join(t for _, t, _ in COLS) + " |", "|" + "---|" * len(COLS)]
    for line in table.splitlines()[1:]:
        md.append("| " + " | ".join(line.split()) + " |")
    md += ["", "Not run / failures:", ""] + [f"- {n}" for n in notes]
    (out / "results.md").write_text("\n".join(md) + "\n")
    try:
        plot(out / "results.png", rows)
    except Exception as e:  # noqa: BLE001
        notes.append(f"plot: {_short(e)}")
    return header + "\n" + table + ("\n" + "\n".join(notes) if notes else "")


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = [*PEERS, "pat"]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.9), 5))
    width = 0.8 / len(impls)
    for j, k in enumerate(impls):
        ys = [(r[k] / r["floor_us"]) if r.get(k) and r["floor_us"] else 0 for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], ys, width, label=PEER_LABELS.get(k, "PAT"))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time / unique-bytes floor")
    ax.set_xticks([i + 0.4 for i in range(len(rows))])
    ax.set_xticklabels([r["case"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/bench")))
    ap.add_argument("--dry-run", action="store_true", help="CPU only: list workloads, check them against anchors")
    ap.add_argument("--phase", choices=("all", "peers", "pat", "report"), default="all")
    ap.add_argument("--set", dest="case_set", default="core",
                    help=f"comma-separated case sets: {', '.join(CASE_SETS)} (issue10 = {'+'.join(ISSUE10_SETS)}; "
                         "all = core+issue10+small+oddgqa+widegqa)")
    ap.add_argument("--cases", default="", help="comma-separated case-key prefixes to keep (e.g. a128,e/32q8kv)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)}")
    ap.add_argument("--sets", type=int, default=3, help="rotated input sets (>= 3 so the KV leaves L2)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--sdpa-max-batch", type=int, default=256)
    ap.add_argument("--no-graph", action="store_true")
    ap.add_argument("--peers-timeout", type=int, default=330, help="seconds for the peers child (FlashInfer JIT)")
    ap.add_argument("--pat-timeout", type=int, default=180, help="seconds for the PAT child")
    ap.add_argument("--phase-budget", type=float, default=1e9, help="inside a phase: stop starting cases after this")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--kv-dtype", choices=("auto", *KV_DTYPES), default="auto",
                    help="KV pool format of every case: auto = the q dtype (bf16); fp8_*: FP8 pools, FP8 peers only")
    ap.add_argument("--anchors", type=Path, default=None,
                    help="FlashInfer H100 anchors file (our reference run, not shipped); default: no anchor comparison")
    args = ap.parse_args(argv)
    if args.anchors is None and (args.dry_run or args.phase in ("all", "report")):
        print("no --anchors file given: skipping the comparison with the FlashInfer H100 anchor run", flush=True)
    args.peers = tuple(p for p in args.peers.split(",") if p)
    try:
        cases = cases_for_sets(args.case_set)
    except ValueError as e:
        ap.error(str(e))
    if args.kv_dtype != "auto":
        cases = [replace(c, kv_dtype=args.kv_dtype) for c in cases]
    if args.cases:
        keep = [k for k in args.cases.split(",") if k]
        cases = [c for c in cases if any(c.key.startswith(k) for k in keep)]
    if args.dry_run:
        return 1 if dry_run(cases, args.anchors, args.sets) else 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase in ("peers", "pat"):
        if not torch.cuda.is_available():
            print("no CUDA device", file=sys.stderr)
            return 2
        run_phase(args.phase, cases, args, args.out)
        return 0
    if args.phase == "all":
        base = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--sets", str(args.sets),
                "--reps", str(args.reps), "--sdpa-max-batch", str(args.sdpa_max_batch), "--peers", ",".join(args.peers),
                "--set", args.case_set]
        if args.cases:
            base += ["--cases", args.cases]
        base += ["--kv-dtype", args.kv_dtype]
        if args.no_graph:
            base.append("--no-graph")
        if args.verbose:
            base.append("--verbose")
        for phase, limit in (("peers", args.peers_timeout), ("pat", args.pat_timeout)):
            if phase == "peers" and not args.peers:
                continue
            t0 = time.monotonic()
            cmd = base + ["--phase", phase, "--phase-budget", str(max(10, limit - 30))]
            try:
                rc = subprocess.run(cmd, timeout=limit).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            print(f"[{phase}] child finished: rc={rc} in {time.monotonic() - t0:.0f} s", flush=True)
    peers = _load(args.out / "phase_peers.json")
    pat = _load(args.out / "phase_pat.json")
    report = write_reports(args.out, cases, peers, pat, args.anchors)
    print(report)
    return 0


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
