# The quick start is `make demo` and `make test`; each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
HPOD := $(VENV)/bin/hpod

.PHONY: setup postgres demo test test-slow test-all bench lint format

setup: $(VENV)/.installed

# torch first and pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned torch
# would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The several-hosts tests start a throwaway PostgreSQL cluster (tests/postgres.py): Debian's
# postgresql-15 server binaries, installed when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-15 >/dev/null; }

# The main job on the bundled data: queue a small study, let the daemon run it, show the result.
# Its state stays in the checkout's state/, so its daemon never starts studies of your own queue.
demo: export HPOD_HOME = $(CURDIR)/state
demo: setup
	$(HPOD) enqueue --budget 100K --horizon h5 --job jobs/tiny.yaml --max-epochs 6 --force
	$(HPOD) daemon --until-idle
	$(HPOD) report
	$(HPOD) status

test: setup postgres
	$(PY) -m pytest

# The crash test (ten kill -9s of a running daemon) and --verify of every default grid.
test-slow: setup postgres
	$(PY) -m pytest -m slow

test-all: setup postgres
	$(PY) -m pytest -m ""

# Benchmarks (not tests): HF's PatchTST is an optional bench dependency. Results: bench/RESULTS.md.
bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/throughput.py
	$(PY) bench/pruning.py
	$(PY) bench/overhead.py
	$(PY) bench/calibration.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
