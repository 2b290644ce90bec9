# Two entry points: `make run` (example_app on 127.0.0.1:8000) and `make test` (lint, types, tests).
# Each creates .venv with the locked versions first; only python3 is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-lowest lint typecheck pytest bench reliability lock clean

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

# Everything but the slow real-server suites (marker `reliability`): for the edit-test loop, on two
# processes (pytest-xdist; 64 s on one, 39 s on two on the 2-core machine).
test-fast: lint typecheck
	$(BIN)/python -m pytest -p no:cacheprovider -m "not reliability" -q -n 2

bench: $(STAMP)
	bash bench/run.sh

# The reliability suite alone, then the figures it measured (README "Reliability").
reliability: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/reliability
	$(BIN)/python -m tests.reliability.report

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

# test-lowest: the test suite against the LOWEST versions that pyproject's [project] dependencies allow
# (each `>=` bound installed exactly), so the lower bounds we publish are tested ones. Dev-only tools keep
# their requirements.lock versions; packages from the optional extras get whatever version pip finds that
# fits the pinned ones. Own venv, .venv-lowest; needs only python3. Run it after changing any bound.
LOWEST := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed

# Prints the constraints: every [project] dependency pinned to its lower bound (fails if one has none),
# then requirements.lock's lines for the dev tools that are in no other dependency list (not OpenTelemetry's).
define LOWEST_CONSTRAINTS
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
norm = lambda req: re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", req).group(1)).lower()
extras = project.get("optional-dependencies", {})
for dep in project["dependencies"]:
    req, _, marker = dep.partition(";")
    low = re.search(r">=\s*([^,\s]+)", req)
    if not low:
        sys.exit(f"test-lowest: {dep!r} has no '>=' lower bound")
    print(f"{norm(req)}=={low.group(1)}" + (f"; {marker.strip()}" if marker else ""))
others = {norm(d) for d in project["dependencies"]}
others |= {norm(d) for group, deps in extras.items() if group != "dev" for d in deps}
# OpenTelemetry's packages move in lockstep with opentelemetry-sdk: pip picks those that fit its bound.
dev = {norm(d) for d in extras.get("dev", []) if not norm(d).startswith("opentelemetry-")} - others
for line in open("requirements.lock"):
    if line[:1].isalnum() and norm(line) in dev:
        print(line.strip())
endef
export LOWEST_CONSTRAINTS

$(LOWEST_STAMP): pyproject.toml requirements.lock
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	echo '*' > $(LOWEST)/.gitignore
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -c "$$LOWEST_CONSTRAINTS" > $(LOWEST)/constraints.txt
	cat $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt -e '.[dev]'
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST)/bin/python -m pip check
	$(LOWEST)/bin/python -m pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) $(LOWEST)
