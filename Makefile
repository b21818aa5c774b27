# Every target installs what it needs into .venv, so each works from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# google-cloud-aiplatform pins google-genai below 3, so its proof runs in a venv of its own.
SDK_VENV  := .venv-aiplatform
SDK_STAMP := $(SDK_VENV)/.installed

.PHONY: install test lint typecheck pytest demo bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(SDK_STAMP):
	test -d $(SDK_VENV) || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/pip install --quiet --upgrade pip
	$(SDK_VENV)/bin/pip install --quiet 'google-cloud-aiplatform>=1.90,<3'
	touch $(SDK_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check tunekeeper tests bench
	$(BIN)/ruff format --check tunekeeper tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(SDK_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/tunekeeper demo

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SDK_VENV) .mypy_cache .pytest_cache .ruff_cache
