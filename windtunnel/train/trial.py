"""The life cycle of a run directory: refuse a different trial, skip a finished one, resume an unfinished
one, record any failure, and define the decay branches of a stable run."""
import dataclasses
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from .. import __version__, runs, schedule, sizing
from ..config import ConfigError, ModelConfig, TrialConfig, to_dict
from .core import EvalCallback, StopTrial, device_name
from .dist import Dist

# config keys that do not change what a run computes, so a run dir may be continued with other values
IGNORED_KEYS = ("train.skip_completed", "train.keep_checkpoint", "train.device", "train.compile", "train.log_every",
                "train.threads", "train.parallel", "train.compile_mode", "train.pack", "train.pack_members")


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
    finished = finished_result(cfg, run)
    if finished is not None:
        return finished
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
    result = {**result, "world_size": dist.world, "session_wall_s": time.time() - start}
    result = finish(cfg, run, result, write=dist.is_main)
    dist.barrier()
    return result


def finished_result(cfg: TrialConfig, run: Path) -> Optional[dict]:
    """The result of run dir `run` when it holds this trial, finished (and train.skip_completed), else None.
    Raises ConfigError when it holds a different trial: logged runs are never overwritten."""
    existing = runs.read_json(run / runs.CONFIG) if (run / runs.CONFIG).exists() else None
    if existing and "trial" in existing:
        diff = _differences(existing["trial"], to_dict(cfg))
        if diff:
            raise ConfigError(f"run directory {run} holds a different trial ({'; '.join(diff[:3])}); "
                              f"use another directory: logged runs are never overwritten")
    if cfg.train.skip_completed and runs.is_finished(run):
        return runs.read_result(run)
    return None


def finish(cfg: TrialConfig, run: Path, result: dict, write: bool = True) -> dict:
    """Write result.json: the loop's outcome plus the summary of the logged metrics; drop checkpoints of a
    finished run unless train.keep_checkpoint."""
    metrics = runs.read_metrics(run)
    evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
    config = runs.read_json(run / runs.CONFIG) or {}  # written by the loop, with the tokenizer's vocab filled in
    fpt = config.get("flops_per_token") or sizing.flops_per_token(cfg.model, cfg.train.seq_len)
    result = {**_summary(cfg, metrics, evals, fpt), **result}
    if not write:  # other ranks under torchrun: rank 0 writes
        return result
    runs.write_json(run / runs.RESULT, result)
    if result["status"] in runs.FINISHED and not cfg.train.keep_checkpoint:
        shutil.rmtree(run / runs.CHECKPOINT, ignore_errors=True)
        shutil.rmtree(run / "checkpoints", ignore_errors=True)  # branch points; every branch has finished
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


def with_vocab(model: ModelConfig, corpus) -> ModelConfig:
    """The model config with vocab_size taken from the corpus's tokenizer when it is 0."""
    model = dataclasses.replace(model, vocab_size=model.vocab_size or corpus.vocab_size)
    if model.vocab_size < corpus.vocab_size:
        raise ValueError(f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's "
                         f"{corpus.vocab_size}; set model.vocab_size=0 to take it from the tokenizer")
    return model


def write_config(run: Path, cfg: TrialConfig, meta: dict, dist: Dist, corpus, **extra) -> None:
    """config.json: the resolved trial (vocab filled in) and its provenance."""
    runs.write_json(run / runs.CONFIG, {
        "trial": to_dict(cfg), **meta, **runs.git_commit(), "version": __version__,
        "device": device_name(dist.device), "torch": torch.__version__, "world_size": dist.world,
        "parallel": dist.parallel, "N": sizing.n_params(cfg.model), "N_embedding": sizing.n_embedding_params(cfg.model),
        "flops_per_token": sizing.flops_per_token(cfg.model, cfg.train.seq_len), "corpus": str(corpus.path), **extra})


def _summary(cfg: TrialConfig, metrics: list[dict], evals: list[float], flops_per_token: float) -> dict:
    last = metrics[-1] if metrics else {}
    train_s = last.get("train_s") or 0.0
    return {"final_eval_loss": evals[-1] if evals else None, "best_eval_loss": min(evals) if evals else None,
            "final_eval_bpb": next((m["eval_bpb"] for m in reversed(metrics) if m.get("eval_bpb") is not None), None),
            "steps": last.get("step", 0), "tokens": last.get("tokens", 0), "N": sizing.n_params(cfg.model),
            "flops": flops_per_token * last.get("tokens", 0),
            "train_s": train_s, "tokens_per_s": last.get("tokens", 0) / train_s if train_s else None}
