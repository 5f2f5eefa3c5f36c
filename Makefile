# make demo : install into .venv, then run the CPU batch-size sweep, fit its law, and ask for a 2.4B prediction
#             (refused, with the reason, when the CPU fit does not identify the law; see the README for a launch
#             driven by MiniCPM's reference laws)
# make test : install into .venv with the test extra, then run the test suite
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
	$(VENV)/bin/windtunnel sweep -m sweep=batch_size_cpu launcher=joblib
	$(VENV)/bin/windtunnel runs runs/batch_size_cpu
	$(VENV)/bin/windtunnel fit runs/batch_size_cpu --law batch-size --out runs/batch_size_cpu/fits.json
	$(VENV)/bin/windtunnel predict --fits runs/batch_size_cpu/fits.json --reference minicpm --target 2.4B \
		--tokens 1.1e12 --target-loss 1.35 --out runs/batch_size_cpu/prediction || \
		echo "(no 2.4B launch: the prediction was refused for the reasons above)"

test: install
	$(PY) -m pytest -q tests

.PHONY: install demo test
