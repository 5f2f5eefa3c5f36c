"""run_packed: K trials that differ only in LR and seed, trained in one process as one fused model
(train/packed.py), each writing the run directory it would write alone: the same config.json trial, the
same metrics rows at the same steps, its own result and status. A trial that diverges is recorded as
diverged at the step a lone run would stop, and the others continue.

Packed runs keep no mid-run checkpoint: a killed pack restarts its unfinished trials from step 0 (finished
ones are skipped). Decay branches, warm starts, pruning callbacks and torchrun are for single trials.
"""
import copy
import dataclasses
import math
import os
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from .. import runs, schedule, sizing
from ..config import PACKABLE, ConfigError, TrialConfig, apply_override, to_dict
from ..data import Prefetcher, TokenBatches, eval_windows, prepare, prepare_mixture
from .core import autocast_for, diverged_result, eval_steps, heldout_nats, is_diverged, loss_and_bpb
from .dist import Dist
from .packed import PackedModel
from .trial import finish, finished_result, with_vocab, write_config


def member_configs(cfg: TrialConfig) -> list[TrialConfig]:
    """The trials of a packed job: cfg with each of train.pack_members' overrides applied (pack fields
    reset, so each member's config is the one a lone run of it would record)."""
    out = []
    for item in cfg.train.pack_members:
        member = copy.deepcopy(cfg)
        member.train.pack_members, member.train.pack = [], 1  # how it was trained is config.json's "pack"
        for part in item.split(" "):
            apply_override(member, part)
        out.append(member)
    return out


def _check_packable(cfgs: list[TrialConfig]) -> None:
    first = to_dict(cfgs[0])
    for cfg in cfgs[1:]:
        d = to_dict(cfg)
        for section in first:
            if not isinstance(first[section], dict):
                continue
            for key in first[section]:
                name = f"{section}.{key}"
                if first[section][key] != d[section][key] and name not in PACKABLE:
                    raise ConfigError(f"packed trials differ in {name} ({first[section][key]!r} vs {d[section][key]!r});"
                                      f" only {', '.join(PACKABLE)} may differ within a pack: use train.pack=1")
    t = cfgs[0].train
    if t.branch_at_n or t.init_from:
        raise ConfigError("train.branch_at_n and train.init_from are not supported in a packed job; use train.pack=1")


