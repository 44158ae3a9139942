#!/usr/bin/env bash
# Needs tile-groups-beside-ring.diff applied (git apply): the build this call timed, not committed to the kernel.
# Head dim 64 (16-bit): 32-column wgmma S blocks at 5 CTAs per SM, where the 16-row items keep their tile-group loop
# beside the ring (92 registers, no spills; at 6 CTAs the two together spill), beside the table's 16/4/6/wg.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/s
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/s/device.txt
for h in 32/8 64/8; do
  timeout 250 python3 bench/tile_sweep.py --no-peers --table-again --head-dim 64 --heads $h \
    --variants 16/4/5/wg/n32 16/4/5/wg 16/4/6/wg/n32 \
    --cases a128 b e a64 c mooncake96 d64x4096 d256x1024 d8x32768 > $OUT/s/d64-${h/\//x}.txt 2>&1
  echo "sweep $h $SECONDS s"
done
cd $OUT && tar czf s.tgz s && rm -rf s
