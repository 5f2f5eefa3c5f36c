#!/usr/bin/env bash
# On the lent H200 (the device tool runs this from the repo root; $OUT comes back):   bash sweeps/corpus/run.sh
# .gpu/ (git-ignored, carried) holds the wheels of ../shared/wheels/gpu-py312 and threadpoolctl.py.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl || exit 1
cp .gpu/threadpoolctl.py /tmp/site/
rm -rf /tmp/src && mkdir -p /tmp/src && cp -r windtunnel hydra_plugins /tmp/src/ && rm -rf /tmp/src/windtunnel/conf
cp -r conf /tmp/src/windtunnel/conf  # the wheel's layout
export PYTHONPATH=/tmp/site:/tmp/src PYTHONUNBUFFERED=1 WINDTUNNEL_CACHE=/tmp/wtc
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
timeout 560 python3 sweeps/corpus/measure.py "$OUT/corpus_h200.json" 2>&1 | tee "$OUT/corpus.log" | grep -v "^\s*$" | tail -20
