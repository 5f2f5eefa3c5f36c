#!/usr/bin/env bash
# The CPU demo (`windtunnel demo`, CPU sizes, embedded corpus) on the lent H200's host CPU and its torch build, in the
# background of a GPU sweep: how much the demo's numbers move across machines and torch builds (README). Resumes
# (finished trials are skipped); brings gpu_runs/demo_cpu back as $OUT/demo_cpu.tgz. Usage, from the repo root:
#   bash sweeps/cpu_demo.sh SECONDS & WT_BUDGET_S=... bash sweeps/h200.sh SWEEP ...; wait
set -uo pipefail
source sweeps/gpu_env.sh > /dev/null
mkdir -p "$REPO/gpu_runs"
cd /tmp && CUDA_VISIBLE_DEVICES= timeout -s INT "${1:-500}" python3 -m windtunnel.cli demo --out "$REPO/gpu_runs/demo_cpu" \
  >> "$OUT/demo_cpu.log" 2>&1
echo "demo exit $?" >> "$OUT/demo_cpu.log"
lscpu | grep -E "Model name|^CPU\(s\)" >> "$OUT/demo_cpu.log"
cd "$REPO/gpu_runs" && tar --exclude='*.pt' --exclude='.checkpoint*' -czf "$OUT/demo_cpu.tgz" demo_cpu
