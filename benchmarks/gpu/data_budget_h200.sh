#!/usr/bin/env bash
# Issue "data a wind tunnel can trust", on one H200 (run from the repo root by the device tool; $OUT is where
# results go): the prepare timings of benchmarks/prepare.py, then one w9m trial of at most one epoch of
# stdlib+site (its held-out curve), then a packed 2-LR sweep through the CLI (the redesigned trainer's pack).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
rm -rf /tmp/src && mkdir -p /tmp/src && cp -r windtunnel hydra_plugins /tmp/src/ && rm -rf /tmp/src/windtunnel/conf  # (a stale copy)
cp -r conf /tmp/src/windtunnel/conf  # the wheel's layout
export PYTHONPATH=/tmp/site:/tmp/src PYTHONUNBUFFERED=1 WINDTUNNEL_CACHE=/tmp/wtc
python3 -c "import torch, os; print(torch.__version__, torch.cuda.get_device_name(), os.cpu_count(), 'cores')"
if [ "${SKIP_PREPARE:-0}" != 1 ]; then
  python3 benchmarks/prepare.py --cache /tmp/wtc --out "$OUT/prepare_h200.json" 2>&1 | tee "$OUT/prepare.log"
fi
cd /tmp  # from here on the package comes from /tmp/src (the repo root's windtunnel/ has no conf/)
python3 -c "import windtunnel.conf as c; print('windtunnel.conf from', c.__file__)"
TOKENS=$(( 111375447 * 95 / 100 / 65536 * 65536 ))  # 95% of stdlib+site's train tokens there (prepare_h200.json)
echo "w9m trial: $TOKENS tokens"
python3 -m windtunnel.cli train model=w9m train=gpu data=stdlib_site_bpe train.seq_len=1024 train.micro_batch_size=64 \
  train.batch_size_tokens=65536 train.total_tokens=$TOKENS train.eval_points=40 train.eval_tokens=262144 \
  --out /tmp/runs/w9m_1epoch 2>&1 | tail -25
for f in config.json result.json metrics.jsonl; do cp /tmp/runs/w9m_1epoch/$f "$OUT/w9m_1epoch_$f"; done
python3 -m windtunnel.cli sweep -m model=w9m train=gpu data=stdlib_site_bpe train.seq_len=1024 \
  train.micro_batch_size=16 train.batch_size_tokens=16384 train.total_tokens=4915200 optim.lr=0.004,0.016 \
  train.pack=2 hydra.sweep.dir=/tmp/runs/pack 2>&1 | tail -8
python3 -m windtunnel.cli runs /tmp/runs/pack --json > "$OUT/pack_runs.json"
