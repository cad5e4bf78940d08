# The two commands of the README. Each one creates the virtualenv when needed, installs the
# project, brings up the services it needs (through `backbone stack`) and runs.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-unit lint format stack-up stack-down install

demo: $(STAMP)  ## run the main job on local defaults
	$(BIN)/backbone demo

test: $(STAMP)  ## lint, the schema gate, then the whole test suite against the real stack
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/backbone schemas check
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

stack-up: $(STAMP)
	$(BIN)/backbone stack up

stack-down: $(STAMP)
	$(BIN)/backbone stack down

install: $(STAMP)

$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -e .
	touch $(STAMP)
