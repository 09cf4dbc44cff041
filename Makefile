# The two commands of the README:  `make repro` (set up + run the pipeline)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := False

.PHONY: setup repro test clean

$(BIN)/artgan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/artgan

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf data/raw data/processed models mlflow.db .dvc/cache .dvc/tmp
