# The project's commands. `make test` alone sets everything up and runs the whole gate.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: dev-install codegen proto-gen codegen-check test test-cov pytest lint fmt typecheck build demo bench clean

# The venv is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,hub]'
	@touch $(STAMP)

dev-install: $(STAMP)

codegen: $(STAMP)
	$(PY) -m codegen

proto-gen: codegen

codegen-check: $(STAMP)
	$(PY) -m codegen --check

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest -q

test: codegen-check lint typecheck pytest

test-cov: $(STAMP)
	$(PY) -m pytest -q --cov=aether --cov=codegen --cov-report=term-missing

build: $(STAMP)
	rm -rf dist
	$(PY) -m build --wheel --sdist --outdir dist

# Start an embedded Hub, run the Quickstart and code reviewer agents, submit tasks, print results.
demo: $(STAMP)
	$(PY) examples/demo.py

# Measure against DESIGN.md §7's budget (reports, does not gate; not part of `make test`).
bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache
