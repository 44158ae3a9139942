# Offline wheelhouse and serving A/B (issue 5). Included by the main Makefile (`-include mk/serving.mk`).
#
#   make wheelhouse          here (PyPI reachable): .wheelhouse/part{1,2}/wheels-N.tar.xz + .wheelhouse/extra/
#   make ab-install          there (GPU machine, no network): install the carried parts into $(AB_SITE)
#   make ab                  there: ab-install, then bench/ab_serving.py (flashinfer, pat, triton) -> $(AB_OUT)
#   make serving             there: ab-install, then bench/serving_sweep.py (sglang.bench_serving, issue 11): the
#                            points of $(SERVING_WORKLOADS) x loads not yet in $(SERVING_OUT)/results.jsonl (or in
#                            $(SERVING_PRIOR)) that fit $(SERVING_BUDGET) s; run it again to go on
#   make serving-plan        here: what `make serving` would run (measured / pending / deferred), and the commands
#   make serving-report      here: results.md, results.csv, serving.png from $(SERVING_OUT)/results.jsonl
#
# On the device tool: carry .wheelhouse/part1 .wheelhouse/part2 .wheelhouse/extra (about 58 MiB together) and run
#   make ab AB_OUT=$OUT/ab
# `ab`/`ab-install` never touch the CPU venv (no pip download there): they use the machine's python3 and torch.

AB_PY      ?= python3
AB_SITE    ?= /tmp/pat-site
AB_OUT     ?= docs/perf/ab/$(shell date +%F)
AB_MODEL   ?= configs/models/llama3-8b-4l
AB_BACKENDS ?= flashinfer,pat,triton
AB_ARGS    ?=

# FA3 (SGLang's default on Hopper) needs sgl_kernel/flash_ops.abi3.so, which the wheelhouse trims (1.12 GB unpacked):
#   make fa3-pieces          here: .fa3/pNN/piece.xz + .fa3/manifest.json (the xz stream in FA3_PIECES equal
#                            pieces, 47.1 MiB for three: a piece and the working tree, 15.5 MB on 2026-11-30, must
#                            fit one 64 MiB transfer; `pieces.py recut` re-cuts them as the tree grows)
#   there, one device call per piece (carry .fa3/pNN and .fa3/manifest.json), within the warm window:
#     python3 tools/wheelhouse/pieces.py stash --src .fa3 --store /tmp/fa3
#   then: python3 tools/wheelhouse/pieces.py assemble --store /tmp/fa3 --dest $(AB_SITE)/sgl_kernel/flash_ops.abi3.so
# FlashInfer's compiled kernels (229-280 s of JIT in a fresh machine's first server start) come back the other way,
# once compiled there (2026-11-30: the serving set, one 3.0 MiB piece of 12.9 MiB, is in .fi-aot/ here)
# (tools/wheelhouse/fi_aot.py: a restored JIT cache would be rebuilt, its AOT folder is loaded as is):
#   python3 tools/wheelhouse/fi_aot.py pack --cache /tmp/fi-cache --out $OUT/fi     (15 MiB pieces; 64 MiB a call)
#   copy $OUT/fi here to .fi-aot/ (git-ignored); on the next machine, one call per piece (carry .fi-aot/pNN and
#   .fi-aot/manifest.json): pieces.py stash --src .fi-aot --store /tmp/fi-aot; then pieces.py assemble --store
#   /tmp/fi-aot --dest /tmp/fi-aot.tar && python3 tools/wheelhouse/fi_aot.py install --tar /tmp/fi-aot.tar \
#   --site $(AB_SITE)

# Serving sweep (bench/serving_sweep.py; bench/README.md "Serving sweep"). On the device tool, e.g.
#   make serving SERVING_OUT=$OUT/serving SERVING_PRIOR=docs/perf/serving/NAME/results.jsonl \
#        SERVING_WORKLOADS=gsp,gsp-deep SERVING_LOADS=c64,c256
# then copy $OUT/serving/ over docs/perf/serving/NAME/ (results.jsonl holds every point so far).
SERVING_OUT       ?= docs/perf/serving/$(shell date +%F)
SERVING_PRIOR     ?=
SERVING_BACKENDS  ?= fa3,pat@fa3
SERVING_WORKLOADS ?= gsp,gsp-deep,mooncake,rollout,random
SERVING_LOADS     ?=
SERVING_BUDGET    ?= 480
SERVING_ARGS      ?=
SERVING_SEL        = --backends $(SERVING_BACKENDS) --workloads $(SERVING_WORKLOADS) $(if $(SERVING_LOADS),--loads \
                     $(SERVING_LOADS)) --out $(SERVING_OUT) $(addprefix --prior ,$(SERVING_PRIOR))

.PHONY: wheelhouse wheelhouse-pat ab-install ab fa3-pieces gpu-check serving serving-plan serving-report

wheelhouse: $(STAMP)
	$(VPY) tools/wheelhouse/build.py

wheelhouse-pat: $(STAMP)
	$(VPY) tools/wheelhouse/build.py --only-pat

FA3_PIECES ?= 3
fa3-pieces: $(STAMP)
	$(VPY) tools/wheelhouse/pieces.py split --wheel $(wildcard .wheelhouse/dl/sglang_kernel-*.whl) --out .fa3
	$(VPY) tools/wheelhouse/pieces.py recut --src .fa3 --pieces $(FA3_PIECES)

$(AB_SITE)/.installed:
	PYTHON=$(AB_PY) bash tools/wheelhouse/install_offline.sh $(AB_SITE)
	touch $@

ab-install: $(AB_SITE)/.installed

ab: ab-install
	PYTHONPATH=$(AB_SITE) PYTHONUNBUFFERED=1 $(AB_PY) bench/ab_serving.py --model $(AB_MODEL) \
		--backends $(AB_BACKENDS) --out $(AB_OUT) $(AB_ARGS)

serving: ab-install
	PYTHONPATH=$(AB_SITE) PYTHONUNBUFFERED=1 $(AB_PY) bench/serving_sweep.py --budget-s $(SERVING_BUDGET) \
		$(SERVING_SEL) $(SERVING_ARGS)

serving-plan: $(STAMP)
	$(VPY) bench/serving_sweep.py --dry-run $(SERVING_SEL) $(SERVING_ARGS)

serving-report: $(STAMP)
	$(VPY) bench/serving_sweep.py --report-only --backends $(SERVING_BACKENDS) --out $(SERVING_OUT) $(SERVING_ARGS)

# The GPU correctness suite and the long-private-row sweep (the table's build beside fa3 and FlashInfer
# when importable), into GPU_OUT (two files): the first call after kernel changes made without a GPU.
GPU_OUT ?= /tmp/gpu-check
gpu-check: ab-install
	mkdir -p $(GPU_OUT)
	PYTHONPATH=$(CURDIR):$(AB_SITE) $(AB_PY) -m pytest -q -p no:cacheprovider -m gpu tests/gpu > $(GPU_OUT)/gpu-tests.txt 2>&1; \
		tail -3 $(GPU_OUT)/gpu-tests.txt
	PYTHONPATH=$(CURDIR):$(AB_SITE) $(AB_PY) bench/tile_sweep.py --variants --reps 30 > $(GPU_OUT)/tile-sweep.txt 2>&1; \
		tail -8 $(GPU_OUT)/tile-sweep.txt
