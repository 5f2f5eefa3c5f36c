"""The life cycle of a run directory: refuse a different trial, skip a finished one, resume an unfinished
one, record any failure, and define the decay branches of a stable run."""
import dataclasses
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

from .. import runs, schedule, sizing
from ..config import ConfigError, TrialConfig, to_dict
from .core import EvalCallback, StopTrial
from .dist import Dist

# config keys that do not change what a run computes, so a run dir may be continued with other values
IGNORED_KEYS = ("train.skip_completed", "train.keep_checkpoint", "train.device", "train.compile", "train.log_every",
                "train.threads", "train.parallel", "train.compile_mode")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{name}.")
        elif a != b and name not in IGNORED_KEYS and not (name == "model.vocab_size" and b == 0):
            out.append(f"{name}: {a!r} there, {b!r} now")
    return out


def run_trial(cfg: TrialConfig, out_dir, callback: Optional[EvalCallback] = None, meta: Optional[dict] = None) -> dict:
    """Train one trial into out_dir and return its result (also written to out_dir/result.json).

    A finished run (completed or diverged) is returned as is when train.skip_completed; an unfinished one
    resumes from its checkpoint. A run dir that holds a different trial is refused (logged runs are never
    overwritten). Exceptions end the run as 'failed' with the message; they are not raised. `meta` (e.g.
    the sweep name and override string) is stored in config.json. Under torchrun every rank calls it.
    """
    from .loop import train  # the loop imports this module for branches
    cfg = sizing.resolve_tokens(cfg).validate()
    run = Path(out_dir)
    existing = runs.read_json(run / runs.CONFIG) if (run / runs.CONFIG).exists() else None
    if existing and "trial" in existing:
        diff = _differences(existing["trial"], to_dict(cfg))
        if diff:
            raise ConfigError(f"run directory {run} holds a different trial ({'; '.join(diff[:3])}); "
                              f"use another directory: logged runs are never overwritten")
    if cfg.train.skip_completed and runs.is_finished(run):
        return runs.read_result(run)
    dist = Dist(cfg.train.device, cfg.train.parallel)
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        runs.write_json(run / runs.RESULT, {"status": "running", "pid": os.getpid()})
    dist.barrier()
    start = time.time()
    try:
        result = train(cfg, run, callback, meta or {}, dist)
    except StopTrial as stop:
        result = {"status": "pruned", "error": str(stop)}
    except ConfigError as err:  # a setup error found before training: recorded, then raised to the caller
        if dist.is_main:
            runs.write_json(run / runs.RESULT, {"status": "failed", "error": str(err)})
        raise
    except Exception as err:  # noqa: BLE001 -- any failure is recorded, never loses the run directory
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    dist.barrier()
    metrics = runs.read_metrics(run)
    evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
    config = runs.read_json(run / runs.CONFIG) or {}  # written by the loop, with the tokenizer's vocab filled in
    fpt = config.get("flops_per_token") or sizing.flops_per_token(cfg.model, cfg.train.seq_len)
    result = {**_summary(cfg, metrics, evals, fpt), **result, "world_size": dist.world, "session_wall_s": time.time() - start}
    if dist.is_main:
        runs.write_json(run / runs.RESULT, result)
        if result["status"] in runs.FINISHED and not cfg.train.keep_checkpoint:
            shutil.rmtree(run / runs.CHECKPOINT, ignore_errors=True)
            shutil.rmtree(run / "checkpoints", ignore_errors=True)  # branch points; every branch has finished
    dist.barrier()
    return result


def branch_config(cfg: TrialConfig, step: int, checkpoint: Path, multiple: float) -> TrialConfig:
    """The decay branch of a stable run at `step`: WSD(D, decay_frac x D) with D = step / (1 - decay_frac),
    the same warmup in tokens, starting from the stable checkpoint (MiniCPM's continuous training)."""
    s, t = cfg.schedule, cfg.train
    bs, frac = t.batch_size_tokens, s.decay_frac
    decay_steps = max(1, round(step * frac / (1 - frac)))
    total = step + decay_steps
    warmup = schedule.plan(dataclasses.replace(s, decay_frac=0.0), cfg.total_steps, bs).warmup
    sched = dataclasses.replace(s, warmup_tokens=warmup * bs, warmup_frac=0.0, decay_tokens=decay_steps * bs,
                                half_life_tokens=s.half_life_tokens or round(s.half_life_frac * total * bs))
    train = dataclasses.replace(t, total_tokens=total * bs, tokens_per_param=0.0, branch_at_n=[],
                                init_from=str(checkpoint), keep_checkpoint=False)
    return dataclasses.replace(cfg, name=f"{cfg.name}-decay{multiple:g}N", schedule=sched, train=train)


def _summary(cfg: TrialConfig, metrics: list[dict], evals: list[float], flops_per_token: float) -> dict:
    last = metrics[-1] if metrics else {}
    train_s = last.get("train_s") or 0.0
    return {"final_eval_loss": evals[-1] if evals else None, "best_eval_loss": min(evals) if evals else None,
            "final_eval_bpb": next((m["eval_bpb"] for m in reversed(metrics) if m.get("eval_bpb") is not None), None),
            "steps": last.get("step", 0), "tokens": last.get("tokens", 0), "N": sizing.n_params(cfg.model),
            "flops": flops_per_token * last.get("tokens", 0),
            "train_s": train_s, "tokens_per_s": last.get("tokens", 0) / train_s if train_s else None}
