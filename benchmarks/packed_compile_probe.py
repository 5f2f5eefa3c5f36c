"""Where a packed job's start-up time goes on a GPU: building the K models, compiling the vmapped forward and
backward, the AdamW update and the held-out eval, then the steady step time (w9m, K = 8, 4k tokens/step).

    python benchmarks/packed_compile_probe.py reduce-overhead --out results/packed_compile_probe.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from windtunnel import sizing  # noqa: E402
from windtunnel.config import OptimConfig  # noqa: E402
from windtunnel.data import TokenBatches  # noqa: E402
from windtunnel.train.core import autocast_for  # noqa: E402
from windtunnel.train.packed import PackedModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["default", "reduce-overhead"])
    ap.add_argument("--out", default="packed_compile_probe.json")
    args = ap.parse_args()
    device = torch.device("cuda")
    cfg = sizing.preset("w9m", vocab_size=8192, max_seq_len=1024)
    batches = TokenBatches(np.random.default_rng(0).integers(0, 8192, 2_000_000, dtype=np.uint16), 1024, 4, 0)
    t0 = time.time()
    model = PackedModel(cfg, OptimConfig(), [float(v) for v in np.geomspace(1e-3, 3e-2, 8)], [0] * 8, device,
                        autocast_for(device, "auto"), True, compile=True, compile_mode=args.mode)
    t1 = time.time()
    x, y = batches.get(0, 0, device)
    if model.mark_step:
        model.mark_step()
    grads, _ = model.grads(x, y)
    torch.cuda.synchronize()
    t2 = time.time()
    model.step(grads, 1.0)
    torch.cuda.synchronize()
    t3 = time.time()
    model.losses(x, y)
    torch.cuda.synchronize()
    t4 = time.time()
    for i in range(5):
        model.train_step([batches.get(i, 0, device)], 1.0)
    torch.cuda.synchronize()
    t5 = time.time()
    for i in range(30):
        out = model.train_step([batches.get(i, 0, device)], 1.0)
    out[0].sum().item()
    t6 = time.time()
    result = {"card": torch.cuda.get_device_name(device), "torch": torch.__version__, "mode": args.mode,
              "build_s": t1 - t0, "grads_compile_s": t2 - t1, "adamw_compile_s": t3 - t2, "eval_compile_s": t4 - t3,
              "ms_per_step": (t6 - t5) / 30 * 1e3}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
