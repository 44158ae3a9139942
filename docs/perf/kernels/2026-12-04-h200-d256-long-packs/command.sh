#!/usr/bin/env bash
# Head dim 256: the long packs' rule on the GPU (tests), then 16-row against the table's padded 64-row items by private
# row length, at 32/8 and 16/8 heads.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/t
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/t/device.txt
timeout 200 python3 -m pytest -q -m gpu tests/gpu/test_kernels_gpu.py -p no:cacheprovider \
  -k "long_and_short_packs or (wgmma_build_matches_reference and 256)" > $OUT/t/gpu-tests.txt 2>&1
echo "tests $SECONDS s"; tail -n 3 $OUT/t/gpu-tests.txt
C="d512x256 d256x512 d256x768 d256x1024 d128x2048 d64x4096 d8x32768 a128 b e"
for h in 32/8 16/8; do
  timeout 200 python3 bench/tile_sweep.py --no-peers --table-again --head-dim 256 --heads $h \
    --variants 16/4/2/wg/n32/m16 --cases $C > $OUT/t/d256-${h/\//x}.txt 2>&1
  echo "sweep $h $SECONDS s"
done
cd $OUT && tar czf t.tgz t && rm -rf t
