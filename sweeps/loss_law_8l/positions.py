"""Held-out loss by position in the context window, from a run's final weights (train.save_final=true).

Why: the loss_law_8l runs fall by ~1.3 nats between ~12M and ~24M tokens (widths 256 and 384), in train and held-out
loss alike. If that drop is the model learning to copy from its own context (induction heads, Olsson et al. 2022),
the loss late in a window falls far more than early in it; their "in-context learning score" is the loss at token
500 minus the loss at token 50. Usage (on the machine that holds the weights):
    python sweeps/loss_law_8l/positions.py RUN_DIR [RUN_DIR ...] > positions.jsonl
"""
import json
import sys
from pathlib import Path

import torch

from windtunnel.compose import compose_record
from windtunnel.data.batches import held_out
from windtunnel.data.cache import prepare
from windtunnel.model import Transformer

BUCKETS = [(0, 16), (16, 64), (64, 256), (256, 512), (512, 1024)]  # positions in the window (targets 0 .. T-1)


def position_losses(run: Path, trial, windows: torch.Tensor, device: str) -> torch.Tensor:
    """Mean next-token loss at each position, (T,), of the run's final weights (its TrialConfig `trial`) over the
    held-out windows (n, T+1); bf16 autocast on CUDA as the run's own evals (train.dtype auto), fp32 on CPU."""
    model = Transformer(trial.model).to(device).eval()
    model.load_state_dict(torch.load(run / "final" / "state.pt", map_location=device, weights_only=True)["model"])
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for chunk in windows.split(32):
            x, y = chunk[:, :-1].to(device), chunk[:, 1:].to(device)  # (b, T) each
            logits = model(x).float()  # (b, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            total += loss.view(y.shape).sum(0).double()
    return (total / windows.shape[0]).cpu()


def main(runs: list[str]) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for run in map(Path, runs):
        trial = compose_record(json.loads((run / "config.json").read_text())["trial"])
        windows, _ = held_out(prepare(trial.data), trial.train).final  # the windows the run's final eval read
        per_pos = position_losses(run, trial, windows, device)
        tokens = json.loads((run / "result.json").read_text())["tokens"]
        print(json.dumps({"run": str(run), "tokens": tokens, "windows": int(windows.shape[0]),
                          "mean": float(per_pos.mean()),
                          "buckets": {f"{a}-{b}": float(per_pos[a:b].mean()) for a, b in BUCKETS},
                          "icl_score": float(per_pos[495:505].mean() - per_pos[45:55].mean())  # T >= 505 only
                          if len(per_pos) >= 505 else None}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
