"""Can clusters that multicast a shared node's KV tiles feed the forward's row blocks faster than each CTA gathering
the tiles itself? A probe for issue 10's wide-GQA trees (``kernels/NOTES.md``, fortieth session), before any change
to the forward: ``bench/multicast_probe.cu`` (its header says what each mode does) timed on one shape.

    python3 bench/multicast_probe.py [--tokens 1024] [--rows 32] [--nodes 8] [--clusters 2 4 8] [--stages 4]

prints, per mode, the median microseconds of one launch (CUDA events over --reps launches, after a checked one), the
bytes delivered into shared memory per second (every CTA's tiles) and the unique KV bytes per second (each node's
rows once). Every CTA's sum of its node's values is checked against float64 before anything is timed. The defaults
are e's root at 64/4 heads (GQA 16): 1024 tokens read by 32 row blocks, 8 such nodes. GPU (sm_90: modes 1 and 2 use
bulk copies; mode 2 needs sm_90a's multicast); ``--build-only`` compiles every mode with NVRTC (CPU). The modes run
in order, gather first, each line printed as it is measured: run it under ``timeout`` (a mode whose barriers never
complete hangs its launch, and only killing the process ends it).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCE = Path(__file__).with_suffix(".cu")
THREADS = 128
ROW_BYTES = 256  # one KV head of d128 in 16 bits
TILE = 16
MAX_TOKENS = 4096  # the slots a CTA stages in shared memory (MAX_TOKENS in the .cu, checked at load)
MODES = {0: "gather", 1: "bulk", 2: "multicast"}


@dataclass(frozen=True)
class ProbeBuild:
    mode: int
    stages: int
    cluster: int = 1  # mode 2 only

    @property
    def name(self) -> str:
        return MODES[self.mode] + (f" x{self.cluster}" if self.mode == 2 else "")

    def options(self, include_dir: str) -> list[str]:
        arch = "sm_90a" if self.mode == 2 else "sm_90"  # bulk multicast is sm_90a's
        return [f"--gpu-architecture={arch}", "-std=c++17", f"-I{include_dir}", f"-DPROBE_MODE={self.mode}",
                f"-DSTAGES={self.stages}", *([f"-DCLUSTER={self.cluster}"] if self.mode == 2 else [])]


def compile_probe(build: ProbeBuild) -> bytes:
    """The probe's cubin for ``build`` (NVRTC; ``KernelBuildError`` with the log where it fails)."""
    from pat_sglang.kernels import include_dir, nvrtc_compile

    options = build.options(include_dir())
    cubin, _ = nvrtc_compile(SOURCE.read_text(), "multicast_probe.cu", options, f"the probe {build}")
    return cubin


def builds(stages: int, clusters: list[int]) -> list[ProbeBuild]:
    return [ProbeBuild(0, stages), ProbeBuild(1, stages), *(ProbeBuild(2, stages, c) for c in clusters)]


class _Params(ctypes.Structure):  # ProbeParams in multicast_probe.cu
    _fields_ = [("k", ctypes.c_void_p), ("v", ctypes.c_void_p), ("slots", ctypes.c_void_p), ("out", ctypes.c_void_p),
                ("tokens", ctypes.c_int), ("rows", ctypes.c_int)]


