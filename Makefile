# The two commands of the README:  `make repro` (set up + run the pipeline)  and  `make test`.
# `make install` (the .venv) is all `make repro` needs; `make setup`, which `make test` runs, also apt-installs
# Debian's chromium and postgresql for two of the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := False
# Debian's headless Chromium, for the report test (tests/test_report.py opens reports/index.html in it)
CHROMIUM := /usr/bin/chromium
# Debian's PostgreSQL server, for the team-tracking-server test (tests/test_team_server.py runs initdb and pg_ctl
# from /usr/lib/postgresql/<version>/bin). pg_ctlcluster is postgresql-common's, which only the server packages
# pull in (postgresql -> postgresql-<version> -> postgresql-common): a client-only install does not count.
POSTGRES := /usr/bin/pg_ctlcluster
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install setup repro translate test test-fast lint clean

$(BIN)/artgan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium'

$(POSTGRES):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql'

install: $(BIN)/artgan

setup: install $(CHROMIUM) $(POSTGRES)

repro: install
	$(BIN)/dvc repro

# the default translate run (docs/translation.md): the built-in OpenMoji line art -> colour pairs, pix2pix at 64 px
# painting a colour layer under the line art (translate.blend multiply), at params.yaml's rates and lambda_l1 1000,
# as a named DVC experiment in the workspace (params.yaml then holds these values; `git checkout params.yaml dvc.lock
# && dvc checkout` goes back to the generation default)
TRANSLATE := -S task=translate -S data.source=openmoji:color -S data.image_size=64 -S train.steps=1800 \
	-S train.snapshot_every=600 -S translate.blend=multiply -S translate.lambda_l1=1000
translate: install
	$(BIN)/dvc exp run -n line-to-colour $(TRANSLATE)

test: setup lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the unit tests only, for the inner loop: no end-to-end, browser, PostgreSQL, GPU or slow in-process tests (so no
# apt installs); select a tier on its own with e.g. `.venv/bin/python -m pytest -m browser`
FAST := not e2e and not browser and not postgres and not gpu and not slow
test-fast: install
	$(BIN)/python -m pytest -m "$(FAST)"

clean:
	rm -rf data/raw data/processed models mlflow.db .dvc/cache .dvc/tmp
