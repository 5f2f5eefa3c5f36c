"""Training: run_trial(cfg, out_dir) trains one trial (one process, or every rank under torchrun) and writes
its run directory; run_trials(cfgs, out_dirs) trains several that differ only in LR and seed as one packed
model. Split by noun: trial (the run directory's life cycle, decay branches), trainer (the one training
loop), engines (a lone nn.Module trial, or a pack), step (the lone hot path), packed (the fused K-trial
model), dist (process group, wrapping, checkpoints), core (reports, devices, evals), coord (the muP coordinate check)."""
from .coord import coord_check
from .core import EvalCallback, EvalReport, StopTrial, eval_steps, resolve_device
from .trial import branch_config, run_trial, run_trials

__all__ = ["EvalCallback", "coord_check", "EvalReport", "StopTrial", "branch_config", "eval_steps", "resolve_device",
           "run_trial", "run_trials"]