def check_shape(tokens: int, rows: int, nodes: int, clusters: list[int]) -> None:
    if tokens < TILE or tokens % TILE or tokens > MAX_TOKENS:
        raise ValueError(f"--tokens {tokens}: a positive multiple of {TILE}, at most {MAX_TOKENS}")
    if rows < 1 or nodes < 1:
        raise ValueError("--rows and --nodes must be positive")
    for c in clusters:
        if c not in (2, 4, 8) or rows % c:
            raise ValueError(f"cluster {c}: one of 2, 4, 8, dividing --rows {rows} (a cluster holds one node)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1024, help="tokens per node (a multiple of 16)")
    ap.add_argument("--rows", type=int, default=32, help="CTAs (row blocks) per node")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--clusters", type=int, nargs="*", default=[2, 4, 8])
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--build-only", action="store_true", help="compile every mode (NVRTC, CPU) and stop")
    args = ap.parse_args(argv)
    try:
        check_shape(args.tokens, args.rows, args.nodes, args.clusters)
    except ValueError as e:
        ap.error(str(e))
    cubins = {b: compile_probe(b) for b in builds(args.stages, args.clusters)}
    if args.build_only:
        for b, cubin in cubins.items():
            print(f"{b.name:<14} {len(cubin)} bytes")
        return 0
    return run(cubins, args)


def run(cubins: dict[ProbeBuild, bytes], args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from pat_sglang.kernels import _driver, _drv, _ensure_context, allow_dynamic_smem, library_int32
    from pat_sglang.launch import libcuda

    torch.cuda.init()
    _ensure_context(torch.cuda.current_device())
    driver, lib = _driver(), libcuda()
    n_tok = args.nodes * args.tokens
    gen = torch.Generator(device="cuda").manual_seed(0)
    k = torch.rand(n_tok, ROW_BYTES // 2, device="cuda", generator=gen).to(torch.bfloat16)
    v = torch.rand(n_tok, ROW_BYTES // 2, device="cuda", generator=gen).to(torch.bfloat16)
    slots = torch.randperm(n_tok, device="cuda", generator=gen).to(torch.int32)
    node_sum = (k.double()[slots.long()].view(args.nodes, -1).sum(1) + v.double()[slots.long()].view(args.nodes, -1)
                .sum(1)).cpu().numpy()
    ctas = args.nodes * args.rows
    out = torch.empty(ctas, device="cuda", dtype=torch.float32)
    params = _Params(k.data_ptr(), v.data_ptr(), slots.data_ptr(), out.data_ptr(), args.tokens, args.rows)
    kernel_args = (ctypes.c_void_p * 1)(ctypes.addressof(params))
    delivered = ctas * args.tokens * 2 * ROW_BYTES
    unique = n_tok * 2 * ROW_BYTES
    print(f"{args.nodes} nodes x {args.tokens} tokens, {args.rows} CTAs each ({ctas} CTAs), {args.stages} stages; "
          f"delivered {delivered / 1e6:.1f} MB per launch, unique {unique / 1e6:.1f} MB; us = median of "
          f"{args.reps} launches", flush=True)
    keep = []
    for build, cubin in cubins.items():
        library = _drv(driver.cuLibraryLoadData(cubin, None, None, 0, None, None, 0), "cuLibraryLoadData")
        kernel = _drv(driver.cuLibraryGetKernel(library, b"probe"), "cuLibraryGetKernel")
        keep.append((library, cubin))
        smem = library_int32(library, b"probe_smem_bytes")  # the kernel's own stages and staged slots
        if library_int32(library, b"probe_max_tokens") != MAX_TOKENS:
            raise RuntimeError("bench/multicast_probe.cu's MAX_TOKENS differs from the script's")
        allow_dynamic_smem(kernel, smem, _drv(driver.cuDeviceGet(torch.cuda.current_device()), "cuDeviceGet"))
        stream = torch.cuda.current_stream().cuda_stream

        def launch(kernel=kernel, smem=smem, stream=stream, name=build.name) -> None:
            err = lib.cuLaunchKernel(int(kernel), ctas, 1, 1, THREADS, 1, 1, smem, stream, kernel_args, None)
            if err:
                raise RuntimeError(f"cuLaunchKernel failed ({err}) for {name}")

        out.fill_(float("nan"))
        launch()
        torch.cuda.synchronize()
        got = out.cpu().numpy().astype(np.float64)
        want = np.repeat(node_sum, args.rows)
        bad = ~(np.abs(got - want) <= 1e-4 * np.abs(want))
        if bad.any():
            print(f"{build.name:<14} WRONG: {int(bad.sum())} of {ctas} CTA sums differ (first: {got[bad][0]} vs "
                  f"{want[bad][0]})", flush=True)
            return 1
        times = []
        for _ in range(args.reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            launch()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3)
        us = statistics.median(times)
        print(f"{build.name:<14} {us:9.1f} us   delivered {delivered / us / 1e6:7.2f} TB/s   unique "
              f"{unique / us / 1e6:6.2f} TB/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
