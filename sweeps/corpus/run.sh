#!/usr/bin/env bash
# On the lent H200 (the device tool runs this from the repo root; $OUT comes back):   bash sweeps/corpus/run.sh
# .gpu/ (git-ignored, carried) holds the wheels of ../shared/wheels/gpu-py312 and threadpoolctl.py.
set -uo pipefail
source sweeps/gpu_env.sh  # the wheels, the package, the environment
timeout 560 python3 sweeps/corpus/measure.py "$OUT/corpus_h200.json" 2>&1 | tee "$OUT/corpus.log" | grep -v "^\s*$" | tail -20
