#!/usr/bin/env bash
# Several sweeps side by side on one lent H200 (small proxies leave most of the GPU idle: a 4k-token batch of a
# 13.6M model runs at a fifth of a 64k batch's tokens/s). Each argument is one sweep as sweeps/h200.sh takes it:
#   WT_BUDGET_S=540 bash sweeps/h200_many.sh \
#     "batch_size_8l model.d_model=384 train.pack=4 train.batch_size_tokens=4096,65536" \
#     "loss_law_8l model.d_model=384"
# "SWEEP@DIR" runs SWEEP into gpu_runs/DIR (default: gpu_runs/SWEEP). The first starts at once; the others once the corpus is tokenized (one prepare, not one per process). All stop
# WT_BUDGET_S seconds after the start; every sweep folder named comes back in $OUT/gpu_runs.tgz (without weights).
set -uo pipefail
source sweeps/gpu_env.sh  # REPO, the wheels, the environment (WINDTUNNEL_CACHE)
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$REPO/gpu_runs"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 20 > "$OUT/gpu_util.csv" 2>&1 & smi=$!
start=$(date +%s); budget=${WT_BUDGET_S:-480}; names=(); pids=(); i=0
for spec in "$@"; do
  read -r -a words <<< "$spec"; sweep=${words[0]%@*}; name=${words[0]#*@}; names+=("$name")
  if [ $i -gt 0 ]; then  # wait for the first process's corpus (at most 240 s)
    for _ in $(seq 48); do [ -n "$(find "$WINDTUNNEL_CACHE" -name meta.json -print -quit 2>/dev/null)" ] && break; sleep 5; done
  fi
  left=$(( budget - ($(date +%s) - start) ))
  (cd /tmp && timeout -s INT "$left" python3 -m windtunnel.cli sweep -m "sweep=$sweep" "${words[@]:1}" \
     "hydra.sweep.dir=$REPO/gpu_runs/$name" > "$OUT/sweep_${i}_$name.log" 2>&1
   echo "sweep $i exit $? after $(( $(date +%s) - start )) s" >> "$OUT/sweep_${i}_$name.log") &
  pids+=($!); i=$((i + 1))
done
wait "${pids[@]}"
for log in "$OUT"/sweep_*.log; do echo "== $log"; tail -8 "$log"; done
kill $smi 2>/dev/null
cd "$REPO/gpu_runs" && tar --exclude='*.pt' --exclude='.checkpoint*' -czf "$OUT/gpu_runs.tgz" \
  $(printf '%s\n' "${names[@]}" | sort -u) && ls -la "$OUT"
