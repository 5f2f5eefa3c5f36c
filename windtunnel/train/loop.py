"""The training loop of one trial (every rank under torchrun runs it; rank 0 writes).

The trainer knows nothing about muP: the model hands it AdamW groups that carry `lr_scale`, and every
step sets group["lr"] = optim.lr * lr_factor(step) * group["lr_scale"].
"""
import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import torch

from .. import runs, schedule, sizing
from ..config import ConfigError, TrialConfig, to_dict
from ..data import TokenBatches, eval_windows, prepare, prepare_mixture
from ..model import Transformer, build_optimizer
from .core import (EvalCallback, EvalReport, autocast_for, diverged_result, eval_steps, heldout_nats,
                   is_diverged, loss_and_bpb)
from .dist import Dist, read_meta
from .step import TrainStep
from .trial import branch_config, run_trial, with_vocab, write_config


def evaluate(model, windows: torch.Tensor, n_bytes: int, micro_batch: int, dist: Dist, autocast) -> tuple[float, float]:
    """Mean next-token loss (nats/token) on the fixed held-out windows (n, T+1), and bits per byte. Ranks
    split the windows and sum their nats."""
    was_training = model.training
    model.eval()

    def loss(x, y):
        with autocast():
            return model(x, y)
    total = heldout_nats(loss, windows, micro_batch, dist.device, dist.rank, dist.world)
    model.train(was_training)
    return loss_and_bpb(dist.sum(total).item(), windows, n_bytes)


def _start(cfg: TrialConfig, run: Path, model, opt, dist: Dist) -> tuple[int, Optional[float], float]:
    """(step, first train loss, train seconds) from this run's checkpoint, or from train.init_from (a
    stable-phase checkpoint of another run, whose curve up to that step is copied), else a fresh start."""
    own = run / runs.CHECKPOINT
    path = own if (own / "meta.json").exists() else Path(cfg.train.init_from) if cfg.train.init_from else None
    if path is None:
        if dist.is_main:
            runs.rewrite_metrics(run, [])
        return 0, None, 0.0
    meta = read_meta(path)
    theirs, ours = meta.get("model", {}), to_dict(cfg.model)
    shape = ("d_model", "n_layers", "n_heads", "n_kv_heads", "fixed_head_dim", "d_ff", "ffn_mult", "vocab_size")
    bad = [f"{k} {theirs.get(k)} there, {ours[k]} here" for k in shape if k in theirs and theirs[k] != ours[k]]
    if bad:
        raise ConfigError(f"checkpoint {path} is from a different model shape ({'; '.join(bad)}); "
                          f"start from a checkpoint of model={cfg.model.name}")
    dist.load(path, model, opt)
    step = meta["step"]
    if dist.is_main:
        source = run if path == own else Path(meta.get("run_dir", ""))
        runs.rewrite_metrics(run, [m for m in runs.read_metrics(source) if m["step"] <= step])
    return step, meta["first_loss"], meta["train_s"]


