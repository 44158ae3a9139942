#!/usr/bin/env bash
# Head dim 256 at 16 q / 8 kv heads (GQA 2, Gemma-2/3) against FlashInfer as graph replays, two rounds.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/g
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/g/device.txt
nice -n 15 python3 docs/perf/kernels/2026-12-04-h200-issue10-sets-fortyeighth/fi_warm2.py bf16 256 > $OUT/g/fi_warm.txt 2>&1 &
B="python3 bench/bench_kernels.py --set hd256gqa2 --peers fi_dec,fi_dec_tc"
timeout 120 $B --phase pat --phase-budget 110 --out $OUT/g/r1 > $OUT/g/pat-r1.log 2>&1; echo "pat $SECONDS s"
wait; echo "fi warm $SECONDS s"
timeout 120 $B --phase peers --phase-budget 110 --out $OUT/g/r1 > $OUT/g/peers-r1.log 2>&1
$B --phase report --out $OUT/g/r1 > $OUT/g/report-r1.txt 2>&1; echo "round 1 $SECONDS s"
if [ $SECONDS -lt 300 ]; then
  timeout 80 $B --phase pat --phase-budget 70 --out $OUT/g/r2 > $OUT/g/pat-r2.log 2>&1
  timeout 80 $B --phase peers --phase-budget 70 --out $OUT/g/r2 > $OUT/g/peers-r2.log 2>&1
  $B --phase report --out $OUT/g/r2 > $OUT/g/report-r2.txt 2>&1; echo "round 2 $SECONDS s"
fi
rm -f $OUT/g/r*/phase_*.json
cd $OUT && tar czf g.tgz g && rm -rf g
