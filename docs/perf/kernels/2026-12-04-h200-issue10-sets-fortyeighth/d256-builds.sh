#!/usr/bin/env bash
# Head dim 256 without sharing (1.005-1.018x FlashInfer in three rounds): a few builds beside the table's.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/v
timeout 400 python3 bench/tile_sweep.py --no-peers --table-again --head-dim 256 \
  --variants 32/2/2/wg/n32/m64 16/3/2/wg/n16/m64 16/4/2/wg/n16/m64 16/4/2/wg/n32/m16 \
  --cases d8x32768 d256x1024 d64x4096 a128 > $OUT/v/d256.txt 2>&1; echo "d256 $SECONDS s"
cd $OUT && tar czf v.tgz v && rm -rf v
