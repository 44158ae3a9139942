#!/bin/bash
# base (main) vs this (partials in the q dtype), alternating, one tile_sweep each
set -e
export PAT_SGLANG_CACHE_DIR_BASE=/tmp/pat-cubin-base PYTHONUNBUFFERED=1
CASES="a128 a64 e b ap128 gsp256 mooncake96 d64x4096"
for round in 1 2; do
  echo "=== round $round: base (main, fp32 partials)"
  (cd scratch/base && PYTHONPATH=$PWD PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin-base timeout 150 python3 bench/tile_sweep.py --no-peers --variants --cases $CASES)
  echo "=== round $round: this (partials in the q dtype)"
  PYTHONPATH=$PWD PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin timeout 150 python3 bench/tile_sweep.py --no-peers --variants --cases $CASES
done
