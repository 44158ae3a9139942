#!/usr/bin/env bash
# One device call (nvidia-h200), FlashInfer's wheels carried in .whl (not used: --no-peers).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/td
python3 bench/tile_sweep.py --heads 32/32 --cases d256x1024 d128x2048 d32x8192 d512x512 --variants \
  --tail-divisors 2 1 --table-again --no-peers > $OUT/td/mha.txt 2>&1
python3 bench/tile_sweep.py --cases d256x1024 mooncake96 b c d128x1024 --variants \
  --tail-divisors 2 1 --table-again --no-peers > $OUT/td/gqa4.txt 2>&1
# Second call (another machine start): the tile table's other shapes at MHA, same environment.
python3 bench/tile_sweep.py --heads 32/32 --cases d256x1024 d128x2048 d32x8192 \
  --variants 16/3/5 16/2/6 32/2/4 16/6/3 32/3/3 --table-again --no-peers > $OUT/td/mha-variants.txt 2>&1
