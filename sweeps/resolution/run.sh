#!/usr/bin/env bash
# On the lent H200 (the device tool runs this from the repo root; $OUT comes back):
#   bash sweeps/resolution/run.sh NAME [NAME...]      NAME: a record of measure.py
# Runs go to gpu_runs/resolution (git-ignored; carried to the machine and back, so a later call resumes).
# .gpu/ (git-ignored, carried) holds the wheels of ../shared/wheels/gpu-py312 and threadpoolctl.py.
set -uo pipefail
source sweeps/gpu_env.sh  # the wheels, the package, the environment; REPO
RUNS=$REPO/gpu_runs/resolution
mkdir -p "$RUNS"
END=$(( $(date +%s) + ${WT_BUDGET_S:-540} ))  # one budget for the whole call (the device tool stops at 600 s)
for STAGE in "$@"; do
  start=$(date +%s)
  (( END - start > 20 )) || { echo "$STAGE skipped: no time left in this call"; continue; }
  timeout -s INT $(( END - start )) python3 sweeps/resolution/measure.py "$RUNS" $STAGE > "$OUT/$STAGE.log" 2>&1
  echo "$STAGE exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$STAGE.log"
  tail -12 "$OUT/$STAGE.log"
done
cd "$REPO/gpu_runs" && tar --exclude='*.pt' -czf "$OUT/runs.tgz" resolution && ls -la "$OUT"
