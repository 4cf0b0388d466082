# gunpy's build, lint and test entry points (GNU make).  `make help` lists them.
# Every target is idempotent and quick when there is nothing to do.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# The interpreter that makes the venv: python3.11 (pyenv shim or system), else python3.
PYTHON  ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
PIP_FLAGS ?= --quiet --disable-pip-version-check --no-input

# The install stamp's name says whether gunpy/ was a package when pip ran, so a venv
# made before gunpy/__init__.py existed is re-installed once it does.
STAMP       := $(VENV)/.stamp-test$(if $(wildcard gunpy/__init__.py),-pkg,)
BENCH_STAMP := $(VENV)/.stamp-bench
DOCS_STAMP  := $(VENV)/.stamp-docs

LINT_PATHS := $(wildcard gunpy tests benchmarks examples)
PYTEST_ARGS ?=

# Autobahn|Testsuite (tests/autobahn/): its Python 2.7 venv and its reports.
AUTOBAHN_DIR := .peers/autobahn
AUTOBAHN     := tests/autobahn

# Under CI (CI set and not 0/false) a missing peer fails its test instead of skipping.
ifneq ($(filter-out 0 false False no,$(CI)),)
export GUNPY_REQUIRE_PEERS := 1
endif

.PHONY: help venv peers autobahn lint typecheck test pytest demo bench conformance \
        conformance-quick soak docs clean distclean

help:
	@echo "make venv         $(VENV) with python3.11 and 'pip install -e .[test]' (again when setup.cfg changes)"
	@echo "make peers        install the Debian peers (nginx-light tinyproxy dante-server) if missing"
	@echo "make lint         ruff check $(LINT_PATHS)"
	@echo "make typecheck    mypy --strict on gunpy/"
	@echo "make test         venv + peers, then lint, typecheck and pytest (all run; fails if any failed)"
	@echo "make pytest       pytest alone (PYTEST_ARGS='-k ws' passes arguments)"
	@echo "make demo         run examples/demo.py"
	@echo "make bench        pip install -e .[bench] and run python -m benchmarks (BENCH_ARGS='--quick', '--scale-full')"
	@echo "make autobahn     install Autobahn|Testsuite (Python 2.7 venv in $(AUTOBAHN_DIR)) if missing"
	@echo "make conformance  Autobahn|Testsuite, all 517 cases, strict, beside Gun 2.4.1 (15-20 min);"
	@echo "                  writes docs/autobahn.md ('make conformance-quick': sections 1-10, ~20 s)"
	@echo "make soak         the leak tests at 10,000 cycles, then 500 connections for 10 min against a"
	@echo "                  fault-injecting server (SOAK_SECONDS=120, SOAK_CONNS=..., SOAK_FAULTS=...)"
	@echo "make docs         pip install -e .[docs] and build docs/ with Sphinx (when docs/conf.py exists)"
	@echo "make clean        remove caches and build output; 'make distclean' also removes $(VENV)"

# ---------------------------------------------------------------- environment

venv: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml gunpy/_speedups.c
	@if ! [ -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then \
	    [ -n "$(PYTHON)" ] || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }; \
	    echo "venv: creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
	    rm -rf $(VENV); \
	    $(PYTHON) -m venv $(VENV); \
	fi
	@echo "venv: pip install -e '.[test]'"
	$(PIP) install $(PIP_FLAGS) -e '.[test]'
	@rm -f $(VENV)/.stamp-test*
	@touch $@

peers:
	@bash tests/peers/install_debian_peers.sh

autobahn:
	@bash $(AUTOBAHN)/install_autobahn.sh

# ---------------------------------------------------------------- checks

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected (exit 5), not a failure"; rc=0; fi; \
	exit $$rc

# lint, typecheck and pytest all run, so one CI log shows every failure.
test: venv peers
	@failed=""; \
	echo "== lint";      $(MAKE) lint      || failed="$$failed lint"; \
	echo "== typecheck"; $(MAKE) typecheck || failed="$$failed typecheck"; \
	echo "== pytest$(if $(GUNPY_REQUIRE_PEERS), (GUNPY_REQUIRE_PEERS=1),)"; \
	$(MAKE) pytest || failed="$$failed pytest"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: lint, typecheck and pytest passed"

# ---------------------------------------------------------------- programs

demo: venv
	$(PY) examples/demo.py

$(BENCH_STAMP): $(STAMP) setup.cfg
	$(PIP) install $(PIP_FLAGS) -e '.[bench]'
	@touch $@

