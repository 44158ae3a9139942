# Fifty-second session, 2026-12-04, one nvidia-h200 machine (device tool), main at 7518496 (code of 0b4981c).
# The offline wheelhouse (make wheelhouse; make wheelhouse-pieces: 3 + 3 pieces of <= 12 MiB beside a 48 MiB tree)
# carried in five calls (stash per piece), assembled and installed in the fifth (install.log), then:
export PYTHONPATH=$PWD:/tmp/pat-site FLASHINFER_WORKSPACE_BASE=$PWD/.cache PAT_SGLANG_CACHE_DIR=/tmp/pat-cubin \
       PAT_SGLANG_LOG_INTERVAL_S=1
# call 5 (after the install; FlashInfer's JIT on the fresh machine in the first server's start, 217 s):
python3 bench/ab_serving.py --model configs/models/llama3-8b --backends flashinfer,pat@flashinfer \
  --workloads shared,mooncake --groups 4 --prompts-per-group 16 --system-len 4096 --question-len 256 \
  --output-len 256 --trace-n 64 --concurrency 64 --cuda-graph-max-bs 64 --budget-s 575 --startup-timeout-s 380 \
  --out $OUT/ab-bs64                                                                   # -> bs64/
# call 6:
python3 bench/ab_serving.py --model configs/models/llama3-8b --backends flashinfer,pat@flashinfer \
  --workloads shared,mooncake --groups 4 --prompts-per-group 64 --system-len 4096 --question-len 256 \
  --output-len 256 --trace-n 96 --concurrency 256 --cuda-graph-max-bs 256 --profile-steps 8 --profile-wait-s 20 \
  --budget-s 570 --startup-timeout-s 300 --out $OUT/ab-bs256                           # -> bs256/
# call 8 (sglang.bench_serving, trace output lengths): ../../serving/2026-12-04-h200-fiftysecond/
