#!/usr/bin/env bash
# Tail-split A/B (tile_sweep, no peers) while FlashInfer JIT-compiles on the CPU; then c/b/d against FlashInfer.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
mkdir -p $OUT/sw $OUT/bench
nice -n 15 python3 docs/perf/kernels/2026-12-04-h200-tail-split/fi_warm.py > $OUT/sw/fi_warm.txt 2>&1 &
W=$!
S="python3 bench/tile_sweep.py --variants --table-again --no-peers --cases c b e a128 d256x1024 mooncake96"
for r in 1 2; do for ts in 0 1; do
  [ $SECONDS -lt 300 ] && PAT_SGLANG_TAIL_SPLIT=$ts timeout 80 $S > $OUT/sw/bf16-ts$ts-r$r.txt 2>&1; echo "bf16 ts$ts r$r $SECONDS s"
done; done
for ts in 0 1; do
  [ $SECONDS -lt 340 ] && PAT_SGLANG_TAIL_SPLIT=$ts timeout 80 $S --kv-dtype fp8_e4m3 > $OUT/sw/fp8-ts$ts.txt 2>&1; echo "fp8 ts$ts $SECONDS s"
done
wait $W; echo "fi warm done $SECONDS s"; cat $OUT/sw/fi_warm.txt | tail -5
B="python3 bench/bench_kernels.py --set core --cases c/32q8kv,b/32q8kv,d256x1024/32q8kv,d64x4096/32q8kv --peers fi_dec,fi_dec_tc --pat-timeout 60"
[ $SECONDS -lt 420 ] && timeout 85 $B --peers-timeout 60 --out $OUT/bench/bf16 > $OUT/sw/bench-bf16.log 2>&1; echo "bench bf16 $SECONDS s"
[ $SECONDS -lt 500 ] && timeout 85 $B --peers-timeout 60 --kv-dtype fp8_e4m3 --out $OUT/bench/fp8 > $OUT/sw/bench-fp8.log 2>&1; echo "bench fp8 $SECONDS s"
cd $OUT && tar czf sw.tgz sw && tar czf bench.tgz bench && rm -rf sw bench; ls -la $OUT
