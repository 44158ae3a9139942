#!/usr/bin/env bash
# Head dim 256 with long packs from 1024 tokens (the table now): trees with long leaves against the earlier rule (/m64:
# every private row padded to 64 rows), then the kernel benchmark's hd256 set against FlashInfer, three rounds.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/b
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/b/device.txt
nice -n 15 python3 docs/perf/kernels/2026-12-04-h200-issue10-sets-fortyeighth/fi_warm2.py bf16 256 > $OUT/b/fi_warm.txt 2>&1 &
for h in 32/8 16/8; do
  timeout 120 python3 bench/tile_sweep.py --no-peers --table-again --head-dim 256 --heads $h \
    --variants 16/4/2/wg/n32/m64 --cases c mooncake96 a128 b e d256x1024 d8x32768 > $OUT/b/rule-${h/\//x}.txt 2>&1
  echo "rule $h $SECONDS s"
done
wait; echo "fi warm $SECONDS s"
B="python3 bench/bench_kernels.py --set hd256 --peers fi_dec,fi_dec_tc"
for r in 1 2 3; do
  timeout 120 $B --phase pat --phase-budget 110 --out $OUT/b/r$r > $OUT/b/pat-r$r.log 2>&1
  timeout 120 $B --phase peers --phase-budget 110 --out $OUT/b/r$r > $OUT/b/peers-r$r.log 2>&1
  $B --phase report --out $OUT/b/r$r > $OUT/b/report-r$r.txt 2>&1; echo "round $r $SECONDS s"
done
cd $OUT && tar czf b.tgz b && rm -rf b
