"""The Hydra app: `windtunnel sweep [-m] key=value ...` runs one trial (or one pack of trials) per job. Before
Hydra launches a grid, every job is composed once and checked (preflight); its run dir's name is read off its
overrides (compose.run_dir_name), not composed again.

Config flows one way: Hydra composes conf/ (shipped as windtunnel.conf; schemas and the model ladder
registered by windtunnel/compose.py), the job converts it once with compose.to_job into a SweepJobConfig and
hands plain dataclasses to run_trial with the job's output directory. The job's return value goes to the
sweeper: the held-out loss after a decay, or NaN for a diverged or failed trial (Optuna records NaN as a
failed trial; the study goes on).

Sweep directories are named without a timestamp (runs/<sweep_name>/<override string>), so running the same
command again finds each grid point's run directory and skips finished runs: a killed sweep resumes.
"""
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .. import compose
from ..config import ConfigError, check_storage, redact
from ..runs import Run
from . import grid
from .status import SWEEP_JOBS, SWEEP_START, finished, progress, redact_files, summarize

log = logging.getLogger("windtunnel")
LOG_LEVEL = "WINDTUNNEL_LOG_LEVEL"
GRID_SWEEPER = "windtunnel_grid"  # conf/config.yaml's default: expands the grid up front (and packs it)


@hydra.main(version_base="1.3", config_path="pkg://windtunnel.conf", config_name="config")
def app(cfg: DictConfig) -> float:
    from ..train import StopTrial, run_trial, run_trials  # torch only when a job runs
    log.setLevel(os.environ.get(LOG_LEVEL, "INFO"))  # --quiet / -v of `windtunnel sweep`, in every job process
    from .study import keep_alive, pruning_callback
    job = compose.to_job(cfg)
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    job_num = OmegaConf.select(hc.job, "num", default=None, throw_on_missing=False)  # unset outside -m
    meta = {"sweep": job.sweep_name, "overrides": redact(",".join(hc.overrides.task)), "job_num": job_num}
    if job.tuning.trial_number >= 0:
        meta["optuna_trial"] = job.tuning.trial_number  # read back by sweep/study.py (runs.Run.optuna_trial)
    sweep_dir = Path(hc.runtime.cwd) / hc.sweep.dir
    redact_files([*(out / hc.output_subdir).glob("*.yaml"), sweep_dir / "multirun.yaml"] if hc.output_subdir else
                  [sweep_dir / "multirun.yaml"])
    try:
        if job.train.pack_members:
            return _run_pack(job, hc, meta, run_trials)
        stop_beating = keep_alive(job.tuning)  # an Optuna trial's heartbeat while this process trains it
        try:
            result = run_trial(job.trial(), out, callback=pruning_callback(job.tuning, StopTrial), meta=meta)
        finally:
            stop_beating()
    except ConfigError as err:  # found at set-up and recorded in the run dir as failed: the sweep goes on
        log.error("%s failed: %s", out, err)
        progress(sweep_dir)
        return float("nan")
    log.info("%s: %s final_eval_loss=%s", out, result.status.value, result.final_eval_loss)
    progress(sweep_dir)
    if result.status == "pruned" and job.tuning.trial_number >= 0:
        import optuna
        raise optuna.TrialPruned(result.error or "pruned")
    return _value(result, out)


def _value(result, out: Path) -> float:
    """The value to compare trials on: the loss after a decay when there is one (a WSD run's end, or its
    last decay branch), else the final held-out loss; NaN for diverged or failed runs."""
    value = result.compared_loss
    if value is None:
        if result.status == "failed":
            log.error("%s failed: %s", out, result.error)
        return float("nan")
    return float(value)


