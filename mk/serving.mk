# Offline wheelhouse and serving A/B (issue 5). Included by the main Makefile (`-include mk/serving.mk`).
#
#   make wheelhouse          here (PyPI reachable): .wheelhouse/part{1,2}/wheels-N.tar.xz + .wheelhouse/extra/
#   make ab-install          there (GPU machine, no network): install the carried parts into $(AB_SITE)
#   make ab                  there: ab-install, then bench/ab_serving.py (flashinfer, pat, triton) -> $(AB_OUT)
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

.PHONY: wheelhouse wheelhouse-pat ab-install ab

wheelhouse: $(STAMP)
	$(VPY) tools/wheelhouse/build.py

wheelhouse-pat: $(STAMP)
	$(VPY) tools/wheelhouse/build.py --only-pat

$(AB_SITE)/.installed:
	PYTHON=$(AB_PY) bash tools/wheelhouse/install_offline.sh $(AB_SITE)
	touch $@

ab-install: $(AB_SITE)/.installed

ab: ab-install
	PYTHONPATH=$(AB_SITE) PYTHONUNBUFFERED=1 $(AB_PY) bench/ab_serving.py --model $(AB_MODEL) \
		--backends $(AB_BACKENDS) --out $(AB_OUT) $(AB_ARGS)
