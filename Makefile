# make demo : install into .venv, then `windtunnel demo`: CPU batch-size and LR sweeps of small muP proxies, the
#             fits, a prediction for a 4x larger model, that model trained at the prediction and its neighbours (the
#             regret), and runs/demo/report.html
# make test : install into .venv with the test extra, then run the test suite (one pytest worker per core)
# make test-fast : the in-process tests only (no trainer subprocesses, sweeps or torchrun), for daily work
PYTHON ?= python3
VENV ?= .venv
# torch is installed first. Where no NVIDIA GPU is found (no nvidia-smi), the CPU build from PyTorch's CPU index
# (PyPI's torch pulls ~6 GB of CUDA wheels; the CPU index serves torch's dependencies too, and a PyPI fallback would
# pick the CUDA build again); where that index cannot be reached, a torch wheel pip finds offline (pip's find-links),
# its dependencies from the configured indexes. TORCH=SPEC (CI pins the local CPU build, TORCH=torch==2.13.0) or GPU=1 (the CUDA build from PyPI) overrides.
PY := $(VENV)/bin/python
CPU_INDEX := https://download.pytorch.org/whl/cpu
ifeq ($(origin TORCH),undefined)
  GPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),1,)
  ifeq ($(GPU),1)
    TORCH_INSTALL := "torch>=2.6"
  else
    TORCH_INSTALL := "torch>=2.6" --index-url $(CPU_INDEX) --retries 1 --timeout 30 \
      || { $(PY) -m pip install -q --no-index --no-deps "torch>=2.6" && $(PY) -m pip install -q "torch>=2.6"; } \
      || { echo "no CPU torch: $(CPU_INDEX) unreachable; pass TORCH=SPEC (e.g. TORCH=torch==2.9.0+cpu) or GPU=1"; exit 1; }
  endif
else
  TORCH_INSTALL := "$(TORCH)"
endif

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q $(TORCH_INSTALL)
	$(PY) -m pip install -q -e ".[test]"

demo: install
	$(VENV)/bin/windtunnel demo --out runs/demo

test: install
	$(PY) -m pytest -q -n auto --dist worksteal tests

test-fast:
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow" tests

.PHONY: install demo test test-fast
