#!/usr/bin/env bash
# Issue 10's no-sharing sets (and their trees) against FlashInfer as graph replays; the MHA row's split lengths.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin
mkdir -p $OUT/c
for a in "bf16 128" "fp16 128" "bf16 64" "bf16 256"; do
  nice -n 15 python3 docs/perf/kernels/2026-12-04-h200-issue10-sets-fortyeighth/fi_warm2.py $a > "$OUT/c/fi_warm-${a/ /-}.txt" 2>&1 &
done
S="python3 bench/tile_sweep.py --variants --no-peers --heads 32/32 --split-tokens 1024 512 768 352 256 --cases d256x1024 d32x8192"
timeout 120 $S > $OUT/c/mha-splits.txt 2>&1; echo "mha splits $SECONDS s"
B="python3 bench/bench_kernels.py --set longctx,page16,hd64,hd256,fp16 --peers fi_dec,fi_dec_tc"
timeout 240 $B --phase pat --phase-budget 220 --out $OUT/c/issue10 > $OUT/c/pat.log 2>&1; echo "pat $SECONDS s"
wait; echo "fi warm done $SECONDS s"; tail -n 2 $OUT/c/fi_warm-*.txt
timeout $((580 - SECONDS)) $B --phase peers --phase-budget $((560 - SECONDS)) --out $OUT/c/issue10 > $OUT/c/peers.log 2>&1; echo "peers $SECONDS s"
python3 bench/bench_kernels.py --set longctx,page16,hd64,hd256,fp16 --peers fi_dec,fi_dec_tc --phase report --out $OUT/c/issue10 > $OUT/c/report.txt 2>&1
cd $OUT && tar czf c.tgz c && rm -rf c; ls -la $OUT