def _run_pack(job, hc, meta: dict, run_trials) -> float:
    """A packed job (train.pack=K): its members, each composed from the shared overrides plus its own (as
    the unpacked sweep would compose it), train as one model, each into the run dir the unpacked sweep
    would have given it. Returns the best member's value."""
    shared = [o for o in hc.overrides.task if not o.startswith("train.pack_members=")]
    sweep_dir = Path(hc.runtime.cwd) / hc.sweep.dir  # (an absolute sweep.dir stays itself)
    cfgs, dirs, metas = [], [], []
    for member in job.train.pack_members:
        overrides = shared + member.split(" ")
        trial = compose.compose(overrides)
        trial.train.pack, trial.train.pack_members = 1, []  # how it was trained is config.json's "pack"
        cfgs.append(trial)
        dirs.append(sweep_dir / compose.run_dir_name(overrides))
        metas.append({**meta, "overrides": redact(",".join(overrides)), "pack_job": hc.runtime.output_dir})
    results = run_trials(cfgs, dirs, metas)
    values = []
    for out, result in zip(dirs, results):
        log.info("%s: %s final_eval_loss=%s", out, result.status.value, result.final_eval_loss)
        values.append(_value(result, out))
    progress(sweep_dir)
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else float("nan")


def preflight(overrides: list[str], checked: Optional[dict] = None) -> int:
    """Compose and check every job of a grid sweep before any of them trains. Returns the number of jobs
    (and fills `checked` with the sweeper's class). Raises ConfigError naming the job's overrides and
    the bad field."""
    fixed = [o for o in overrides if not grid.is_sweep(o)]
    base = compose.compose_config(fixed, hydra_node=True)
    sweeper = str(base.hydra.sweeper.get("_target_", ""))
    is_grid = sweeper.endswith(("WindtunnelGridSweeper", "BasicSweeper"))  # main() swaps the basic one for ours
    if checked is not None:
        checked["sweeper"] = sweeper
        checked["sweep_dir"] = Path(str(base.hydra.sweep.dir))
    launcher = str(base.hydra.launcher.get("_target_", ""))
    if "SlurmLauncher" in launcher and shutil.which("srun") is None:
        raise ConfigError("launcher=slurm submits through SLURM, and this machine has no srun on PATH: run the sweep "
                          "on the cluster's login node, or try the same jobs here with launcher=submitit_local")
    sampler = str(base.hydra.sweeper.get("sampler", "") or "")
    if sampler == "cmaes" and not compose.installed("cmaes"):
        raise ConfigError("hydra.sweeper.sampler=cmaes needs the cmaes package: pip install 'windtunnel[cmaes]' "
                          "(or use sampler=tpe, random, grid or gp)")
    for name, spec in (("hydra.sweeper.storage", base.hydra.sweeper.get("storage")), ("tuning.storage",
                                                                                      base.tuning.storage)):
        check_storage(name, str(spec or ""))  # a password written out would reach every job line and pickle
    if base.train.pack > 1 and not is_grid:
        raise ConfigError(f"train.pack={base.train.pack} packs the points of a grid; the sweeper {sweeper} proposes "
                          f"one trial per job: use train.pack=1")
    if is_grid:
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
        jobs = grid.expand(params + list(overrides))
    else:  # a search sweeper samples its own values: check the fixed part here, the rest per trial
        jobs = [fixed]
    trials, by_dir = [], {}
    for job in jobs:  # each job composed once; its run dir's name is read off its overrides
        try:
            trials.append((job, compose.compose_job(job).trial()))
        except ConfigError as err:
            raise ConfigError(f"sweep job [{' '.join(job)}]: {err}") from None
        if is_grid:  # two different trials must never share a run dir (e.g. data.path=A,B: paths are not in names)
            name = compose.run_dir_name(job)
            if "/" in name or name in (".", ".."):
                raise ConfigError(f"sweep job [{' '.join(job)}]: its run dir name {name!r} holds a '/', which would "
                                  f"nest it or put it outside the sweep dir; use values without '/' for swept or "
                                  f"named keys (paths belong in data.path, train.init_from: not part of run dir names)")
            if name in by_dir and by_dir[name][1] != trials[-1][1]:
                raise ConfigError(f"sweep jobs [{' '.join(by_dir[name][0])}] and [{' '.join(job)}] would train different "
                                  f"trials into one run directory {name or '(the sweep dir)'} (their difference is not "
                                  f"part of run dir names); run them as separate sweeps (sweep_name=... or "
                                  f"hydra.sweep.dir=...)")
            by_dir[name] = (job, trials[-1][1])
    if is_grid:  # a run dir that holds another trial is refused here, before any job trains
        sweep_dir = Path(str(base.hydra.sweep.dir))
        for name, (job, trial) in by_dir.items():
            try:
                Run(sweep_dir / name, trial).finished_result()
            except ConfigError as err:
                raise ConfigError(f"sweep job [{' '.join(job)}]: {err}") from None
    _check_budgets(trials)
    _check_writable(Path(str(base.hydra.sweep.dir)))  # last: a refused sweep leaves no folder behind
    if checked is not None:
        checked["run_dirs"] = [checked["sweep_dir"] / name for name in by_dir] if is_grid else None
    return len(jobs)


