# All set-up lives here so that a fresh machine gets the same environment from `make demo` / `make test`.
PY        ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
STAMP     := $(VENV)/.pat-installed
REQS      := requirements/cpu-base.txt requirements/sglang-cpu-nodeps.txt pyproject.toml

.PHONY: demo test lint install bench clean

$(STAMP): $(REQS)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements/cpu-base.txt
	# --no-deps: a resolver must never pick torch or pull SGLang's GPU-only dependencies.
	$(VPY) -m pip install -q --no-deps -r requirements/sglang-cpu-nodeps.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) -m pat_sglang.demo

test: $(STAMP)
	$(VPY) -m ruff check pat_sglang tests bench tools
	$(VPY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VPY) -m ruff check pat_sglang tests bench tools

bench: $(STAMP)
	$(VPY) bench/plan_speed.py

clean:
	rm -rf $(VENV)
-include mk/serving.mk