def run_packed(cfgs: list[TrialConfig], out_dirs: list, metas: Optional[list[dict]] = None) -> list[dict]:
    """Train the trials cfgs (equal but for optim.lr and train.seed) into out_dirs as one packed model.
    Returns their results in order; finished run dirs are skipped, failures are recorded per run dir.
    metas[i] (e.g. the sweep and the member's overrides) goes into run i's config.json."""
    cfgs = [sizing.resolve_tokens(c).validate() for c in cfgs]
    _check_packable(cfgs)
    dirs = [Path(d) for d in out_dirs]
    results: list[Optional[dict]] = [finished_result(c, d) for c, d in zip(cfgs, dirs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    dist = Dist(cfgs[0].train.device, "none")
    if dist.world > 1:
        raise ConfigError("a packed job runs in one process; launch it without torchrun or use train.pack=1")
    for i in todo:
        dirs[i].mkdir(parents=True, exist_ok=True)
        runs.write_json(dirs[i] / runs.RESULT, {"status": "running", "pid": os.getpid()})
    start = time.time()
    try:
        outcome = _train([cfgs[i] for i in todo], [dirs[i] for i in todo], [(metas or [{}] * len(cfgs))[i] for i in todo],
                         dist)
    except Exception as err:  # noqa: BLE001 -- recorded in every unfinished run dir, never loses them
        failed = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        outcome = [failed] * len(todo)
    for i, result in zip(todo, outcome):
        result = {**result, "world_size": 1, "pack": len(todo), "session_wall_s": time.time() - start}
        results[i] = finish(cfgs[i], dirs[i], result)
    return results


def _train(cfgs: list[TrialConfig], dirs: list[Path], metas: list[dict], dist: Dist) -> list[dict]:
    cfg, t, device = cfgs[0], cfgs[0].train, dist.device
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    micro = cfg.micro_batch
    if t.batch_size_tokens % (t.seq_len * micro):
        raise ConfigError(f"train.batch_size_tokens={t.batch_size_tokens} is not a multiple of micro-batch {micro} x "
                          f"seq_len {t.seq_len}; use a multiple of {t.seq_len * micro}")
    corpus = prepare(cfg.data)
    model_cfg = with_vocab(cfg.model, corpus)
    cfgs = [dataclasses.replace(c, model=model_cfg) for c in cfgs]
    for c, run, meta in zip(cfgs, dirs, metas):
        write_config(run, c, meta, dist, corpus, pack=len(cfgs))
        runs.rewrite_metrics(run, [])
    k, total, bs, accum = len(cfgs), cfg.total_steps, t.batch_size_tokens, cfg.grad_accum
    seeds = [c.train.seed for c in cfgs]
    shared = len(set(seeds)) == 1  # one data stream for all (paired comparison), else one per trial
    mode = t.compile_mode
    if mode == "auto":  # CUDA graphs for the fused step when its grads are used at once (one micro-batch)
        mode = "reduce-overhead" if device.type == "cuda" and accum == 1 else "default"
    model = PackedModel(model_cfg, cfg.optim, [c.optim.lr for c in cfgs], seeds, device, autocast_for(device, t.dtype),
                        shared, compile=t.compile, compile_mode=mode)
    source = prepare_mixture(cfg.data, corpus) if cfg.data.mixture else corpus.train
    loaders = [Prefetcher(TokenBatches(source, t.seq_len, micro, s), 0, accum, device)
               for s in (seeds[:1] if shared else seeds)]
    windows, n_bytes = eval_windows(corpus, t.seq_len, t.eval_tokens)
    lr_plan = schedule.plan(cfg.schedule, total, bs)
    eval_at = set(eval_steps(total, bs, t.eval_points))

    def evaluate() -> list[tuple[float, float]]:
        nats = heldout_nats(model.losses, windows, micro, device).tolist()  # (K,): one host sync for all trials
        return [loss_and_bpb(n, windows, n_bytes) for n in nats]

    live = list(range(k))
    done: dict[int, dict] = {}
    first: list[Optional[float]] = [None] * k
    for i, (loss0, bpb0) in enumerate(evaluate()):
        runs.append_metrics(dirs[i], {"step": 0, "tokens": 0, "eval_loss": loss0, "eval_bpb": bpb0, "train_s": 0.0})
    train_s, tick, step = 0.0, time.time(), 0
    while step < total and live:
        micro_batches = []
        for batch in zip(*(loader.get(step) for loader in loaders)):  # one (x, y) per data stream
            micro_batches.append(batch[0] if shared else (torch.stack([b[0] for b in batch]),  # (K, B, T)
                                                          torch.stack([b[1] for b in batch])))
        factor = schedule.lr_factor(step, lr_plan)
        loss_mean, grad_norm = model.train_step(micro_batches, factor)
        step += 1
        is_eval = step in eval_at
        if not (is_eval or step == 1 or step % t.log_every == 0):
            continue
        train_loss, norms = loss_mean.tolist(), grad_norm.tolist()  # the only host sync of a logged step
        train_s += time.time() - tick
        evals = evaluate() if is_eval else None
        for i in list(live):
            c = cfgs[i]
            first[i] = first[i] if first[i] is not None else train_loss[i]
            row = {"step": step, "tokens": step * bs, "lr": c.optim.lr * factor, "train_loss": train_loss[i],
                   "grad_norm": norms[i], "train_s": train_s}
            diverged = is_diverged(train_loss[i], first[i], c.train.diverge_factor)
            if evals is not None and not diverged:
                row["eval_loss"], row["eval_bpb"] = evals[i]
                diverged = not math.isfinite(row["eval_loss"])
            runs.append_metrics(dirs[i], row)
            if diverged:  # as a lone run: recorded and stopped; the rest of the pack goes on
                done[i] = diverged_result(train_loss[i], step, first[i], c.train.diverge_factor)
                model.freeze(i)
                live.remove(i)
        tick = time.time()
    for i in live:
        last = runs.read_metrics(dirs[i])[-1].get("eval_loss") if lr_plan.decays else None
        done[i] = {"status": "completed", "error": None, "decayed_eval_loss": last}
    return [done[i] for i in range(k)]
