#!/usr/bin/env bash
# The kernel benchmark's core set against FlashInfer (graph replays both), bf16 and FP8 e4m3, at main's HEAD.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/b
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/b/device.txt
nice -n 15 python3 docs/perf/kernels/2026-12-04-h200-tail-split/fi_warm.py > $OUT/b/fi_warm.txt 2>&1 &
W=$!
B="python3 bench/bench_kernels.py --set core --peers fi_dec,fi_dec_tc"
timeout 200 $B --phase pat --phase-budget 180 --out $OUT/b/bf16 > $OUT/b/pat-bf16.log 2>&1; echo "pat bf16 $SECONDS s"
timeout 150 $B --phase pat --phase-budget 130 --kv-dtype fp8_e4m3 --out $OUT/b/fp8 > $OUT/b/pat-fp8.log 2>&1; echo "pat fp8 $SECONDS s"
wait $W; echo "fi warm done $SECONDS s"; tail -3 $OUT/b/fi_warm.txt
timeout 120 $B --phase peers --phase-budget 100 --out $OUT/b/bf16 > $OUT/b/peers-bf16.log 2>&1; echo "peers bf16 $SECONDS s"
timeout 100 $B --phase peers --phase-budget 80 --kv-dtype fp8_e4m3 --out $OUT/b/fp8 > $OUT/b/peers-fp8.log 2>&1; echo "peers fp8 $SECONDS s"
for k in bf16 fp8; do python3 bench/bench_kernels.py --set core --peers fi_dec,fi_dec_tc --phase report $([ $k = fp8 ] && echo --kv-dtype fp8_e4m3) --out $OUT/b/$k > $OUT/b/report-$k.txt 2>&1; done
cd $OUT && tar czf b.tgz b && rm -rf b; ls -la $OUT
