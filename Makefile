# make demo : install into .venv, then `windtunnel demo`: CPU batch-size and LR sweeps of small muP proxies, the
#             fits, a prediction for a 4x larger model, that model trained at the prediction and its neighbours (the
#             regret), and runs/demo/report.html
# make test : install into .venv with the test extra, then run the test suite (one pytest worker per core)
# make test-fast : the in-process tests only (no trainer subprocesses, sweeps or torchrun), for daily work
PYTHON ?= python3
VENV ?= .venv
# torch spec installed first; CI pins the local CPU build (TORCH=torch==2.13.0) to avoid a multi-GB CUDA wheel
TORCH ?= torch>=2.6
PY := $(VENV)/bin/python

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"

demo: install
	$(VENV)/bin/windtunnel demo --out runs/demo

test: install
	$(PY) -m pytest -q -n auto --dist worksteal tests

test-fast:
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow" tests

.PHONY: install demo test test-fast
