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

# Under CI (CI set and not 0/false) a missing peer fails its test instead of skipping.
ifneq ($(filter-out 0 false False no,$(CI)),)
export GUNPY_REQUIRE_PEERS := 1
endif

.PHONY: help venv peers lint typecheck test pytest demo bench conformance soak docs clean distclean

help:
	@echo "make venv         $(VENV) with python3.11 and 'pip install -e .[test]' (again when setup.cfg changes)"
	@echo "make peers        install the Debian peers (nginx-light tinyproxy dante-server) if missing"
	@echo "make lint         ruff check $(LINT_PATHS)"
	@echo "make typecheck    mypy --strict on gunpy/"
	@echo "make test         venv + peers, then lint, typecheck and pytest (all run; fails if any failed)"
	@echo "make pytest       pytest alone (PYTEST_ARGS='-k ws' passes arguments)"
	@echo "make demo         run examples/demo.py"
	@echo "make bench        pip install -e .[bench] and run python -m benchmarks"
	@echo "make conformance  Autobahn|Testsuite (not yet)"
	@echo "make soak         long-running soak tests (not yet)"
	@echo "make docs         pip install -e .[docs] and build docs/ with Sphinx (when docs/conf.py exists)"
	@echo "make clean        remove caches and build output; 'make distclean' also removes $(VENV)"

# ---------------------------------------------------------------- environment

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
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

$(BENCH_STAMP): $(STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks

conformance: venv
	@echo "conformance: not yet (Autobahn|Testsuite against gunpy's WebSocket client)"

soak: venv
	@echo "soak: not yet"

$(DOCS_STAMP): $(STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[docs]'
	@touch $@

docs: $(DOCS_STAMP)
	@if [ -f docs/conf.py ]; then \
	    $(VENV)/bin/sphinx-build -q -W -b html docs docs/_build/html; \
	    echo "docs: docs/_build/html/index.html"; \
	else \
	    echo "docs: not yet (no docs/conf.py)"; \
	fi

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis docs/_build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
