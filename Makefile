# Every target sets itself up: a fresh machine needs only Python 3.11+ and make.
# What gets installed is requirements/lock.txt (every package pinned, with its hashes), so a
# machine set up next month runs what today's tests passed with. See docs/development.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed
LATEST := .venv-latest
# The MCP Inspector's CLI for tests/test_inspector.py, from its lock; only where node is installed.
JS := tests/js
INSPECTOR := $(JS)/node_modules/.installed
CORPUS_VENV := .venv-corpus
# The review view (ui/): its locked build tools and the browser its tests drive.
UI := ui
UI_DEPS := $(UI)/node_modules/.installed
CHROMIUM := /usr/bin/chromium
# Debian's package of the Japanese font the screenshots need (bookworm's; chromium itself follows
# Debian's security updates, whose old versions leave the mirror, so it is not pinned)
JA_FONT := fonts-ipafont-gothic=00303-23
# uv uses the Python that made the venv and never downloads one of its own.
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup demo config test test-latest lint typecheck pytest bench simulator lock clean ui browser corpus corpus-venv dialogues

$(STAMP): $(LOCK) requirements/uv.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
		{ echo "$(PYTHON) has no venv/ensurepip: on Debian or Ubuntu, apt-get install python3-venv"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv (pinned, hash-checked) is the one package pip installs; uv installs the rest from the lock
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/uv.txt
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $(STAMP)

$(INSPECTOR): $(JS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(JS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: tests/test_inspector.py will be skipped"; fi

$(UI_DEPS): $(UI)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(UI) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the review view's build check and browser tests will be skipped"; fi

## ui: rebuild the review view (server/cte1_mcp/app/review.html, committed) from ui/src
ui: $(UI_DEPS)
	cd $(UI) && node build.mjs

## browser: Debian's chromium and a Japanese font for the review view's browser tests (as root)
browser:
	@if [ -x $(CHROMIUM) ] && dpkg-query -W -f='$${Status}' fonts-ipafont-gothic 2>/dev/null | grep -q installed; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium $(JA_FONT); \
	else echo "$(CHROMIUM) or the Japanese font is missing and this is not root with apt-get:" \
		"the review view's browser tests will be skipped (apt-get install chromium fonts-ipafont-gothic)"; fi

## setup: create .venv from the lock (every other target does this first)
setup: $(STAMP)

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

pytest: $(STAMP) $(INSPECTOR) $(UI_DEPS) browser
	$(BIN)/pytest

## test-latest: the same checks against the newest versions pyproject.toml allows (a scratch venv)
test-latest: $(STAMP) $(INSPECTOR) $(UI_DEPS) browser
	rm -rf $(LATEST)
	$(BIN)/uv venv --quiet --python $(BIN)/python $(LATEST)
	$(BIN)/uv pip install --quiet --python $(LATEST)/bin/python --upgrade -e '.[dev]'
	$(BIN)/uv pip list --python $(LATEST)/bin/python --format freeze > $(LATEST)/versions.txt
	@echo "newest allowed versions that differ from the lock:"
	@$(BIN)/python scripts/lock_diff.py $(LOCK) $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/ruff format --check .
	$(LATEST)/bin/mypy
	$(LATEST)/bin/pytest

## lock: re-resolve the newest versions pyproject.toml allows into the lock (then run make test)
lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --upgrade \
		--extra dev pyproject.toml requirements/setup.in -o $(LOCK)
	$(BIN)/python scripts/lock_diff.py --extract uv $(LOCK) > requirements/uv.txt

## bench: the side-by-side benchmark; writes bench/results/latest.md
bench: $(STAMP)
	$(BIN)/python -m bench

## corpus: regenerate tests/corpus_ja/ (Japanese TTS speech) in its own venv, .venv-corpus
corpus: corpus-venv
	KOKORO_JA_CACHE=$(CORPUS_VENV)/kokoro-model $(CORPUS_VENV)/bin/python scripts/make_ja_corpus.py --cache $(CORPUS_VENV)/tts-cache

## dialogues: regenerate the sample calls' Japanese sentences (simulator/speech/dialogues_ja.*), same venv and clip cache
dialogues: corpus-venv
	KOKORO_JA_CACHE=$(CORPUS_VENV)/kokoro-model $(CORPUS_VENV)/bin/python scripts/make_ja_dialogues.py --cache $(CORPUS_VENV)/tts-cache

corpus-venv: $(STAMP)
	@test -x $(CORPUS_VENV)/bin/python || $(BIN)/uv venv --quiet --python $(BIN)/python $(CORPUS_VENV)
	$(BIN)/uv pip sync --quiet --python $(CORPUS_VENV)/bin/python --require-hashes requirements/corpus.txt

simulator: $(STAMP)
	$(BIN)/cte1-mcp simulator

clean:
	rm -rf $(VENV) $(LATEST) $(JS)/node_modules $(UI)/node_modules .pytest_cache .mypy_cache .ruff_cache cte1-demo
