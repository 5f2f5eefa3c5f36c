"""Training: run_trial(cfg, out_dir) trains one model (one process, or every rank under torchrun) and
writes its run directory. Split by noun: core (reports, devices, evals), dist (process group, wrapping,
checkpoints), trial (the run directory's life cycle), loop (the training loop)."""
from .core import EvalCallback, EvalReport, StopTrial, eval_steps, resolve_device
from .trial import branch_config, run_trial

__all__ = ["EvalCallback", "EvalReport", "StopTrial", "branch_config", "eval_steps", "resolve_device", "run_trial"]
