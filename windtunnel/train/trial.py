"""The life cycle of run directories: refuse a different trial, skip a finished one, resume an unfinished
one, train the rest (train/trainer.py), record any failure; and the decay branches of a stable run."""
import dataclasses
import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

from .. import data, runs, schedule, sizing
from ..config import PACKABLE, ConfigError, TrialConfig, to_dict
from ..runs import lock
from .core import EvalCallback, StopTrial, check_memory
from .dist import Dist
from .trainer import Trainer

RunResult, RunStatus = runs.RunResult, runs.RunStatus
log = logging.getLogger("windtunnel")

# config keys that do not change what a run computes, so a run dir may be continued with other values
IGNORED_KEYS = ("train.skip_completed", "train.keep_checkpoint", "train.save_final", "train.device", "train.compile",
                "train.log_every", "train.threads", "train.parallel", "train.compile_mode", "train.pack",
                "train.pack_members", "train.loggers")


def run_trial(cfg: TrialConfig, out_dir, callback: Optional[EvalCallback] = None,
              meta: Optional[dict] = None) -> RunResult:
    """Train one trial into out_dir and return its result (also written to out_dir/result.json).

    A finished run (completed or diverged) is returned as is when train.skip_completed; an unfinished one
    resumes from its checkpoint. A run dir that holds a different trial is refused (logged runs are never
    overwritten). Exceptions end the run as 'failed' with the message; they are not raised, except a
    ConfigError found while setting up, which is recorded and raised. `meta` (e.g. the sweep name and
    override string) is stored in config.json. Under torchrun every rank calls it.
    """
    return run_trials([cfg], [out_dir], [meta or {}], callback)[0]


