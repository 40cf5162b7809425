# The verbs people type. Every target bootstraps what it needs on a fresh machine:
# a virtualenv with the project installed, and (for run/test/bench) a local Kafka broker.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: system-deps install sdk-node run test unit lint format bench bench-quick chaos clean kafka-start kafka-stop schemas

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python >= 3.11 is needed (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# setuptools tells every editable install to mind same-named folders: not news here
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The official Node SDKs (Resend, Mailgun) that the integration tests drive: installed from
# tests/sdk/node/package-lock.json. Without npm the Node tests skip, except in CI (CI=true),
# where this fails (scripts/system-deps.sh installs node and npm).
SDK_NODE := tests/sdk/node
$(SDK_NODE)/node_modules/.package-lock.json: $(SDK_NODE)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(SDK_NODE) --no-audit --no-fund --loglevel=error; \
	elif [ "$${CI:-}" = true ]; then \
	  echo "error: npm is needed for the Node SDK tests (run make system-deps)"; exit 1; \
	else echo "warning: npm not found; the Node SDK tests will skip (make system-deps)"; fi

sdk-node: $(SDK_NODE)/node_modules/.package-lock.json

## run: the whole pipeline on the embedded default (local broker, dev SMTP sink); Ctrl-C stops it
run: install
	$(BIN)/kairos up

## system-deps: Debian packages the integration tests drive (Postfix, ...), when missing and root
system-deps:
	@bash scripts/system-deps.sh

## test: the full suite (unit + integration on a real broker this target starts and stops)
test: install sdk-node
	@bash scripts/with-broker.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

## unit: the fast tests only (no broker)
unit: install
	$(BIN)/python -m pytest -m "not kafka" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## schemas: regenerate the committed JSON Schema files from the models
schemas: install
	$(BIN)/python -m schemas.jsonschema

## bench: benchmarks against the raw broker (not part of make test); docs/bench.md
bench: install
	@$(BIN)/python -c 'import matplotlib, aiohttp' 2>/dev/null || PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e '.[dev,bench]'
	@bash scripts/with-broker.sh $(BIN)/python -m bench $(BENCH_ARGS)

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS="--quick $(BENCH_ARGS)"

## chaos: the full fault trials (broker down 60 s and 120 s, frozen 30 s, kill -9 of each service and of
## the broker, under load) on a broker of their own; `make test` runs their short form.
## Tables in $(CHAOS_REPORT), logs under $(CHAOS_TMP); docs/operations.md says what is checked
CHAOS_REPORT ?= .kairos/chaos-report.txt
CHAOS_TMP ?= .kairos/chaos
chaos: install
	@mkdir -p $(dir $(CHAOS_REPORT)) && : > $(CHAOS_REPORT)
	KAIROS_CHAOS=long KAIROS_CHAOS_REPORT=$(CHAOS_REPORT) $(BIN)/python -m pytest tests/chaos -s -p no:cacheprovider --basetemp=$(CHAOS_TMP) $(PYTEST_ARGS); \
	  rc=$$?; echo "chaos report: $(CHAOS_REPORT)"; exit $$rc

kafka-start: install
	$(BIN)/kairos kafka start

kafka-stop: install
	$(BIN)/kairos kafka stop

clean:
	-$(BIN)/kairos kafka stop
	rm -rf .kairos $(VENV) .pytest_cache .mypy_cache .ruff_cache
