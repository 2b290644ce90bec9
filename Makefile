# Two entry points: `make run` (example_app on 127.0.0.1:8000) and `make test` (lint, types, tests).
# Each creates .venv with the locked versions first; only python3 is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench reliability lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/uvicorn example_app.app:app --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

test: lint typecheck pytest

bench: $(STAMP)
	bash bench/run.sh

# The reliability suite alone, then the figures it measured (README "Reliability").
reliability: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/reliability
	$(BIN)/python -m tests.reliability.report

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV)
