"""Training: run_trial(cfg, out_dir) trains one model (one process, or every rank under torchrun) and
writes its run directory. Split by noun: core (reports, devices, evals), dist (process group, wrapping,
checkpoints), trial (the run directory's life cycle), loop (the training loop), packed and pack (K same-shape
trials as one fused model, each with its own run directory)."""
from .core import EvalCallback, EvalReport, StopTrial, eval_steps, resolve_device
from .pack import member_configs, run_packed
from .trial import branch_config, run_trial

__all__ = ["EvalCallback", "EvalReport", "StopTrial", "branch_config", "eval_steps", "member_configs",
           "resolve_device", "run_packed", "run_trial"]
