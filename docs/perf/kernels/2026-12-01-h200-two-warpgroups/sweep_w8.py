"""Scratch: tile_sweep with 8-warp wgmma builds allowed (128-row items on two warpgroups over the ring)."""
import sys

import pat_sglang.kernels as kernels

kernels.wgmma_buildable = lambda arch, warps: arch == "sm_90" and warps in (4, 8)
sys.path.insert(0, "bench")
import tile_sweep  # noqa: E402

sys.exit(tile_sweep.main(sys.argv[1:]))
