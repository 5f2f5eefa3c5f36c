"""The one training loop. A Trainer trains K >= 1 Runs (runs/run.py) of one shape and batch size: K = 1 is a
lone trial (one process, or every rank under torchrun; resumable from its checkpoint; decay branches; eval
callbacks), K > 1 a pack. What it trains is an Engine (train/engines.py: ModuleEngine for one trial, PackedEngine
for a pack), used only through that protocol. Set-up, the step, held-out evals, metrics rows, checkpoints and the
divergence rule live here once; rank 0 writes, through the Runs.

Each step s (0-based) trains at lr_factor(s); a row is logged after the update at step s + 1 when it is
step 1, a multiple of train.log_every, an eval point (~eval_points log-spaced in tokens, plus
train.decay_eval_points spread over a WSD decay) or a branch point.
"""
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import __version__, runs, schedule, sizing
from ..config import SHAPE_KEYS, ConfigError, ModelConfig, TrialConfig, to_dict
from ..data import Corpus, epochs, held_out, prepare_mixture
from ..runs import Run
from .core import EvalCallback, EvalReport, cpu_threads, device_name, diverged_message, eval_steps, is_diverged
from .dist import Dist
from .engines import Engine, ModuleEngine, PackedEngine
from .progress import Progress
from .trackers import Trackers

# (the stable run's config, branch step, its checkpoint, multiple of N, branch run dir) -> the branch's RunResult
BranchRunner = Callable[[TrialConfig, int, Path, float, Path], runs.RunResult]