def run_trials(cfgs: list[TrialConfig], out_dirs: list, metas: Optional[list[dict]] = None,
               callback: Optional[EvalCallback] = None) -> list[RunResult]:
    """Train trials into out_dirs: one trial alone (any process count), or several that differ only in
    optim.lr and train.seed as one packed model in one process. Finished run dirs are skipped and
    failures are recorded per run dir; a callback (pruning) needs a single trial."""
    cfgs = [sizing.resolve_tokens(c).validate() for c in cfgs]
    dirs, metas = [Path(d) for d in out_dirs], list(metas or [{}] * len(cfgs))
    if len(cfgs) > 1:
        _check_packable(cfgs)
        if callback is not None:
            raise ConfigError("eval callbacks (pruning) need one trial per process; use train.pack=1")
    dist = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun the ranks decide together (below)
        if len(cfgs) > 1:
            raise ConfigError("a packed job runs in one process; launch it without torchrun or use train.pack=1")
        dist = Dist(cfgs[0].train.device, cfgs[0].train.parallel)
    results: list[Optional[RunResult]] = [finished_result(c, d) for c, d in zip(cfgs, dirs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if dist is not None and dist.any(bool(todo)) and not todo:
        # this rank read a finished run that another rank did not (another writer finished it in between):
        # a rank that returned here would leave the others waiting for it forever, so every rank trains
        results, todo = [None], [0]
    if not todo:
        if dist is not None:
            dist.close()
        return results
    corpus, data_error = None, None
    try:
        corpus = data.prepare(cfgs[0].data)  # before any run dir is made: the budget is checked on it
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 -- a corpus that cannot be read fails the run, recorded below
        data_error = err
    for i in todo:
        if corpus is not None:
            data.check_budget(cfgs[i], corpus)
            _check_corpus(dirs[i], corpus)
    if dist is None:
        dist = Dist(cfgs[0].train.device, cfgs[0].train.parallel if len(todo) == 1 else "none")
    if corpus is not None:  # before any run dir or tensor exists
        try:
            check_memory([cfgs[i] for i in todo], corpus.vocab_size, dist.device, dist.world, dist.sharded)
        except ConfigError:
            dist.close()
            raise
    busy: dict[int, str] = {}
    if dist.is_main:
        for i in todo:
            dirs[i].mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(dirs[i])  # before anything is written there: one writer per run dir
            except runs.RunBusy as err:
                busy[i] = str(err)
    if dist.any(bool(busy)) and not busy:  # under torchrun: rank 0 found it busy, so every rank skips it
        busy = {i: "another process is training it; skipped" for i in todo}
    for i, message in busy.items():
        log.warning(message)
        results[i] = RunResult(RunStatus.RUNNING, error=message)  # not written: the dir is another process's
    todo = [i for i in todo if i not in busy]
    if not todo:
        dist.close()
        return results
    try:
        return _train(cfgs, dirs, metas, results, todo, dist, corpus, data_error, callback)
    finally:
        if dist.is_main:
            for i in todo:
                lock.release(dirs[i])


def _train(cfgs, dirs, metas, results, todo, dist, corpus, data_error, callback) -> list[RunResult]:
    if dist.is_main:
        for i in todo:
            runs.write_result(dirs[i], RunResult(RunStatus.RUNNING, pid=os.getpid()))
    dist.barrier()
    start = time.time()
    branch = _branch_runner(metas[todo[0]]) if len(todo) == 1 else None
    try:
        if data_error is not None:
            raise data_error
        trainer = Trainer([cfgs[i] for i in todo], [dirs[i] for i in todo], [metas[i] for i in todo], dist, corpus,
                          callback=callback, run_branch=branch)
        outcome = trainer.run()
    except StopTrial as stop:
        outcome = [RunResult(RunStatus.PRUNED, error=str(stop))]
    except ConfigError as err:  # a setup error found before training: recorded, then raised to the caller
        if dist.is_main:
            for i in todo:
                runs.write_result(dirs[i], RunResult(RunStatus.FAILED, error=str(err)))
        raise
    except Exception as err:  # noqa: BLE001 -- any failure is recorded, never loses the run directory
        outcome = [RunResult(RunStatus.FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
                   for _ in todo]
    dist.barrier()
    for i, result in zip(todo, outcome):
        result = dataclasses.replace(result, world_size=dist.world, pack=len(todo), session_wall_s=time.time() - start)
        results[i] = finish(cfgs[i], dirs[i], result, write=dist.is_main)
    dist.close()
    return results


def _check_packable(cfgs: list[TrialConfig]) -> None:
    for cfg in cfgs[1:]:
        diff = [d for d in _differences(to_dict(cfgs[0]), to_dict(cfg)) if d.partition(":")[0] not in PACKABLE]
        if diff:
            raise ConfigError(f"packed trials differ in {diff[0]}; only {', '.join(PACKABLE)} may differ within a "
                              f"pack: use train.pack=1")
    if cfgs[0].train.branch_at_n or cfgs[0].train.init_from or cfgs[0].train.save_final:
        raise ConfigError("train.branch_at_n, train.init_from and train.save_final are not supported in a packed job; "
                          "use train.pack=1")


def _differences(old: dict, new: dict, prefix: str = "", defaults: Optional[dict] = None) -> list[str]:
    """Fields that differ between two recorded trials. A field the old record lacks (added to config.py since
    it was written) counts only when the new trial sets it away from its default, so an upgrade keeps resuming
    and skipping the runs it finds."""
    defaults = to_dict(TrialConfig()) if defaults is None else defaults
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{name}.", defaults.get(key) or {})
        elif key not in old and key in defaults and b == defaults[key]:
            continue
        elif a != b and name not in IGNORED_KEYS and not (name == "model.vocab_size" and b == 0):
            out.append(f"{name}: {a!r} there, {b!r} now")
    return out


def finished_result(cfg: TrialConfig, run: Path) -> Optional[RunResult]:
    """The result of run dir `run` when it holds this trial, finished (and train.skip_completed), else None.
    Raises ConfigError when it holds a different trial: logged runs are never overwritten. The run dir records
    the trial with its tokens resolved (tokens_per_param, decay branches), so `cfg` is compared resolved too."""
    existing = runs.read_json(run / runs.CONFIG) if (run / runs.CONFIG).exists() else None
    if existing and "trial" in existing:
        diff = _differences(existing["trial"], to_dict(sizing.resolve_tokens(cfg)))
        if diff:
            raise ConfigError(f"run directory {run} holds a different trial ({'; '.join(diff[:3])}); "
                              f"use another directory: logged runs are never overwritten")
    if cfg.train.skip_completed and runs.is_finished(run):
        return runs.read_result(run)
    return None


def _check_corpus(run: Path, corpus) -> None:
    """An unfinished run continues only on the corpus it began on (its files' manifest)."""
    existing = runs.read_json(run / runs.CONFIG) if (run / runs.CONFIG).exists() else None
    recorded = (existing or {}).get("corpus_manifest")
    if recorded and recorded != corpus.meta["manifest"]:
        raise ConfigError(f"run directory {run} began on another corpus (manifest {recorded} there, "
                          f"{corpus.meta['manifest']} now: files were added, removed or changed); restore the "
                          f"corpus, or train into another directory")


def overfitting(metrics: list[dict], margin: float) -> Optional[float]:
    """The rise (final / best held-out loss - 1) of a run whose held-out loss ended more than `margin` above
    its best while its train loss went on falling (it memorised its data); None for any other curve."""
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    train = [(m["step"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    if len(evals) < 3 or not train:
        return None
    best_step, best = min(evals, key=lambda e: e[1])
    final = evals[-1][1]
    at_best = [loss for step, loss in train if step <= best_step] or [train[0][1]]
    return final / best - 1 if final > best * (1 + margin) and train[-1][1] < at_best[-1] else None


def finish(cfg: TrialConfig, run: Path, result: RunResult, write: bool = True) -> RunResult:
    """Write result.json: the loop's outcome plus the summary of the logged metrics; drop checkpoints of a
    finished run unless train.keep_checkpoint."""
    metrics = runs.read_metrics(run)
    evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
    config = runs.read_json(run / runs.CONFIG) or {}  # written by the trainer, with the tokenizer's vocab filled in
    flops_per_token = config.get("flops_per_token") or sizing.flops_per_token(cfg.model, cfg.train.seq_len)
    last = metrics[-1] if metrics else {}
    train_s, tokens = last.get("train_s") or 0.0, last.get("tokens", 0)
    result = dataclasses.replace(
        result, final_eval_loss=evals[-1] if evals else None, best_eval_loss=min(evals) if evals else None,
        final_eval_bpb=next((m["eval_bpb"] for m in reversed(metrics) if m.get("eval_bpb") is not None), None),
        steps=last.get("step", 0), tokens=tokens, N=sizing.n_params(cfg.model), flops=flops_per_token * tokens,
        train_s=train_s, tokens_per_s=tokens / train_s if train_s else None, pid=None,
        # the planned epochs (every source at its share, data.epochs) scaled to the tokens this run trained
        epochs=config["planned_epochs"] * tokens / sizing.tokens_trained(cfg) if config.get("planned_epochs") else None,
        overfit_rise=overfitting(metrics, cfg.train.overfit_margin))
    result = dataclasses.replace(result, overfit=result.overfit_rise is not None)
    if not write:  # other ranks under torchrun: rank 0 writes
        return result
    result = runs.write_result(run, result)
    if result.finished and not cfg.train.keep_checkpoint:
        shutil.rmtree(run / runs.CHECKPOINT, ignore_errors=True)
        shutil.rmtree(run / "checkpoints", ignore_errors=True)  # branch points; every branch has finished
    return result


def branch_config(cfg: TrialConfig, step: int, checkpoint: Path, multiple: float) -> TrialConfig:
    """The decay branch of a stable run at `step`: WSD(D, decay_frac x D) with D = step / (1 - decay_frac),
    starting from the stable checkpoint."""
    frac = cfg.schedule.decay_frac
    branch = schedule.decay_from(cfg, step, max(1, round(step * frac / (1 - frac))), str(checkpoint))
    return dataclasses.replace(branch, name=f"{cfg.name}-decay{multiple:g}N")


def _branch_runner(meta: dict):
    def run_branch(cfg: TrialConfig, step: int, checkpoint: Path, multiple: float, out: Path) -> RunResult:
        return run_trial(branch_config(cfg, step, checkpoint, multiple), out, meta={**meta, "branch_of": str(out.parent)})
    return run_branch
