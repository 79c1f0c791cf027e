# The two commands of the README:  `make run`  (whole pipeline, locally)  and  `make test`.
# Both bootstrap from nothing: a private uv in .tools/, the locked environment in .venv/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
RUN_EXTRAS := --extra broker --extra lake --extra warehouse --extra dashboard
export UV_PYTHON := $(PYTHON)
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Bytecode compiled at install, as pip does (uv does not by default): where
# PYTHONDONTWRITEBYTECODE is set (this machine, many images) every process would otherwise compile
# its imports from source, each time: `sysmetrics --help` 0.47 s instead of 0.22 s, the collector
# 5 MB more resident memory. `src/` too: the editable install's own modules.
export UV_COMPILE_BYTECODE := 1

.PHONY: run test install install-dev lint typecheck unit explore bench schema clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(UV):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(UV)  ## locked runtime environment (collector, lake, warehouse, dashboard)
	$(UV) sync --locked $(RUN_EXTRAS)
	$(VENV)/bin/python -m compileall -q src

ACTIONLINT_VERSION := v1.7.12
NATIVE_TARGET := $(HOME)/.cache/sysmetrics/native-target

install-dev: $(UV)  ## locked environment with every extra and the test tools
	$(UV) sync --locked --all-extras
	$(VENV)/bin/python -m compileall -q src
	bash scripts/install-system-deps.sh
	# The optional compiled codec (native/, Rust + PyO3) when cargo is here; its build is cached
	# across clones like the Kafka jars. Without it the same code runs in Python, slower.
	! command -v cargo >/dev/null || CARGO_TARGET_DIR=$(NATIVE_TARGET) \
	  $(UV) pip install --quiet --python $(VENV)/bin/python ./native || \
	  echo "note: native/ not built: ingest and the lake writer decode in Python" >&2
	# actionlint (checks .github/workflows) built from its source through the Go proxy.
	test -x $(TOOLS)/bin/actionlint || ! command -v go >/dev/null || \
	  GOBIN=$(abspath $(TOOLS))/bin go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION) || \
	  echo "note: actionlint not built: the workflow check will be skipped" >&2
	test -x .bqemu/bin/bqemulator || ($(UV) venv -q .bqemu && \
	  $(UV) pip install -q --python .bqemu/bin/python -r tests/bigquery/requirements.lock && \
	  .bqemu/bin/python -c "from duckdb_extensions import import_extension; import_extension('spatial')")

run: install  ## start the whole pipeline on this machine (Ctrl-C stops everything)
	$(VENV)/bin/sysmetrics up

lint:
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck:
	$(VENV)/bin/mypy

test: install-dev  ## lint, type check and the whole test suite (Tansu and Apache Kafka)
	$(MAKE) --no-print-directory lint typecheck
	# Two workers, one test file each at a time (a file's brokers and clusters start once): most
	# of the suite's time is fault tests waiting out outages, which overlap well on two cores.
	$(VENV)/bin/pytest -n 2 --dist loadfile

unit: $(UV)  ## the fast tests only
	$(VENV)/bin/pytest tests/unit

explore: $(UV)  ## the fast tests with new random Hypothesis cases (make test replays fixed ones)
	HYPOTHESIS_PROFILE=explore $(VENV)/bin/pytest tests/unit

bench: install-dev  ## run every benchmark (prints numbers and ratios)
	for b in benchmarks/*.py benchmarks/e2e/*.py; do $(VENV)/bin/python $$b || exit 1; done

schema:  ## regenerate schemas/machine_metrics.v1.json from the typed model
	$(VENV)/bin/python -m sysmetrics.schema

clean:
	rm -rf $(TOOLS) $(VENV) .bqemu data .pytest_cache .mypy_cache .ruff_cache
