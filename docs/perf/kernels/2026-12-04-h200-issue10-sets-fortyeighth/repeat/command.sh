#!/usr/bin/env bash
# The seven no-sharing rows that read 1.0001-1.014x FlashInfer, three more rounds of (PAT, FlashInfer) in one call.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/r
for a in "bf16 128" "bf16 256"; do nice -n 15 python3 docs/perf/kernels/2026-12-04-h200-issue10-sets-fortyeighth/fi_warm2.py $a > "$OUT/r/fi_warm-${a/ /-}.txt" 2>&1 & done
wait; echo "fi warm $SECONDS s"
C="d8x32768/32q8kv/d128,d32x8192/32q8kv/d128,d8x32768/64q8kv/d128,d256x1024/32q32kv/d128,d64x4096/32q8kv/d256,d256x1024/32q8kv/d256,d8x32768/32q8kv/d256"
B="python3 bench/bench_kernels.py --set core,longctx,hd256 --cases $C --peers fi_dec,fi_dec_tc"
for r in 1 2 3; do
  timeout 100 $B --phase pat --phase-budget 90 --out $OUT/r/r$r > $OUT/r/pat-r$r.log 2>&1
  timeout 100 $B --phase peers --phase-budget 90 --out $OUT/r/r$r > $OUT/r/peers-r$r.log 2>&1
  $B --phase report --out $OUT/r/r$r > $OUT/r/report-r$r.txt 2>&1; echo "round $r $SECONDS s"
done
cd $OUT && tar czf r.tgz r && rm -rf r
