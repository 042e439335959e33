# COO — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed
FULL   := $(VENV)/.installed-bench
# uv installs every dependency from uv.lock. This version bootstraps it; the lock pins the same
# one (the dev extra), so a sync keeps it. tests/unit/test_lock.py checks that the two agree.
UV_VERSION := 0.13.9
# `uv sync --locked` fails when uv.lock is out of date with pyproject.toml instead of re-resolving.
SYNC   := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --quiet

.PHONY: sandbox-deps install run test test-unit test-integration test-e2e lint fmt typecheck bench up system-deps upgrade clean

install: $(STAMP)

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --inexact: a venv that also holds the bench extra keeps it (the exact versions are the lock's either way).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(SYNC) --inexact --extra dev
	@touch $(STAMP)

# The peers the benchmark compares COO with (Celery, DBOS, Temporal): for `make test` (its quick
# benchmark smoke test) and `make bench`, not for `make run`.
$(FULL): $(STAMP)
	$(SYNC) --extra dev --extra bench
	@touch $(FULL)

## Refresh the whole lock to the newest releases pyproject.toml's ranges allow (PACKAGE=name for one).
upgrade: | $(UV)
	$(UV) lock $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)
	@git diff --stat -- uv.lock 2>/dev/null || true

## Start everything (embedded Postgres and NATS unless COO_DATABASE_URL / COO_NATS_URL are set),
## migrate, run the demo mission and keep serving until Ctrl-C.
run: install sandbox-deps
	$(BIN)/coo up --demo

## Install what is needed and run the whole suite.
test: $(FULL) system-deps
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

## bubblewrap and socat, the sandbox's jail, from the system packages when this machine can.
sandbox-deps:
	@./scripts/install-system-deps.sh --sandbox || echo "bubblewrap/socat not installed: see README (Troubleshooting)"

## The jail, Prometheus and Alertmanager (promtool, amtool) from the system packages, when this machine can.
system-deps:
	@./scripts/install-system-deps.sh || echo "system packages not installed; tests that need them are skipped"

## ruff (format and lint) and mypy strict, all from the lock.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

## Side-by-side benchmarks against Celery, DBOS and Temporal (QUICK=1 for the two-minute profile).
bench: $(FULL) system-deps
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

up:
	docker compose -f deploy/docker-compose.yml up

clean:
	rm -rf $(VENV) .coo build .pytest_cache .mypy_cache .ruff_cache
