# Two commands (see README): `make train` renders and trains the default project, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup train test test-rendered test-slow test-matrix lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

train: setup  ## render the default project outside the repo, install it, write toy data, train it
	$(BIN)/python scripts/train_default.py

test: setup  ## the default test suite (what CI runs)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-rendered: setup  ## the other representative projects' whole suites (CI runs it after `make test`)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m slow -k representative_project_passes_its_own_tests

test-slow: setup  ## the long runs: the default project trained to its target, real data (the matrix has its own target)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m slow -k "not full_matrix and not representative_project"

test-matrix: setup  ## every valid task/modality/fusion combination rendered, installed and trained for 2 epochs
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m slow -k full_matrix

lint: setup
	$(BIN)/ruff check hooks tests scripts dl_template_answers.py
	$(BIN)/ruff format --check hooks tests scripts dl_template_answers.py

clean:
	rm -rf $(VENV) .pytest_cache
