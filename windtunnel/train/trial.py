"""run_trial / run_trials: Runs (runs/run.py) are asked whether to skip, refuse or resume; the corpus, the data
budget and the memory are checked before anything is written; the rest train (train/trainer.py) under their locks,
and every failure is recorded in its run dir. Also the decay branches of a stable run."""
import dataclasses
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Optional

from .. import data, runs, schedule, sizing
from ..compose import compose_record
from ..config import PACKABLE, ConfigError, TrialConfig, override, to_dict
from ..runs import Run, RunResult, RunStatus
from .core import EvalCallback, StopTrial, check_memory
from .dist import Dist
from .trainer import Trainer

log = logging.getLogger("windtunnel")


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
    todo_runs = [Run(d, c, m) for c, d, m in zip(cfgs, out_dirs, metas or [{}] * len(cfgs))]
    for run in todo_runs:
        run.trial.validate()
    if len(todo_runs) > 1:
        _check_packable([r.trial for r in todo_runs])
        if callback is not None:
            raise ConfigError("eval callbacks (pruning) need one trial per process; use train.pack=1")
    first = todo_runs[0].trial.train
    dist = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun the ranks decide together (below)
        if len(todo_runs) > 1:
            raise ConfigError("a packed job runs in one process; launch it without torchrun or use train.pack=1")
        dist = Dist(first.device, first.parallel)
    results: list[Optional[RunResult]] = [r.finished_result() for r in todo_runs]
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
        corpus = data.prepare(todo_runs[0].trial.data)  # before any run dir is made: the budget is checked on it
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 -- a corpus that cannot be read fails the run, recorded below
        data_error = err
    for i in todo:
        if corpus is not None:
            data.check_budget(todo_runs[i].trial, corpus)
            todo_runs[i].check_corpus(corpus.meta["manifest"])
    if dist is None:
        dist = Dist(first.device, first.parallel if len(todo) == 1 else "none")
    if corpus is not None:  # before any run dir or tensor exists
        try:
            check_memory([todo_runs[i].trial for i in todo], corpus.vocab_size, dist.device, dist.world, dist.sharded)
        except ConfigError:
            dist.close()
            raise
    busy: dict[int, str] = {}
    if dist.is_main:
        for i in todo:
            try:
                todo_runs[i].acquire()  # before anything is written there: one writer per run dir
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
        return _train(todo_runs, results, todo, dist, corpus, data_error, callback)
    finally:
        if dist.is_main:
            for i in todo:
                todo_runs[i].release()


def _train(all_runs: list[Run], results, todo, dist, corpus, data_error, callback) -> list[RunResult]:
    mine = [all_runs[i] for i in todo]
    if dist.is_main:
        for run in mine:
            run.start(os.getpid())
    dist.barrier()
    start = time.time()
    branch = _branch_runner(mine[0].meta) if len(mine) == 1 else None
    try:
        if data_error is not None:
            raise data_error
        outcome = Trainer(mine, dist, corpus, callback=callback, run_branch=branch).run()
    except StopTrial as stop:
        outcome = [RunResult(RunStatus.PRUNED, error=str(stop))]
    except ConfigError as err:  # a setup error found before training: recorded, then raised to the caller
        if dist.is_main:
            for run in mine:
                run.fail(str(err))
        raise
    except Exception as err:  # noqa: BLE001 -- any failure is recorded, never loses the run directory
        outcome = [RunResult(RunStatus.FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
                   for _ in mine]
    dist.barrier()
    for i, run, result in zip(todo, mine, outcome):
        result = dataclasses.replace(result, world_size=dist.world, pack=len(mine), session_wall_s=time.time() - start)
        results[i] = run.finish(result, write=dist.is_main)
    dist.close()
    return results


def _check_packable(cfgs: list[TrialConfig]) -> None:
    for cfg in cfgs[1:]:
        diff = [d for d in runs.differences(to_dict(cfgs[0]), to_dict(cfg)) if d.partition(":")[0] not in PACKABLE]
        if diff:
            raise ConfigError(f"packed trials differ in {diff[0]}; only {', '.join(PACKABLE)} may differ within a "
                              f"pack: use train.pack=1")
    if cfgs[0].train.branch_at_n or cfgs[0].train.init_from or cfgs[0].train.save_final:
        raise ConfigError("train.branch_at_n, train.init_from and train.save_final are not supported in a packed job; "
                          "use train.pack=1")


def branch_config(cfg: TrialConfig, step: int, checkpoint: Path, multiple: float) -> TrialConfig:
    """The decay branch of a stable run at `step`: WSD(D, decay_frac x D) with D = step / (1 - decay_frac),
    starting from the stable checkpoint (built by compose_record, as any trial from a record)."""
    decay = sizing.branch_decay_steps(step, cfg.schedule.decay_frac)
    return compose_record(cfg, schedule.decay_overrides(cfg, step, decay, str(checkpoint)) +
                          [override("name", f"{cfg.name}-decay{multiple:g}N")])


def _branch_runner(meta: dict):
    def run_branch(cfg: TrialConfig, step: int, checkpoint: Path, multiple: float, out: Path) -> RunResult:
        return run_trial(branch_config(cfg, step, checkpoint, multiple), out, meta={**meta, "branch_of": str(out.parent)})
    return run_branch