def train(cfg: TrialConfig, run: Path, callback: Optional[EvalCallback], meta: dict, dist: Dist) -> dict:
    t, device = cfg.train, dist.device
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    micro = cfg.micro_batch
    per_pass = t.seq_len * micro * dist.world
    if t.batch_size_tokens % per_pass:
        raise ConfigError(f"train.batch_size_tokens={t.batch_size_tokens} cannot be split over {dist.world} ranks x "
                          f"micro-batch {micro} x seq_len {t.seq_len} = {per_pass} tokens per pass; use a multiple "
                          f"of {per_pass} or a smaller train.micro_batch_size")
    corpus = prepare(cfg.data)
    model_cfg = with_vocab(cfg.model, corpus)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    if dist.is_main:
        write_config(run, cfg, meta, dist, corpus)

    torch.manual_seed(t.seed)
    model = Transformer(model_cfg).to(device)
    wrapped = dist.wrap(model)
    opt = build_optimizer(model, cfg.optim, fused=device.type == "cuda")  # after wrapping: FSDP2 params
    total, bs = cfg.total_steps, t.batch_size_tokens
    accum = bs // per_pass  # micro-batches per rank per step
    mode = t.compile_mode
    if mode == "auto":  # CUDA graphs: only one micro-batch per step (accumulated grads would live in the graph's
        # reused memory) and one process (they do not mix with DDP's and FSDP's communication hooks)
        mode = "reduce-overhead" if device.type == "cuda" and dist.parallel == "none" and accum == 1 else "default"
    forward = torch.compile(wrapped, mode=mode) if t.compile else wrapped
    autocast = autocast_for(device, t.dtype)
    # With decay branches the run itself stays stable; each branch decays on its own.
    branches = {max(1, round(k * sizing.n_params(model_cfg) / bs)): k for k in t.branch_at_n}
    lr_plan = schedule.plan(dataclasses.replace(cfg.schedule, decay_frac=0.0) if branches else cfg.schedule, total, bs)
    decays = not branches and lr_plan.decays
    batches = TokenBatches(prepare_mixture(cfg.data, corpus) if cfg.data.mixture else corpus.train, t.seq_len,
                           micro, t.seed)
    windows, n_bytes = eval_windows(corpus, t.seq_len, t.eval_tokens)
    eval_at = set(eval_steps(total, bs, t.eval_points))
    branch_losses = {}  # branch step -> final held-out loss of that decay branch

    def run_due_branches(step: int) -> None:
        for at, k in sorted(branches.items()):
            branch_dir = run / f"decay_{k:g}N"
            if at > step:
                continue
            if runs.is_finished(branch_dir):
                branch_losses[at] = runs.read_result(branch_dir).get("final_eval_loss")
                continue
            source = run / "checkpoints" / f"step{at}"
            result = run_trial(branch_config(cfg, at, source, k), branch_dir, meta={**meta, "branch_of": str(run)})
            if result["status"] == "failed":
                raise RuntimeError(f"decay branch {branch_dir} failed: {result['error']}")
            branch_losses[at] = result.get("final_eval_loss")
            if callback is not None and dist.is_main and result.get("final_eval_loss") is not None:
                report(EvalReport(result["steps"], result["tokens"], result["final_eval_loss"], True, branch_dir.name))

    def report(r: EvalReport) -> None:
        """Callbacks run on rank 0; a stop it raises reaches every rank."""
        stop = None
        if callback is not None and dist.is_main:
            try:
                callback(r)
            except Exception as err:  # noqa: BLE001 -- re-raised below on every rank
                stop = err
        if dist.any(stop is not None):
            raise stop if stop is not None else RuntimeError("stopped by rank 0")

    def save(step: int, path: Path) -> None:
        dist.save(path, wrapped if dist.sharded else model, opt, {
            "step": step, "tokens": step * bs, "first_loss": first_loss, "train_s": train_s, "run_dir": str(run),
            "model": to_dict(model_cfg), "batch_size_tokens": bs, "schedule": to_dict(cfg.schedule)})

    step, first_loss, train_s = _start(cfg, run, wrapped if dist.sharded else model, opt, dist)
    if step == 0:
        loss0, bpb0 = evaluate(forward, windows, n_bytes, micro, dist, autocast)
        if dist.is_main:
            runs.append_metrics(run, {"step": 0, "tokens": 0, "eval_loss": loss0, "eval_bpb": bpb0, "train_s": 0.0})
        report(EvalReport(0, 0, loss0, False))
    run_due_branches(step)
    tick = time.time()
    train_step = TrainStep(model, wrapped, forward, opt, batches, dist, autocast, accum, cfg.optim.lr,
                           cfg.optim.grad_clip)
    while step < total:
        factor = schedule.lr_factor(step, lr_plan)
        loss_mean, grad_norm = train_step(step, factor)
        step += 1

        is_eval = step in eval_at or step in branches
        if not (is_eval or step == 1 or step % t.log_every == 0):
            continue
        train_loss = dist.mean(loss_mean).item()  # the only host sync, once per logged step
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        train_s += time.time() - tick
        first_loss = first_loss if first_loss is not None else train_loss
        row = {"step": step, "tokens": step * bs, "lr": cfg.optim.lr * factor, "train_loss": train_loss,
               "grad_norm": grad_norm.item(), "train_s": train_s}
        diverged = is_diverged(train_loss, first_loss, t.diverge_factor)
        if is_eval and not diverged:
            row["eval_loss"], row["eval_bpb"] = evaluate(forward, windows, n_bytes, micro, dist, autocast)
            diverged = not math.isfinite(row["eval_loss"])
        if dist.is_main:
            runs.append_metrics(run, row)
        if diverged:
            return diverged_result(train_loss, step, first_loss, t.diverge_factor)
        if step in branches:
            save(step, run / "checkpoints" / f"step{step}")
        if step < total and ((t.checkpoint_every and step % t.checkpoint_every == 0) or
                             (not t.checkpoint_every and is_eval)):
            save(step, run / runs.CHECKPOINT)
        if is_eval:
            report(EvalReport(step, step * bs, row["eval_loss"], decays and step == total))
        run_due_branches(step)
        tick = time.time()
    # the loss to compare trials on: after a decay (the last branch's end, or this run's own end)
    if branch_losses:
        last = branch_losses[max(branch_losses)]
    else:
        last = runs.read_metrics(run)[-1].get("eval_loss") if decays else None
    return {"status": "completed", "error": None, "decayed_eval_loss": last}
