# The project's commands. `make test` alone sets everything up and runs the whole gate.
#
# Installs are locked: uv (itself pinned by hash in requirements/uv.txt) syncs .venv to exactly
# what uv.lock lists. `--locked` makes the sync fail when pyproject.toml and uv.lock disagree;
# after changing dependencies in pyproject.toml run `make lock` and commit uv.lock.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
EXTRAS := --extra dev --extra hub

# uv reads no pip.conf; keep it on the interpreter we give it and on .venv.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1

.PHONY: sync dev-install lock lock-upgrade codegen proto-gen codegen-check test test-cov pytest \
	test-slow fuzz test-fresh lint fmt typecheck build demo bench clean

$(UV): requirements/uv.txt
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	PIP_CONFIG_FILE=/dev/null $(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--require-hashes -r requirements/uv.txt
	@touch $(UV)

# Always run (a no-op in well under a second when .venv already matches the lock): the venv is
# exactly the lock, extraneous packages are removed, and a stale lock fails the gate here.
sync: $(UV)
	$(UV) sync --locked --quiet $(EXTRAS)

dev-install: sync

# Re-resolve after editing pyproject.toml (keeps every pin that still satisfies it).
lock: $(UV)
	$(UV) lock

# Move every pin to the newest release pyproject.toml allows.
lock-upgrade: $(UV)
	$(UV) lock --upgrade

codegen: sync
	$(PY) -m codegen

proto-gen: codegen

codegen-check: sync
	$(PY) -m codegen --check

lint: sync
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: sync
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: sync
	$(PY) -m mypy

# Hypothesis runs the derandomized "gate" profile (tests/conftest.py): same commit, same result.
pytest: sync
	@scripts/ensure-chromium
	$(PY) -m pytest -q

test: codegen-check lint typecheck pytest

# The long variants of tests/reliability (marked slow; `make test` leaves them out): minutes.
test-slow: sync
	$(PY) -m pytest -q -m slow

# Coverage starts before pytest, so the `aether` pytest plugin (imported by pytest's entry
# points, i.e. before pytest-cov would start) is measured like everything else.
test-cov: sync
	rm -f .coverage .coverage.*
	$(PY) -m coverage run -m pytest -q -p no:cacheprovider; status=$$?; \
		$(PY) -m coverage combine --quiet && $(PY) -m coverage report; exit $$status

# The property tests with random seeds and many more examples (minutes): before a codec change.
fuzz: sync
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/generated tests/codegen/test_roundtrip.py \
		tests/hubserver/test_hub_queue_invariants.py

# The gate in a fresh clone of HEAD with a new venv: proves nothing left on this machine (the
# venv, caches of generated files, untracked files) is needed. Commit first: it tests HEAD.
test-fresh:
	tmp=$$(mktemp -d) && git clone --quiet . $$tmp/repo && $(MAKE) -C $$tmp/repo test; \
		status=$$?; rm -rf $$tmp; exit $$status

build: sync
	rm -rf dist
	$(PY) -m build --wheel --sdist --outdir dist

# Start an embedded Hub, run the Quickstart and code reviewer agents, submit tasks, print results.
demo: sync
	$(PY) examples/demo.py

# Measure against the performance budget in docs/ (reports, does not gate; not in `make test`).
bench: sync
	mkdir -p bench
	$(PY) -m benchmarks --json bench/results.json

clean:
	rm -rf $(VENV) $(TOOLS) dist build .mypy_cache .ruff_cache .pytest_cache .coverage
