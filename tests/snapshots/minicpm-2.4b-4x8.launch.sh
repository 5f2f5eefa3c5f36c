#!/usr/bin/env bash
# Full-scale training of minicpm-2.4b as windtunnel predicted it (README.md beside this file says where
# each number came from). 4 node(s) x 8 process(es).
#   one node:    bash launch.sh
#   many nodes:  NNODES=4 NODE_RANK=<0..3> MASTER_ADDR=<host of rank 0> bash launch.sh   (on each node)
# A killed run resumes from its last checkpoint when started again with the same RUN_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NNODES="${NNODES:-4}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
RUN_DIR="${RUN_DIR:-$HERE/run}"
# torchrun is this interpreter's torch.distributed.run; the default is a quoted word of its own (a path with spaces
# or quotes stays one argument), never pasted inside another expansion
DEFAULT_PYTHON=python3
PYTHON="${WINDTUNNEL_PYTHON:-$DEFAULT_PYTHON}"
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node=8 \
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id=windtunnel-minicpm-2.4b \
  -m windtunnel.cli train --config "$HERE/trial.json" --out "$RUN_DIR"
