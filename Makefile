# price-platform: the commands a user needs. Everything installs into ./.venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# XGBoost's OpenMP threads oversubscribe small machines: one thread unless told otherwise.
export OMP_NUM_THREADS ?= 1
# Tools the platform runs as processes (dbt, mlflow, uvicorn, dagster) come from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-deps up demo lint test bench clean

install: $(STAMP)

# Installs exactly uv.lock: every package of pyproject.toml and its dev and bench extras at the locked version,
# each download checked against the lock's SHA-256, plus this project itself editable (from the lock, so no deps
# of its own are resolved); whatever else was installed goes, except the venv's pip, setuptools and uv.
# Why uv.lock + `uv sync --frozen` rather than `uv pip compile --generate-hashes` + `uv pip sync --require-hashes`:
# one file, one command, the editable project included, a lock that holds every platform's wheels (macOS and
# Windows users get the same versions), and `uv lock --check` (.ci/run, test_lock_file.py) says in one line when
# pyproject.toml and the lock disagree. --frozen installs the lock as written, never re-resolving, so it works
# offline from uv's cache. After editing pyproject.toml's dependencies: `.venv/bin/uv lock`, commit uv.lock.
# The stamp makes a second `make install` free; editing pyproject.toml or uv.lock re-runs it.
UV_VERSION := 0.13.9
$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/uv --version 2>/dev/null | grep -qw 'uv $(UV_VERSION)' || \
	  $(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync -q --frozen --extra dev --extra bench
	touch $(STAMP)

# Debian packages the tests start: Prometheus (promtool), Chromium for UI screenshots, nginx for the deploy proxy.
system-deps:
	@command -v promtool >/dev/null && command -v chromium >/dev/null && command -v nginx >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus chromium nginx >/dev/null; }

up: install
	$(BIN)/price-platform up

demo: install
	$(BIN)/price-platform demo $(DEMO_ARGS)

# ruff with the configuration in pyproject.toml: pycodestyle, pyflakes, import order, naming, blind except, bugbear.
lint: install
	$(BIN)/ruff check .

# A temp folder of this checkout's own: pytest resets its shared /tmp/pytest-of-<user> to owner-only
# at every start, which would lock the embedded PostgreSQL's OS user out of a concurrent run's data.
test: install system-deps
	$(BIN)/python -m pytest --basetemp=$(CURDIR)/.pytest-tmp $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf .price_platform .pytest-tmp dbt/target dbt/logs