class Trainer:
    def __init__(self, trained: list[Run], dist: Dist, corpus: Corpus, callback: Optional[EvalCallback] = None,
                 run_branch: Optional[BranchRunner] = None):
        first = trained[0].trial
        t = first.train
        self.threads_before = torch.get_num_threads()  # restored after the run (a library call leaves no trace)
        threads = cpu_threads(first, dist.device)
        if threads:
            torch.set_num_threads(threads)
        first.split(dist.world)  # the global batch splits over the ranks: checked before any work
        model_cfg = with_vocab(first.model, corpus)
        self.cfgs = [dataclasses.replace(r.trial, model=model_cfg) for r in trained]
        self.runs, self.dist, self.callback, self.run_branch = trained, dist, callback, run_branch
        self.k = len(trained)
        self.trackers = []
        if dist.is_main:
            for cfg, run in zip(self.cfgs, trained):
                run.write_config(cfg, provenance(cfg, dist, corpus, **({"pack": self.k} if self.k > 1 else {})))
                if cfg.train.loggers:
                    self.trackers.append(Trackers(cfg.train.loggers, run.path, run.name, to_dict(cfg)))
        cfg = self.cfgs[0]
        source = prepare_mixture(cfg.data, corpus) if cfg.data.mixture else corpus.train
        heldout = held_out(corpus, t)
        self.engine: Engine = (ModuleEngine(cfg, dist, source, heldout) if self.k == 1 else
                               PackedEngine(self.cfgs, dist, source, heldout))
        self.total, self.batch_size_tokens = cfg.total_steps, t.batch_size_tokens
        # With decay branches the run itself stays stable; each branch decays on its own.
        self.branches = sizing.branch_steps(cfg)
        stable = dataclasses.replace(cfg.schedule, decay_frac=0.0) if self.branches else cfg.schedule
        self.plan = schedule.plan(stable, self.total, self.batch_size_tokens)
        self.decays = not self.branches and self.plan.decays
        self.eval_at = set(eval_steps(self.total, self.batch_size_tokens, t.eval_points,
                                      self.plan.decay_start if self.decays else 0, t.decay_eval_points))
        # the evals runs are compared on use train.final_eval_tokens: the end, and a decay's evals (WSD's curve)
        self.final_at = {self.total} | ({s for s in self.eval_at if s > self.plan.decay_start} if self.decays else set())
        self.branch_losses: dict[int, Optional[float]] = {}  # branch step -> final held-out loss of that branch

    # ------------------------------------------------------------------------- the loop

    def run(self) -> list[runs.RunResult]:
        """Train every trial to its end (or divergence); returns one RunResult per trial, in order."""
        try:
            return self._run()
        finally:
            for tracker in self.trackers:
                tracker.close()
            torch.set_num_threads(self.threads_before)

    def _run(self) -> list[runs.RunResult]:
        t, k, dist = self.cfgs[0].train, self.k, self.dist
        step, first, train_s = self._start()
        last_eval: list[Optional[float]] = [None] * k
        if step == 0:
            for i, (loss0, bpb0, se0) in enumerate(self.engine.evaluate()):
                self._append(i, {"step": 0, "tokens": 0, "eval_loss": loss0, "eval_bpb": bpb0, "eval_se": se0,
                                 "train_s": 0.0})
                self._report(EvalReport(0, 0, loss0, False))
        self._run_due_branches(step)
        live, done = list(range(k)), {}
        progress = Progress(self.runs[0].name if k == 1 else f"pack of {k}", self.total * self.batch_size_tokens,
                            step * self.batch_size_tokens, show=dist.is_main)
        tick = time.time()
        while step < self.total and live:
            factor = schedule.lr_factor(step, self.plan)
            loss, grad_norm = self.engine.train_step(step, factor)
            step += 1
            is_eval = step in self.eval_at or step in self.branches
            if not (is_eval or step == 1 or step % t.log_every == 0):
                continue
            losses, norms = self.engine.to_host(loss, grad_norm)
            train_s += time.time() - tick
            first = [f if f is not None else loss_i for f, loss_i in zip(first, losses)]
            diverged = {i: is_diverged(losses[i], first[i], t.diverge_factor) for i in live}
            evals = self.engine.evaluate(step in self.final_at) if is_eval and not all(diverged.values()) else None
            tokens = step * self.batch_size_tokens
            for i in list(live):
                row = {"step": step, "tokens": tokens, "lr": self.cfgs[i].optim.lr * factor, "train_loss": losses[i],
                       "grad_norm": norms[i], "train_s": train_s}
                if evals is not None and not diverged[i]:
                    row["eval_loss"], row["eval_bpb"], row["eval_se"] = evals[i]
                    last_eval[i] = row["eval_loss"]
                    diverged[i] = not math.isfinite(row["eval_loss"])
                self._append(i, row)
                if i == 0:
                    progress.update(tokens, losses[0], row.get("eval_loss"))
                if diverged[i]:  # recorded and stopped; the rest of a pack goes on
                    done[i] = runs.RunResult(runs.RunStatus.DIVERGED,
                                             error=diverged_message(losses[i], step, first[i], t.diverge_factor))
                    self.engine.freeze(i)
                    live.remove(i)
            if not live:
                break
            if self.engine.checkpoints:
                meta = {"first_loss": first[0], "train_s": train_s}
                if step in self.branches:
                    self._save(step, self.runs[0].branch_point(step), meta)
                if step < self.total and ((t.checkpoint_every and step % t.checkpoint_every == 0) or
                                          (not t.checkpoint_every and is_eval)):
                    self._save(step, self.runs[0].checkpoint, meta)
            if is_eval:
                self._report(EvalReport(step, tokens, last_eval[0], self.decays and step == self.total))
            self._run_due_branches(step)
            tick = time.time()
        progress.close()
        if live and step == self.total and self.engine.checkpoints:  # the last step's weights, when asked for
            meta = {"first_loss": first[0], "train_s": train_s, "final": True}
            if t.keep_checkpoint:
                self._save(step, self.runs[0].checkpoint, meta)
            if t.save_final:
                self._save(step, self.runs[0].final, meta)
        for i in live:
            # the loss to compare trials on: after a decay (the last branch's end, or this run's own end)
            decayed = (self.branch_losses[max(self.branch_losses)] if self.branch_losses else
                       last_eval[i] if self.decays else None)
            done[i] = runs.RunResult(runs.RunStatus.COMPLETED, decayed_eval_loss=decayed)
        return [done[i] for i in range(k)]

    # ------------------------------------------------------------------------- pieces

    def _append(self, i: int, row: dict) -> None:
        if self.dist.is_main:
            self.runs[i].append(row)
            if self.trackers:
                self.trackers[i].log(row)  # the same row, to TensorBoard / W&B / MLflow

    def _report(self, report: EvalReport) -> None:
        """Callbacks (a lone trial's) run on rank 0; a stop it raises reaches every rank."""
        if self.callback is None:
            return
        stop = None
        if self.dist.is_main:
            try:
                self.callback(report)
            except Exception as err:  # noqa: BLE001 -- re-raised below on every rank
                stop = err
        if self.dist.any(stop is not None):
            raise stop if stop is not None else RuntimeError("stopped by rank 0")

    def _save(self, step: int, path: Path, meta: dict) -> None:
        cfg = self.cfgs[0]
        self.engine.save(path, {"step": step, "tokens": step * self.batch_size_tokens, **meta,
                                "run_dir": str(self.runs[0].path.resolve()), "model": to_dict(cfg.model),
                                "batch_size_tokens": self.batch_size_tokens, "schedule": to_dict(cfg.schedule)})

    def _start(self) -> tuple[int, list[Optional[float]], float]:
        """(step, first train loss per trial, train seconds): from a lone run's own checkpoint, or from
        train.init_from (a stable-phase checkpoint of another run, whose curve up to that step is copied),
        else a fresh start (a pack always starts fresh: it keeps no checkpoints)."""
        cfg, run = self.cfgs[0], self.runs[0]
        path = run.resume_from(write=self.dist.is_main) if self.engine.checkpoints else None
        if path is None:
            if self.dist.is_main:
                for r in self.runs:
                    r.keep_metrics([])
            return 0, [None] * self.k, 0.0
        meta = runs.read_meta(path)
        theirs, ours = meta.get("model", {}), to_dict(cfg.model)
        bad = [f"{k} {theirs.get(k)} there, {ours[k]} here" for k in SHAPE_KEYS if k in theirs and theirs[k] != ours[k]]
        if bad:
            raise ConfigError(f"checkpoint {path} is from a different model shape ({'; '.join(bad)}); "
                              f"start from a checkpoint of model={cfg.model.name}")
        try:
            self.engine.load(path)
        except runs.UnreadableCheckpoint as err:
            if path != run.checkpoint:  # another run's checkpoint (train.init_from): its owner must see to it
                raise
            if self.dist.is_main:  # this run's own: kept aside, and the run trains again from the start
                run.set_aside(str(err))
                for r in self.runs:
                    r.keep_metrics([])
            self.dist.barrier()
            return 0, [None] * self.k, 0.0
        step = meta["step"]
        if self.dist.is_main:
            source = run.metrics() if path == run.checkpoint else Run(meta.get("run_dir", "")).metrics()
            run.keep_metrics([m for m in source if m["step"] <= step])
        return step, [meta["first_loss"]], meta["train_s"]

    def _run_due_branches(self, step: int) -> None:
        """Decay branches whose start step has been reached (each continues this run's checkpoint there)."""
        for at, multiple in sorted(self.branches.items()):
            branch_dir = self.runs[0].branch(multiple)
            if at > step or at in self.branch_losses:
                continue
            done = Run(branch_dir).result()
            if done is not None and done.finished:
                self.branch_losses[at] = done.final_eval_loss
                continue
            result = self.run_branch(self.cfgs[0], at, self.runs[0].branch_point(at), multiple, branch_dir)
            if result.status == runs.RunStatus.FAILED:
                raise RuntimeError(f"decay branch {branch_dir} failed: {result.error}")
            self.branch_losses[at] = result.final_eval_loss
            if result.final_eval_loss is not None:
                self._report(EvalReport(result.steps, result.tokens, result.final_eval_loss, True, branch_dir.name))


def with_vocab(model: ModelConfig, corpus) -> ModelConfig:
    """The model config with vocab_size taken from the corpus's tokenizer when it is 0."""
    model = dataclasses.replace(model, vocab_size=model.vocab_size or corpus.vocab_size)
    if model.vocab_size < corpus.vocab_size:
        raise ConfigError(f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's "
                          f"{corpus.vocab_size}; set model.vocab_size=0 to take it from the tokenizer")
    return model


def provenance(cfg: TrialConfig, dist: Dist, corpus, **extra) -> dict:
    """What config.json records beside the trial: the code, the machine, N and FLOPs, the corpus."""
    return {**runs.git_commit(), "version": __version__, "device": device_name(dist.device), "torch": torch.__version__,
            "world_size": dist.world, "parallel": dist.parallel, "N": sizing.n_params(cfg.model),
            "N_embedding": sizing.n_embedding_params(cfg.model),
            "flops_per_token": sizing.flops_per_token(cfg.model, cfg.train.seq_len), "corpus": str(corpus.path),
            "corpus_manifest": corpus.meta["manifest"], "unique_train_tokens": corpus.unique_train_tokens,
            "planned_epochs": epochs(cfg, corpus), **extra}
