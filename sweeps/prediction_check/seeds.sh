#!/usr/bin/env bash
# On the lent H200 (the device tool runs this from the repo root; $OUT comes back):
#   bash sweeps/prediction_check/seeds.sh STAGE [STAGE...]      STAGE: sample | head | regret (seeds.py)
# Runs go to gpu_runs/prediction_check_seeds (git-ignored; carried to the machine and back, so a later call resumes).
# .gpu/ (git-ignored, carried) holds the wheels of ../shared/wheels/gpu-py312 and threadpoolctl.py.
set -uo pipefail
source sweeps/gpu_env.sh  # the wheels, the package, the environment; REPO
RUNS=$REPO/gpu_runs/prediction_check_seeds
mkdir -p "$RUNS"
for STAGE in "$@"; do
  start=$(date +%s)
  timeout -s INT "${WT_BUDGET_S:-540}" python3 sweeps/prediction_check/seeds.py "$STAGE" "$RUNS" > "$OUT/$STAGE.log" 2>&1
  echo "$STAGE exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$STAGE.log"
  tail -12 "$OUT/$STAGE.log"
done
cd "$REPO/gpu_runs" && tar --exclude='*.pt' -czf "$OUT/runs.tgz" prediction_check_seeds && ls -la "$OUT"
