"""run_trial(cfg, out_dir): train one model and write its run directory. Nothing else.

The trainer knows nothing about muP: the model hands it AdamW groups that carry `lr_scale`, and every
step sets group["lr"] = optim.lr * lr_factor(step) * group["lr_scale"].
"""
import dataclasses
import math
import os
import shutil
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import __version__, runs, schedule, sizing
from .config import ConfigError, TrialConfig, to_dict
from .data import TokenBatches, eval_windows, prepare
from .model import Transformer, build_optimizer



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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available; use train.device=cpu or auto")
    return torch.device(name)


def eval_steps(total_steps: int, batch_tokens: int, n_points: int) -> list[int]:
    """Steps (counted after the update) at ~n_points log-spaced token counts from one batch to the end,
    plus step 0 (the initial loss). Dense early, where the loss falls fastest."""
    tokens = np.geomspace(batch_tokens, total_steps * batch_tokens, max(n_points, 2))
    steps = {0, total_steps} | {min(total_steps, max(1, math.ceil(t / batch_tokens - 1e-9))) for t in tokens}
    return sorted(steps)


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, n_bytes: int, micro_batch: int, device, autocast) -> tuple[float, float]:
    """Mean next-token loss (nats/token) on the fixed held-out windows (n, T+1), and bits per byte."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    for i in range(0, len(windows), micro_batch):
        w = windows[i:i + micro_batch].to(device)
        with autocast():
            loss = model(w[:, :-1], w[:, 1:])
        total += loss.double() * w[:, 1:].numel()
    model.train(was_training)
    nats = total.item()
    n_tokens = windows[:, 1:].numel()
    return nats / n_tokens, nats / (math.log(2) * n_bytes)


def _autocast(device: torch.device, dtype: str):
    use_bf16 = dtype == "bf16" or (dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


def _save_checkpoint(path: Path, model, opt, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), **state}, tmp)
    os.replace(tmp, path)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


IGNORED_KEYS = ("train.skip_completed", "train.keep_checkpoint", "train.device", "train.compile", "train.log_every",
                "train.threads")


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
    the sweep name and override string) is stored in config.json.
    """
    cfg = sizing.resolve_tokens(cfg).validate()
    run = Path(out_dir)
    existing = runs.read_json(run / runs.CONFIG) if (run / runs.CONFIG).exists() else None
    if existing and "trial" in existing:
        diff = _differences(existing["trial"], to_dict(cfg))
        if diff:
            raise ConfigError(f"run directory {run} holds a different trial ({'; '.join(diff[:3])}); "
                              f"use another directory: logged runs are never overwritten")
    run.mkdir(parents=True, exist_ok=True)
    if cfg.train.skip_completed and runs.is_finished(run):
        return runs.read_result(run)
    start = time.time()
    runs.write_json(run / runs.RESULT, {"status": "running", "pid": os.getpid()})
    try:
        result = _train(cfg, run, callback, meta or {})
    except StopTrial as stop:
        result = {"status": "pruned", "error": str(stop)}
    except Exception as err:  # noqa: BLE001 -- any failure is recorded, never loses the run directory
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    metrics = runs.read_metrics(run)
    evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
    result = {**_summary(cfg, metrics, evals), **result, "session_wall_s": time.time() - start}
    runs.write_json(run / runs.RESULT, result)
    if result["status"] in runs.FINISHED and not cfg.train.keep_checkpoint:
        (run / runs.CHECKPOINT).unlink(missing_ok=True)
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


def _summary(cfg: TrialConfig, metrics: list[dict], evals: list[float]) -> dict:
    last = metrics[-1] if metrics else {}
    model = cfg.model
    return {"final_eval_loss": evals[-1] if evals else None, "best_eval_loss": min(evals) if evals else None,
            "final_eval_bpb": next((m["eval_bpb"] for m in reversed(metrics) if m.get("eval_bpb") is not None), None),
            "steps": last.get("step", 0), "tokens": last.get("tokens", 0), "N": sizing.n_params(model),
            "train_s": last.get("train_s", 0.0), "tokens_per_s": last.get("tokens", 0) / max(last.get("train_s", 0) or 1e-9, 1e-9)}