def _check_writable(sweep_dir: Path) -> None:
    """The sweep's folder exists (made here, as Hydra would) and takes a file, before any job: a read-only run root,
    or a path under a file, is one line here instead of a traceback from inside Hydra's launcher."""
    import tempfile
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=sweep_dir, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError(f"hydra.sweep.dir={sweep_dir}: cannot write there ({err.strerror or err}); give a writable "
                          f"folder with hydra.sweep.dir=DIR (runs go to runs/SWEEP_NAME under the working directory "
                          f"by default)") from None


def _check_budgets(trials: list) -> None:
    """Every job's data budget (data.max_epochs), before any trains: each distinct corpus is tokenized here
    once (the cache every job then reuses) and each trial's tokens are held against it. Keyed by the data
    section itself: data.cache_key stats every file of the corpus, which a 288-job grid should not do 288 times."""
    import json
    from dataclasses import asdict

    from .. import data  # torch, only when a sweep is about to run
    corpora: dict = {}
    for job, trial in trials:
        key = json.dumps(asdict(trial.data), sort_keys=True)
        if key not in corpora:
            try:
                corpora[key] = data.prepare(trial.data)
            except FileNotFoundError as err:  # a data.path that is not there: one line, before any job starts
                raise ConfigError(str(err)) from None
        try:
            data.check_budget(trial, corpora[key])
        except ConfigError as err:
            raise ConfigError(f"sweep job [{' '.join(job)}]: {err}") from None


def _has_interval(overrides: list[str]) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    parser = OverridesParser.create()
    for text in overrides:
        try:
            if isinstance(parser.parse_override(text).value(), IntervalSweep):
                return True
        except Exception:  # noqa: BLE001 -- Hydra reports the syntax error itself
            pass
    return False


HELP = """usage: windtunnel sweep [-m] [KEY=VALUE ...] [--cfg job] [--hydra-help]

One trial per job, composed from conf/ (the same trial `windtunnel train KEY=VALUE ...` builds).
-m runs a grid (a=1,2 b=x,y) or, with interval(...), an Optuna search; re-running a sweep skips
finished runs. Experiments: sweep=NAME (conf/sweep/; their questions and records under sweeps/).

== Configuration groups (group=option) ==
{groups}
== The defaults (override any field as section.field=value) ==
{config}"""


def print_help() -> None:
    """Hydra's own --help deep-copies its config repository once per group (about 2 s here); this reads the
    same groups from the packaged tree and composes the defaults once."""
    from importlib.resources import files
    tree = files("windtunnel.conf")
    groups = {d.name: sorted(f.name[:-5] for f in d.iterdir() if f.name.endswith(".yaml"))
              for d in tree.iterdir() if d.is_dir() and not d.name.startswith("_")}
    groups["model"] = list(compose.sizing.LADDER)
    lines = "".join(f"{g}: {', '.join(options)}\n" for g, options in sorted(groups.items()))
    print(HELP.format(groups=lines, config=OmegaConf.to_yaml(compose.compose_config([]))))


def _user_config_dirs(argv: list[str]) -> list[Path]:
    """The folders a user adds to Hydra's search path: --config-dir DIR (-cd DIR, --config-dir=DIR) and
    hydra.searchpath=[file://DIR,...] (pkg:// entries are packages, checked by their authors)."""
    dirs = []
    for i, a in enumerate(argv):
        if a in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
        elif a.lstrip("+").startswith("hydra.searchpath="):
            dirs += [e.strip()[len("file://"):] for e in a.split("=", 1)[1].strip("[]").split(",")
                     if e.strip().startswith("file://")]
    return [Path(d).expanduser() for d in dirs]


