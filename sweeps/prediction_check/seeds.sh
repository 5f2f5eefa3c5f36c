#!/usr/bin/env bash
# On the lent H200 (the device tool runs this from the repo root; $OUT comes back):
#   bash sweeps/prediction_check/seeds.sh STAGE [STAGE...]      STAGE: sample | head | regret (seeds.py)
# Runs go to gpu_runs/prediction_check_seeds (git-ignored; carried to the machine and back, so a later call resumes).
# .gpu/ (git-ignored, carried) holds the wheels of ../shared/wheels/gpu-py312 and threadpoolctl.py.
set -uo pipefail
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl || exit 1
cp .gpu/threadpoolctl.py /tmp/site/
rm -rf /tmp/src && mkdir -p /tmp/src && cp -r windtunnel hydra_plugins /tmp/src/ && rm -rf /tmp/src/windtunnel/conf
cp -r conf /tmp/src/windtunnel/conf  # the wheel's layout
export PYTHONPATH=/tmp/site:/tmp/src PYTHONUNBUFFERED=1 WINDTUNNEL_CACHE=/tmp/wtc
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
RUNS=$REPO/gpu_runs/prediction_check_seeds
mkdir -p "$RUNS"
for STAGE in "$@"; do
  start=$(date +%s)
  timeout -s INT "${WT_BUDGET_S:-540}" python3 sweeps/prediction_check/seeds.py "$STAGE" "$RUNS" > "$OUT/$STAGE.log" 2>&1
  echo "$STAGE exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$STAGE.log"
  tail -12 "$OUT/$STAGE.log"
done
cd "$REPO/gpu_runs" && tar --exclude='*.pt' -czf "$OUT/runs.tgz" prediction_check_seeds && ls -la "$OUT"
