# Every target sets up what it needs: a fresh machine only needs `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system demo test lint unit bench stack-up stack-down clean

setup: system $(VENV)/.installed

# Debian packages (ClickHouse server, Prometheus, Java, Maven); skipped when present.
system:
	@bash deploy/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
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

test: lint
	$(BIN)/pytest -q --timeout=1500

bench: setup
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.api_latency
	$(BIN)/python -m bench.metrics_cost

stack-up: setup
	$(BIN)/hallstats stack up

stack-down: setup
	$(BIN)/hallstats stack down

clean:
	-$(BIN)/hallstats stack down
	rm -rf $(VENV) .stack