def _check_user_yaml(argv: list[str]) -> None:
    """Every YAML file under a user's config folders parses as plain YAML, before Hydra reads it: a file Hydra's
    loader cannot read (a `!!python/...` tag, which it refuses rather than runs; a syntax error) is one line that
    names the file and line, not Hydra's 30-line traceback."""
    import yaml
    for folder in _user_config_dirs(argv):
        for path in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
            try:
                yaml.safe_load(path.read_text(errors="replace"))
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f"{path}:{mark.line + 1}" if mark else str(path)
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                fix = ("configs hold plain values; Python tags (!!python/...) are not allowed: remove the tag"
                       if "python" in str(err) else "fix the YAML there")
                raise ConfigError(f"{where}: {problem.strip()}; {fix}") from None


def main(argv: list[str]) -> int:
    """Entry for `windtunnel sweep ARGS`: check every grid job first, then hand ARGS to Hydra. A search
    space (interval) on the command line selects the Optuna sweeper, which is what it needs."""
    if "--help" in argv or "-h" in argv:
        print_help()
        return 0
    _check_user_yaml(argv)
    multirun = "-m" in argv or "--multirun" in argv
    shown = [a for a in argv if a.split("=")[0] in ("--cfg", "-c", "--info", "-i")]
    if multirun and shown:  # Hydra would raise a bare ValueError here
        raise ConfigError(f"-m and {shown[0]} do not go together: {shown[0]} shows one job; drop -m and give one "
                          f"value per key (e.g. windtunnel sweep sweep=NAME {shown[0]} job)")
    argv = [a if a.startswith("-") else compose.normalize([a])[0] for a in argv]
    overrides = [a for a in argv if not a.startswith("-")]
    for a in overrides:
        if a.partition("=")[0].lstrip("+~") in ("trainer", "trainer.pack"):
            raise ConfigError(f"{a}: the trainer group is now `train` (one name for the group and the section): "
                              f"write {a.replace('trainer', 'train', 1)}")
    if multirun and _has_interval(overrides) and not any(a.startswith("hydra/sweeper=") for a in overrides):
        print("windtunnel sweep: interval(...) is a search space; using hydra/sweeper=windtunnel_optuna",
              file=sys.stderr)
        argv = [*argv, "hydra/sweeper=windtunnel_optuna"]
        overrides.append("hydra/sweeper=windtunnel_optuna")
    checked: dict = {}
    if not multirun and len(overrides) == len(argv):  # one job: the same checks, as one line, before Hydra runs it
        compose.compose_job(overrides)
    if multirun and len(overrides) == len([a for a in argv if a not in ("-m", "--multirun")]):
        preflight(overrides, checked)  # only when every argument is an override (no --cfg, --help, ...)
        if checked["sweeper"].endswith("BasicSweeper"):  # Hydra's default: ours is the same grid, plus packing
            argv = [*argv, f"hydra/sweeper={GRID_SWEEPER}"]
    if checked.get("run_dirs"):  # for the progress line each job logs
        done = sum(1 for d in checked["run_dirs"] if finished(d))
        sweep_dir = checked["sweep_dir"]  # (it may hold other sweeps' runs: progress counts this one's)
        ended = sum(1 for d in sweep_dir.iterdir() if d.is_dir() and finished(d)) if sweep_dir.is_dir() else 0
        os.environ[SWEEP_JOBS] = str(len(checked["run_dirs"]))
        os.environ[SWEEP_START] = f"{time.time()} {done} {ended}"
        if done:  # a resumed sweep: say what it will not train again
            print(f"windtunnel sweep: {done} of {len(checked['run_dirs'])} runs already finished under "
                  f"{checked['sweep_dir']}: skipped (delete a run dir to train it again)", file=sys.stderr)
    completing = "-sc" in argv or "--shell-completion" in argv  # the script Hydra writes calls the program by name
    # @hydra.main reads its arguments from sys.argv (it takes no others): set for the call, then put back
    saved, sys.argv = sys.argv, ["windtunnel" if completing else "windtunnel sweep", *argv]
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == "windtunnel"]  # Hydra configures the root logger itself:
    for handler in ours:  # with ours on as well, every line of --info (and of the jobs) would print twice
        root.removeHandler(handler)
    try:
        app()
    finally:
        sys.argv = saved
        for handler in ours:
            root.addHandler(handler)
    if not (multirun and checked):
        return 0
    failed = summarize(checked["sweep_dir"], checked.get("run_dirs"))
    return 1 if failed else 0
