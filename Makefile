# The two commands of the README, and the set-up they share. Everything installs into this
# folder (.venv, node_modules, .local), so a fresh clone needs only Python 3.11, Node and npm.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.requirements-installed
NODE_STAMP := node_modules/.package-lock-installed

.PHONY: setup run test lint format bench bench-webhooks queues clean bench-portal

setup: $(PY_STAMP) $(NODE_STAMP) local.settings.json

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm not found; install Node.js 20 and npm" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

local.settings.json:
	cp local.settings.example.json $@

run: setup
	$(BIN)/python -m devhost run

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	@command -v hledger >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq hledger; } \
		|| echo "hledger could not be installed; its row of the benchmark is skipped" >&2
	$(BIN)/python -m bench.import_bench $(BENCH_ARGS)
	$(BIN)/python -m bench.webhooks_bench $(WEBHOOKS_BENCH_ARGS)

# The webhook intake and billing benchmark alone.
bench-webhooks: setup
	$(BIN)/python -m bench.webhooks_bench $(WEBHOOKS_BENCH_ARGS)

# The portal API benchmark: GL pages, trial balances and P&L at 50 users against bare SQL.
bench-portal: setup
	$(BIN)/python -m bench.portal_bench $(PORTAL_BENCH_ARGS)

# The Bicep queue definitions, from the one table in shared/messaging.py.
queues: setup
	$(BIN)/python -m shared.messaging > bicep/queues.json

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache
