"""Small pieces the trainer shares: eval reports for callbacks, devices, eval schedules, autocast."""
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class EvalReport:
    """One held-out eval, as a callback (a pruner, a logger) sees it."""
    step: int
    tokens: int
    loss: float
    decayed: bool  # True only at the end of a completed LR decay (a run's end, or a decay branch's end):
    #                the only points where arms with different LRs compare fairly (short-horizon bias)
    branch: str = ""  # the decay branch's run dir name, for reports from branches


EvalCallback = Callable[[EvalReport], None]


class StopTrial(Exception):
    """Raised by an eval callback to end a trial early; the run is recorded with status 'pruned'."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available; use train.device=cpu or auto")
    if name == "cuda":
        return torch.device("cuda", local_rank)  # one GPU per torchrun rank
    return torch.device(name)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def eval_steps(total_steps: int, batch_tokens: int, n_points: int) -> list[int]:
    """Steps (counted after the update) at ~n_points log-spaced token counts from one batch to the end,
    plus step 0 (the initial loss). Dense early, where the loss falls fastest."""
    tokens = np.geomspace(batch_tokens, total_steps * batch_tokens, max(n_points, 2))
    steps = {0, total_steps} | {min(total_steps, max(1, math.ceil(t / batch_tokens - 1e-9))) for t in tokens}
    return sorted(steps)


def autocast_for(device: torch.device, dtype: str):
    """A context factory: bf16 autocast on CUDA (or when asked), plain fp32 otherwise."""
    if dtype == "bf16" or (dtype == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext
