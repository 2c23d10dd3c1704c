# price-platform: the commands a user needs. Everything installs into ./.venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# XGBoost's OpenMP threads oversubscribe small machines: one thread unless told otherwise.
export OMP_NUM_THREADS ?= 1
# Tools the platform runs as processes (dbt, mlflow, uvicorn, dagster) come from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-deps up demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev,bench]"
	touch $(STAMP)

# Debian packages the tests start: Prometheus (promtool), Chromium for UI screenshots, nginx for the deploy proxy.
system-deps:
	@command -v promtool >/dev/null && command -v chromium >/dev/null && command -v nginx >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus chromium nginx >/dev/null; }

up: install
	$(BIN)/price-platform up

demo: install
	$(BIN)/price-platform demo

# A temp folder of this checkout's own: pytest resets its shared /tmp/pytest-of-<user> to owner-only
# at every start, which would lock the embedded PostgreSQL's OS user out of a concurrent run's data.
test: install system-deps
	$(BIN)/python -m pytest --basetemp=$(CURDIR)/.pytest-tmp $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf .price_platform .pytest-tmp dbt/target dbt/logs
