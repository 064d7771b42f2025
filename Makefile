# The two commands of the README, and the set-up they share. Everything installs into this
# folder (.venv, node_modules, .local), so a fresh clone needs only Python 3.11, Node and npm.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.requirements-installed
NODE_STAMP := node_modules/.package-lock-installed

.PHONY: setup run test lint format bench bench-webhooks bench-quickbooks bench-durable bench-portal queues clean deploy checkov gameday

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

# The QuickBooks push benchmark alone (not part of `make bench`' import run).
bench-quickbooks: setup
	$(BIN)/python -m bench.quickbooks_bench $(QUICKBOOKS_BENCH_ARGS)

# The Durable engine benchmark: a six-activity chain and a fan-out, against direct calls.
bench-durable: setup
	$(BIN)/python -m bench.durable_bench $(DURABLE_BENCH_ARGS)

# The portal API benchmark: GL pages, trial balances and P&L at 50 users against bare SQL.
bench-portal: setup
	$(BIN)/python -m bench.portal_bench $(PORTAL_BENCH_ARGS)

# The Bicep queue definitions, from the one table in shared/messaging.py.
queues: setup
	$(BIN)/python -m shared.messaging > bicep/queues.json

# Checkov's Bicep checks, with the skips and their reasons in .checkov.yaml. Checkov lives in
# a virtual environment of its own: its pins conflict with requirements-dev.txt.
CHECKOV_VENV := .venv-checkov

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml --quiet

# What-if, deploy and publish to one environment (ENV=dev or ENV=prod); see docs/operations.md.
deploy:
	@test -n "$(ENV)" || { echo "usage: make deploy ENV=dev|prod" >&2; exit 2; }
	scripts/deploy.sh $(ENV)

# Faults on a devhost of its own while Stripe events flow in; see docs/operations.md.
gameday: setup
	$(BIN)/python scripts/gameday.py $(GAMEDAY_ARGS)

# The document pipeline benchmark: 500 PDFs through the blob trigger's handler to the
# database against bare text extraction (options in DOCUMENTS_BENCH_ARGS).
.PHONY: bench-documents
bench-documents: setup
	$(BIN)/python -m bench.documents_bench $(DOCUMENTS_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) dist node_modules .local .pytest_cache .mypy_cache .ruff_cache
