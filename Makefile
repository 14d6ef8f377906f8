# promo-bridge developer entry points. `make run` and `make test` are the README's quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run chaos test lint typecheck unit integration kafka-fetch bench bench-e2e bench-fuzz bench-ledger schemas deploy-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

kafka-fetch: ## download the Kafka jars once (cached under ~/.cache/promo-bridge)
	$(PYTHON) scripts/kafka_broker.py fetch

run: venv kafka-fetch ## broker + simulator + service on the examples, then the outcome table
	$(PY) scripts/demo.py

chaos: venv kafka-fetch ## SIGKILL, SIGTERM churn, broker outage, API faults; ARGS=--quick for ~3 min
	$(PY) scripts/chaos.py $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit -q

test: venv kafka-fetch lint typecheck ## the whole suite: lint, types, unit, integration, e2e
	$(VENV)/bin/pytest -q --durations=10

bench: venv
	$(PY) bench/bench_pipeline.py

bench-e2e: venv kafka-fetch ## bare aiokafka loop vs the service on one real broker, then latency; ARGS=--events 5000
	$(PY) bench/bench_e2e.py $(ARGS)

bench-ledger: venv ## holdings ledger: state-topic size, memory and restore time; ARGS=--orders 1000000
	$(PY) bench/bench_ledger.py $(ARGS)

bench-fuzz: venv kafka-fetch ## 10,000 malformed + 1,000 good records on a real broker: DLQ, commits, peak RSS
	$(PY) bench/fuzz_liveness.py $(ARGS)

schemas: venv ## regenerate schemas/ from the pydantic models
	$(PY) scripts/gen_schemas.py

deploy-check: venv ## lint Dockerfile, chart, alerts, dashboard, metrics (pinned tools, cached)
	bash scripts/check_deploy.sh

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache .hypothesis
