# Every target installs what it needs into .venv, so each works from a fresh clone. What installs is pinned, with
# hashes, by the lock files in requirements/ (pip-tools; `make lock` regenerates them from pyproject.toml), so two
# installs of one commit get the same versions. `make demo` installs the runtime only; `make test` adds the tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP         := $(VENV)/.installed

RUNTIME_LOCK := requirements/runtime.txt
TEST_LOCK    := requirements/test.txt
SDK_LOCK     := requirements/aiplatform.txt

# google-cloud-aiplatform pins google-genai below 3, so its proof runs in a venv of its own.
SDK_VENV  := .venv-aiplatform
SDK_STAMP := $(SDK_VENV)/.installed

LOCK_VENV := .venv-lock
PIP_COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host

.PHONY: install install-runtime test lint typecheck pytest demo bench lock clean

$(RUNTIME_STAMP): pyproject.toml $(RUNTIME_LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(RUNTIME_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(STAMP): $(RUNTIME_STAMP) $(TEST_LOCK)
	$(BIN)/pip install --quiet --require-hashes -r $(TEST_LOCK)
	touch $@

$(SDK_STAMP): $(SDK_LOCK)
	test -d $(SDK_VENV) || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/pip install --quiet --upgrade pip
	$(SDK_VENV)/bin/pip install --quiet --require-hashes -r $(SDK_LOCK)
	touch $@

install-runtime: $(RUNTIME_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check tunekeeper tests bench
	$(BIN)/ruff format --check tunekeeper tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Most tests wait on subprocesses, sockets and databases rather than the CPU: several workers share two cores well.
PYTEST_WORKERS ?= 4

pytest: $(STAMP) $(SDK_STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(RUNTIME_STAMP)
	$(BIN)/tunekeeper demo

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Regenerate the lock files after a change to the dependencies in pyproject.toml (needs the package index).
lock:
	test -d $(LOCK_VENV) || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet 'pip-tools==7.7.0'
	$(PIP_COMPILE) --extra=test --output-file=$(TEST_LOCK) pyproject.toml
	# the runtime is resolved within the test lock: production installs the versions the tests ran on
	$(PIP_COMPILE) --constraint=$(TEST_LOCK) --output-file=$(RUNTIME_LOCK) pyproject.toml
	$(PIP_COMPILE) --output-file=$(SDK_LOCK) requirements/aiplatform.in

clean:
	rm -rf $(VENV) $(SDK_VENV) $(LOCK_VENV) .mypy_cache .pytest_cache .ruff_cache
