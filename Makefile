# The two commands: `make demo` and `make test`. Each creates .venv (stdlib venv) when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DURATION ?= 0
PYTEST_ARGS ?=
# make test runs in this many pytest-xdist workers: most tests wait on sockets and children,
# so two workers halve the run on two cores (9.8 -> 5.0 min here). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: demo test soak lint bench bench-requests docs check-python clean

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "nanomitter needs Python 3.11+; this is " + sys.version.split()[0] + " (set PYTHON=python3.11)")'

$(PY): | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev,cli,nats,docs,bench]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m nanomitter.demo --seconds $(DURATION)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Long runs (marked `soak` or `long`; make test skips them): faults, garbage sprays, slow
# consumers, the soak itself, and make bench's quick run. DURATION seconds of soak (default
# 60; CI).
SOAK_SECONDS = $(if $(filter 0,$(DURATION)),60,$(DURATION))
soak: $(VENV)/.installed-dev
	NANOMITTER_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -m "soak or long" tests $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Every benchmark side by side (< 10 min): prints one table, rewrites docs/benchmarks.png and the
# generated part of docs/benchmarks.md. One script alone, in full (with the sustainable-rate
# search): $(PY) benchmarks/memory.py (or nng.py, zmq_bench.py, nats_bench.py; --quick, --markdown).
bench: $(VENV)/.installed-dev
	$(PY) benchmarks/suite.py

# Request/reply round trips against each library's own request/reply, with the diagnostics
# (about 1.5 minutes; the table of docs/benchmarks.md's "Request/reply round trip" section).
bench-requests: $(VENV)/.installed-dev
	$(PY) benchmarks/request_bench.py --raw-loop block,asyncio --diagnostics --markdown

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
