# Every target sets itself up: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo config test lint typecheck pytest bench simulator serve clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: the server against the embedded CT-e1 simulator, no credentials needed
demo: $(STAMP)
	$(BIN)/cte1-mcp demo

## config: print a Claude Desktop configuration with this checkout's absolute command path
config: $(STAMP)
	@$(BIN)/cte1-mcp config

## test: lint, format check, strict type check, and the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## bench: the side-by-side benchmark; writes bench/results/latest.md
bench: $(STAMP)
	$(BIN)/python -m bench

simulator: $(STAMP)
	$(BIN)/cte1-mcp simulator

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache cte1-demo
