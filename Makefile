# prmflow: `make run` runs the embedded default pipeline, `make test` runs the tests.
# Both create (or reuse) .venv by themselves: torch==2.13.0 (CPU) first, then the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

include env.mk
export

.PHONY: run test setup clean-venv bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc config --local core.analytics false
	$(BIN)/dvc config --local core.check_update false
	# dvc repro, with every stage's MLflow run nested under one parent run
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.pipeline --dvc

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.rollouts

clean-venv:
	rm -rf $(VENV)
