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
# On the device tool the parts (about 58 MiB together) travel beside the working tree, which a call copies too (42.7
# MiB of tracked files on 2026-12-02 leave 20 MiB a call: `python3 tools/wheelhouse/pieces.py room`), so in pieces:
#   make wheelhouse-pieces   here: .wheelhouse/pieces/partN/{pNN,manifest.json}, each piece what a call carries
#   (the tree grows with every docs/perf record: before a session, `pieces.py room`, and where a piece no longer fits,
#   `pieces.py recut --src .wheelhouse/pieces/partN --piece-mib auto`; a call over 64 MB (decimal) is refused)
#   there, one call per piece, each within the warm window of the last (carry .wheelhouse/pieces/partN/pNN and
#   .wheelhouse/pieces/partN/manifest.json; .wheelhouse/extra with any of them):
#     python3 tools/wheelhouse/pieces.py stash --src .wheelhouse/pieces/partN --store /tmp/wh-partN
#   then, for N = 1 and 2: python3 tools/wheelhouse/pieces.py assemble --store /tmp/wh-partN \
#     --dest /tmp/wh/partN/wheels-N.tar.xz; copy .wheelhouse/extra to /tmp/wh/extra; and install with
#   WHEELHOUSE=/tmp/wh bash tools/wheelhouse/install_offline.sh /tmp/pat-site (or, where the whole wheelhouse fits
#   one call: carry .wheelhouse/part1 .wheelhouse/part2 .wheelhouse/extra and run make ab AB_OUT=$OUT/ab)
# `ab`/`ab-install` never touch the CPU venv (no pip download there): they use the machine's python3 and torch.

AB_PY      ?= python3
AB_SITE    ?= /tmp/pat-site
AB_OUT     ?= docs/perf/ab/$(shell date +%F)
AB_MODEL   ?= configs/models/llama3-8b-4l
AB_BACKENDS ?= flashinfer,pat,triton
AB_ARGS    ?=

# FA3 (SGLang's default on Hopper) needs sgl_kernel/flash_ops.abi3.so, which the wheelhouse trims (1.12 GB unpacked):
#   make fa3-pieces          here: .fa3/pNN/piece.xz + .fa3/manifest.json (the 141 MiB xz stream in pieces of
#                            FA3_PIECE_MIB, by default what a call carries beside the working tree: 20 MiB, so eight
#                            on 2026-12-02, re-cut to 18 MiB the same day with a 43 MiB tree (still eight); `pieces.py
#                            recut --src .fa3 --piece-mib auto` re-cuts them as it grows)
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

.PHONY: wheelhouse wheelhouse-pat wheelhouse-pieces ab-install ab fa3-pieces gpu-check serving serving-plan serving-report

wheelhouse: $(STAMP)
	$(VPY) tools/wheelhouse/build.py

wheelhouse-pat: $(STAMP)
	$(VPY) tools/wheelhouse/build.py --only-pat

FA3_PIECE_MIB ?= auto
fa3-pieces: $(STAMP)
	$(VPY) tools/wheelhouse/pieces.py split --wheel $(wildcard .wheelhouse/dl/sglang_kernel-*.whl) --out .fa3 \
		--piece-mib $(FA3_PIECE_MIB)

# The wheelhouse's parts (already xz) cut as they are (preset 0) into pieces that fit a call beside the working tree.
WHEEL_PIECE_MIB ?= auto
wheelhouse-pieces: $(STAMP)
	for n in 1 2; do $(VPY) tools/wheelhouse/pieces.py split --file .wheelhouse/part$$n/wheels-$$n.tar.xz \
		--out .wheelhouse/pieces/part$$n --piece-mib $(WHEEL_PIECE_MIB) --preset 0 || exit 1; done

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
