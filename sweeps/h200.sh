#!/usr/bin/env bash
# Run one wind-tunnel sweep on a lent H200 (the device tool runs this from the repo root; $OUT comes back).
#   bash sweeps/h200.sh SWEEP [OVERRIDES...]      e.g. bash sweeps/h200.sh lr_transfer train.pack=20
#   bash sweeps/h200.sh demo                      windtunnel demo --device cuda into gpu_runs/demo
#   WT_NAME=wsd_vs_cosine_lr0.004 bash sweeps/h200.sh wsd_vs_cosine optim.lr=0.004   a variant, in its own folder
# Runs go to gpu_runs/SWEEP, or gpu_runs/$WT_NAME (git-ignored; carried to the machine and back, so a later call resumes: finished
# trials are skipped). WT_BUDGET_S (default 480; the device tool stops a call at 600 s) stops the sweep in time to copy what finished back.
set -uo pipefail
SWEEP=$1; shift
NAME=${WT_NAME:-$SWEEP}
source sweeps/gpu_env.sh  # the wheels (.gpu/, carried), the package, the environment; REPO
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # big packs: less fragmentation between shapes
mkdir -p "$REPO/gpu_runs"
cd /tmp
start=$(date +%s)
if [ "$SWEEP" = demo ]; then  # `windtunnel demo --device cuda`: the whole story at GPU sizes (resumable)
  timeout -s INT "${WT_BUDGET_S:-480}" python3 -m windtunnel.cli demo --device cuda --out "$REPO/gpu_runs/$NAME" "$@" \
    > "$OUT/sweep_$NAME.log" 2>&1
else
  timeout -s INT "${WT_BUDGET_S:-480}" python3 -m windtunnel.cli sweep -m "sweep=$SWEEP" "$@" \
    "hydra.sweep.dir=$REPO/gpu_runs/$NAME" > "$OUT/sweep_$NAME.log" 2>&1
fi
echo "sweep exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/sweep_$NAME.log"
tail -30 "$OUT/sweep_$NAME.log"
# bring back every run dir without weights (checkpoints are GBs; a finished run needs none to be skipped)
cd "$REPO/gpu_runs" && tar --exclude='*.pt' --exclude='.checkpoint*' -czf "$OUT/gpu_runs.tgz" "$NAME" && ls -la "$OUT"
