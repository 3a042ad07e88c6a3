# Every target sets up what it needs: a fresh machine only needs `make demo` or `make test`.
SHELL := /bin/bash
# Debian's /usr/bin/python3 is built with PGO and LTO: the worker needs about 2.4x less
# CPU per event on it than on a plain source build (see README, Benchmarks). Any
# python3 >= 3.11 with venv works; that one is preferred when present.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system demo test lint unit bench stack-up stack-down clean

setup: system $(VENV)/.installed

# Debian packages (ClickHouse server, Prometheus, Java, Maven); skipped when present.
system:
	@bash deploy/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
	@# A venv made by another interpreter is made again.
	@if [ -x $(VENV)/bin/python ] && [ "$$($(VENV)/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))')" != "$$($(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))')" ]; then rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/hallstats demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q --timeout=1500

bench: setup
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.state_growth
	$(BIN)/python -m bench.api_latency
	$(BIN)/python -m bench.metrics_cost
	$(BIN)/python -m bench.gateway_load

stack-up: setup
	$(BIN)/hallstats stack up

stack-down: setup
	$(BIN)/hallstats stack down

clean:
	-$(BIN)/hallstats stack down
	rm -rf $(VENV) .stack