# The full comparison (~5 min on 2 cores): builds the Go echo server (apt-installs golang-go and
# golang-github-gorilla-websocket-dev if missing), needs nginx (make peers).
# BENCH_ARGS passes options: '--quick' (< 1 min), '--scale-full' (10,000 connections).
BENCH_ARGS ?=
bench: $(BENCH_STAMP)
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || $(MAKE) peers
	$(PY) -m benchmarks $(BENCH_ARGS)

# The full Autobahn run (sections 12/13, permessage-deflate, are 10-15 min of it), strict:
# every behaviorClose must be OK or INFORMATIONAL.  compare.py fails on any FAILED case or
# any case worse than Gun 2.4.1's and writes the table to docs/autobahn.md.  The report
# (HTML) stays in $(AUTOBAHN_DIR)/full.  Not part of `make test`, which runs sections
# 1-10 (tests/integration/test_autobahn.py); `make conformance-quick` runs those alone.
conformance: venv autobahn
	@rc=0; start=$$(date +%s); \
	$(PY) $(AUTOBAHN)/run_autobahn.py --strict --outdir $(AUTOBAHN_DIR)/full \
	    -- $(PY) $(AUTOBAHN)/client.py || rc=$$?; \
	wall=$$(( $$(date +%s) - start )); \
	echo "conformance: run took $${wall}s (exit $$rc)"; \
	if [ $$rc -le 1 ]; then \
	    $(PY) $(AUTOBAHN)/compare.py $(AUTOBAHN_DIR)/full/reports/clients --strict \
	        --markdown docs/autobahn.md \
	        --note "Wall time of the run (server start to report): $${wall} s on a $$(nproc)-core machine." \
	        --note "Full report: \`$(AUTOBAHN_DIR)/full/reports/clients/index.html\` (not in git)." \
	    || rc=1; \
	fi; \
	exit $$rc

conformance-quick: venv autobahn
	@rc=0; \
	$(PY) $(AUTOBAHN)/run_autobahn.py --strict --exclude '12.*' '13.*' --outdir $(AUTOBAHN_DIR)/quick \
	    -- $(PY) $(AUTOBAHN)/client.py || rc=$$?; \
	if [ $$rc -le 1 ]; then \
	    $(PY) $(AUTOBAHN)/compare.py $(AUTOBAHN_DIR)/quick/reports/clients --strict \
	        --exclude '12.*' '13.*' || rc=1; \
	fi; \
	exit $$rc

# The soak (not part of `make test`): the leak tests at their full scale (10,000
# open/request/close cycles against nginx, 1,000 Websocket sessions), then
# tests/reliability/soak.py: SOAK_CONNS connections kept busy for SOAK_SECONDS against
# tests/reliability/fault_server.py injecting faults (closes, resets, slow answers) with
# probability SOAK_FAULTS per request, and a ledger proving every request got exactly
# one final answer.  Both run; fails if either found a leak or a lost/doubled answer.
SOAK_SECONDS ?= 600
SOAK_CONNS   ?= 500
SOAK_FAULTS  ?= 0.05
soak: venv
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || $(MAKE) peers
	@rc=0; \
	echo "== soak: leaks (10,000 HTTP cycles, 1,000 Websocket sessions)"; \
	GUNPY_LEAK_CYCLES=10000 GUNPY_LEAK_WS_SESSIONS=1000 \
	    $(PY) -m pytest -q -s -p no:cacheprovider tests/reliability/test_leaks.py || rc=1; \
	echo "== soak: $(SOAK_CONNS) connections for $(SOAK_SECONDS) s"; \
	GUNPY_SOAK_SECONDS=$(SOAK_SECONDS) GUNPY_SOAK_CONNS=$(SOAK_CONNS) GUNPY_SOAK_FAULTS=$(SOAK_FAULTS) \
	    $(PY) -m tests.reliability.soak || rc=1; \
	exit $$rc

$(DOCS_STAMP): $(STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[docs]'
	@touch $@

docs: $(DOCS_STAMP)
	@if [ -f docs/conf.py ]; then \
	    $(VENV)/bin/sphinx-build -q -W --keep-going -b html docs docs/_build/html; \
	    echo "docs: docs/_build/html/index.html"; \
	else \
	    echo "docs: not yet (no docs/conf.py)"; \
	fi

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis docs/_build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) gunpy/*.so