def _load_start(cfg: TrialConfig, run: Path, model, opt, device) -> tuple[int, Optional[float], float]:
    """Restore (step, first train loss, train seconds) from this run's checkpoint, or from train.init_from
    (a stable-phase checkpoint of another run, whose curve up to that step is copied), else start fresh."""
    own = run / runs.CHECKPOINT
    path = own if own.exists() else Path(cfg.train.init_from) if cfg.train.init_from else None
    if path is None:
        runs.rewrite_metrics(run, [])
        return 0, None, 0.0
    if not path.exists():
        raise ConfigError(f"train.init_from={cfg.train.init_from!r} does not exist")
    state = torch.load(path, map_location=device, weights_only=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ConfigError(f"checkpoint {path} is from a different model shape than model={cfg.model.name} "
                          f"(d_model {cfg.model.d_model}, {cfg.model.n_layers} layers): {str(err)[:300]}") from None
    opt.load_state_dict(state["optim"])
    step = state["step"]
    source = run if path == own else Path(state.get("run_dir", ""))
    runs.rewrite_metrics(run, [m for m in runs.read_metrics(source) if m["step"] <= step])
    return step, state["first_loss"], state["train_s"]


def _train(cfg: TrialConfig, run: Path, callback: Optional[EvalCallback], meta: dict) -> dict:
    t, device = cfg.train, resolve_device(cfg.train.device)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    corpus = prepare(cfg.data)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size or corpus.vocab_size)
    if model_cfg.vocab_size < corpus.vocab_size:
        raise ValueError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
                         f"{corpus.vocab_size}; set model.vocab_size=0 to take it from the tokenizer")
    cfg = dataclasses.replace(cfg, model=model_cfg)
    runs.write_json(run / runs.CONFIG, {
        "trial": to_dict(cfg), **meta, **runs.git_commit(), "version": __version__,
        "device": _device_name(device), "torch": torch.__version__, "N": sizing.n_params(model_cfg),
        "N_embedding": sizing.n_embedding_params(model_cfg),
        "flops_per_token": sizing.flops_per_token(model_cfg, t.seq_len), "corpus": str(corpus.path)})

    torch.manual_seed(t.seed)
    model = Transformer(model_cfg).to(device)
    opt = build_optimizer(model, cfg.optim, fused=device.type == "cuda")
    forward = torch.compile(model) if t.compile else model
    autocast = _autocast(device, t.dtype)
    total, bs, accum = cfg.total_steps, t.batch_size_tokens, cfg.grad_accum
    # With decay branches the run itself stays stable; each branch decays on its own.
    branches = {max(1, round(k * sizing.n_params(model_cfg) / bs)): k for k in t.branch_at_n}
    lr_plan = schedule.plan(dataclasses.replace(cfg.schedule, decay_frac=0.0) if branches else cfg.schedule, total, bs)
    decays = not branches and (cfg.schedule.kind == "cosine" or lr_plan.decay_start < total)
    batches = TokenBatches(corpus.train, t.seq_len, cfg.micro_batch, t.seed)
    windows, n_bytes = eval_windows(corpus, t.seq_len, t.eval_tokens)
    eval_at = set(eval_steps(total, bs, t.eval_points))
    ckpt_path = run / runs.CHECKPOINT

    branch_losses = {}  # branch step -> final held-out loss of that decay branch

    def run_due_branches(step: int) -> None:
        for at, k in sorted(branches.items()):
            branch_dir = run / f"decay_{k:g}N"
            if at > step:
                continue
            if runs.is_finished(branch_dir):
                branch_losses[at] = runs.read_result(branch_dir).get("final_eval_loss")
                continue
            source = run / "checkpoints" / f"step{at}.pt"
            result = run_trial(branch_config(cfg, at, source, k), branch_dir, meta={**meta, "branch_of": str(run)})
            if result["status"] == "failed":
                raise RuntimeError(f"decay branch {branch_dir} failed: {result['error']}")
            branch_losses[at] = result.get("final_eval_loss")
            if callback is not None and result.get("final_eval_loss") is not None:
                callback(EvalReport(result["steps"], result["tokens"], result["final_eval_loss"], True, branch_dir.name))

    def save(step: int, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(path, model, opt, {"step": step, "first_loss": first_loss, "train_s": train_s,
                                            "run_dir": str(run)})

    step, first_loss, train_s = _load_start(cfg, run, model, opt, device)
    if step == 0:
        loss0, bpb0 = evaluate(model, windows, n_bytes, cfg.micro_batch, device, autocast)
        runs.append_metrics(run, {"step": 0, "tokens": 0, "eval_loss": loss0, "eval_bpb": bpb0, "train_s": 0.0})
    run_due_branches(step)
    tick = time.time()
    while step < total:
        factor = schedule.lr_factor(step, lr_plan)
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr * factor * group["lr_scale"]
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            x, y = batches.get(step, micro, device)  # (B, T) each
            with autocast():
                loss = forward(x, y)
            (loss / accum).backward()
            loss_sum += loss.detach()
        if cfg.optim.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1

        is_eval = step in eval_at or step in branches
        if not (is_eval or step == 1 or step % t.log_every == 0):
            continue
        train_loss = (loss_sum / accum).item()  # the only host sync, once per logged step
        train_s += time.time() - tick
        first_loss = first_loss if first_loss is not None else train_loss
        row = {"step": step, "tokens": step * bs, "lr": cfg.optim.lr * factor, "train_loss": train_loss,
               "grad_norm": grad_norm.item(), "train_s": train_s}
        diverged = not math.isfinite(train_loss) or train_loss > t.diverge_factor * first_loss
        if is_eval and not diverged:
            row["eval_loss"], row["eval_bpb"] = evaluate(model, windows, n_bytes, cfg.micro_batch, device, autocast)
            diverged = not math.isfinite(row["eval_loss"])
        runs.append_metrics(run, row)
        if diverged:
            return {"status": "diverged", "error": f"train loss {train_loss} at step {step} (first {first_loss:.4g}, "
                                                   f"limit x{t.diverge_factor})"}
        if step in branches:
            save(step, run / "checkpoints" / f"step{step}.pt")
        if step < total and ((t.checkpoint_every and step % t.checkpoint_every == 0) or
                             (not t.checkpoint_every and is_eval)):
            save(step, ckpt_path)
        if is_eval and callback is not None:
            callback(EvalReport(step, step * bs, row["eval_loss"], decays and step == total))
        run_due_branches(step)
        tick = time.time()
    # the loss to compare trials on: after a decay (the last branch's end, or this run's own end)
    if branch_losses:
        last = branch_losses[max(branch_losses)]
    else:
        last = runs.read_metrics(run)[-1].get("eval_loss") if decays else None
    return {"status": "completed", "error": None, "decayed_eval_loss": last}
