# Huifang — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export PYTHONPATH := $(CURDIR)

.PHONY: install run test test-unit lint format bench bench-visits bench-soak wrk faults clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==0.13.9

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.synced

## Start PostgreSQL, the broker, topics, migrations, three APIs and their workers.
run: install
	$(PY) -m shared.devstack run

## The whole suite: unit, integration (per service) and end-to-end, on its own ports/data.
test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services tests

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## The real workers side by side with a raw consumer, latency, import, memory (~40 min at
## full size; shrink with BENCH_LOANS, BENCH_BURST, BENCH_SECONDS, BENCH_IMPORT; tests/bench/).
bench: install wrk
	@# The short dev JWT secret warns on every token; production refuses it anyway.
	$(PY) -W ignore::UserWarning -m tests.bench

## Only the visit capture phase: POST /v1/visits beside a bare insert endpoint under wrk
## (BENCH_CAPTURE_SECONDS, BENCH_CAPTURE_CONNECTIONS; a small portfolio unless BENCH_LOANS).
bench-visits: install wrk
	BENCH_LOANS=$${BENCH_LOANS:-1000} $(PY) -W ignore::UserWarning -m tests.bench visits

## The HTTP load generator of the capture bench, from Debian when it is missing.
wrk:
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
		else sudo apt-get install -y wrk || { sudo apt-get update && sudo apt-get install -y wrk; }; fi; }

## 1,000,000 postings through both workers, their memory every 100,000 (BENCH_SOAK=n).
bench-soak: install
	$(PY) -W ignore::UserWarning -m tests.bench soak

## The six real processes under faults (workers killed, PostgreSQL and broker restarted, a
## replica paused) while 20,000 postings flow; ~10 min. One scenario: make faults SCENARIO=db-restart
faults: install
	$(PY) -W ignore::UserWarning -m tests.faults $(SCENARIO)

clean:
	rm -rf $(VENV) $(TOOLS) .data .pytest_cache .mypy_cache .ruff_cache
