# `make run` and `make test` work on a bare machine with Python 3.11+:
# they create .venv, install the pinned requirements and start what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000

.PHONY: install run demo test test-resilience lint typecheck pytest migrate bench bench-gateway clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python -m shared.db.migrate

run: install
	$(BIN)/python scripts/services.py redis
	$(BIN)/python -m shared.db.migrate
	PYTHONPATH="$(CURDIR)" $(BIN)/python scripts/welcome.py
	# One EVENT_SIGNING_KEY for every process: the configured one, else ./data/event_signing_key.
	key="$$(PYTHONPATH="$(CURDIR)" $(BIN)/python scripts/signing_key.py)" && \
	EVENT_SIGNING_KEY="$$key" PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)" \
	$(BIN)/honcho start -f Procfile -p $(PORT)

demo: install
	PYTHONPATH="$(CURDIR)" $(BIN)/python scripts/demo.py --http-port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy gateway pipeline shared

pytest: install
	$(BIN)/python scripts/services.py redis postgres --test
	PYTHONPATH="$(CURDIR)" $(BIN)/pytest

test: lint typecheck pytest

# Minutes: the whole service as processes (own Redis, PostgreSQL, simulated node, API fakes)
# under kills and outages; writes data/resilience.json (RESILIENCE_RESULTS) and prints the table.
test-resilience: install
	$(BIN)/python scripts/services.py redis postgres --test
	PYTHONPATH="$(CURDIR)" $(BIN)/pytest -m resilience tests/resilience

bench: bench-gateway
	$(BIN)/python -m bench.chain
	$(BIN)/python -m bench.pipeline

# The gateway benchmark drives the servers with wrk; without it, say how to get it and go on.
bench-gateway: install
	@if command -v wrk >/dev/null 2>&1; then \
		PYTHONPATH="$(CURDIR)" $(BIN)/python bench/gateway.py; \
	else \
		echo "bench: wrk is not installed, so the gateway benchmark is skipped."; \
		echo "       Install it with: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk (macOS),"; \
		echo "       then run make bench again. The chain and pipeline benchmarks follow."; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
