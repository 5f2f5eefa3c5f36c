# make demo : install into .venv, then train a tiny muP model on the embedded corpus (CPU, ~1 minute)
# make test : install into .venv with the test extra, then run the test suite
PYTHON ?= python3
VENV ?= .venv
# torch spec installed first; CI pins the local CPU build (TORCH=torch==2.13.0) to avoid a multi-GB CUDA wheel
TORCH ?= torch>=2.4
PY := $(VENV)/bin/python

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"

demo: install
	$(VENV)/bin/windtunnel train --out runs/demo/tiny128
	$(VENV)/bin/windtunnel runs runs/demo

test: install
	$(PY) -m pytest -q tests

.PHONY: install demo test
