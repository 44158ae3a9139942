#!/usr/bin/env bash
# One device call (nvidia-h200), from the repository root. head_major.cu = kernels/pat_decode.cu + head_major.diff (made
# on the CPU side as below and carried as an untracked file). --no-peers: no FlashInfer JIT needed.
#   patch -o head_major.cu kernels/pat_decode.cu docs/perf/kernels/2026-12-04-h200-head-major/head_major.diff
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/hm
python3 bench/tile_sweep.py --heads 32/32 --cases d256x1024 d128x2048 d32x8192 \
  --variants 16/4/4/wg/n32@head_major.cu --table-again --no-peers > $OUT/hm/mha.txt 2>&1
python3 bench/tile_sweep.py --cases d256x1024 d32x8192 d8x32768 mooncake96 a64 e b c \
  --variants 16/4/4/wg/n32@head_major.cu --table-again --no-peers > $OUT/hm/gqa4.txt 2>&1
