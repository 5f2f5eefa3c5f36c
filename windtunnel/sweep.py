"""The Hydra app: `windtunnel sweep [-m] key=value ...` runs one trial per job. The only hydra/omegaconf importer.

Config flows one way: Hydra composes windtunnel/conf (schemas registered once from config.py), the app
converts it once with OmegaConf.to_object into a SweepJobConfig and hands plain dataclasses to run_trial
with the job's output directory. The job's return value goes to the sweeper: the final held-out loss, or
NaN for a diverged or failed trial (Optuna records NaN as a failed trial; the study goes on).

Sweep directories are named without a timestamp (runs/<sweep_name>/<override string>), so running the same
command again finds each grid point's run directory and skips finished runs: a killed sweep resumes.
"""
import math
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import sizing
from .config import ConfigError, SweepJobConfig, TuningConfig
from .train import EvalReport, StopTrial, member_configs, run_packed, run_trial

CONFIG_MODULE = "windtunnel.conf"
GRID_SWEEPERS = ("BasicSweeper", "WindtunnelGridSweeper")  # sweepers that expand the grid up front


def register_configs() -> None:
    """Register the structured-config schema once (conf/config.yaml names it in its defaults list)."""
    ConfigStore.instance().store(name="trial_schema", node=SweepJobConfig)


register_configs()


def to_job(cfg: DictConfig) -> SweepJobConfig:
    """DictConfig -> dataclasses, once; then the same checks as a single trial (tokens resolved from N)."""
    job = OmegaConf.to_object(cfg)
    sizing.resolve_tokens(job.trial()).validate()
    return job


def pruning_callback(tuning: TuningConfig):
    """The job-side half of pruning: report to the study's pruner through the trial this job runs.
    Only post-decay losses at equal tokens are reported ("decayed"); "divergence" stops a trial whose
    held-out loss turns NaN or rises above max_loss_ratio x its initial loss."""
    if tuning.trial_number < 0 or tuning.prune == "none":
        return None
    import optuna
    from hydra_plugins.windtunnel_optuna_sweeper.storage import make_storage
    study = optuna.load_study(study_name=tuning.study_name, storage=make_storage(tuning.storage))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, tuning.trial_number)
    trial = optuna.Trial(study, trial_id)
    initial = []

    def callback(report: EvalReport) -> None:
        if tuning.prune == "divergence":
            initial.append(report.loss) if not initial else None
            if not math.isfinite(report.loss) or report.loss > tuning.max_loss_ratio * initial[0]:
                raise StopTrial(f"divergence pruning: loss {report.loss:.4g} at {report.tokens} tokens "
                                f"(initial {initial[0]:.4g} x {tuning.max_loss_ratio})")
        elif report.decayed:
            trial.report(report.loss, step=report.tokens)
            if trial.should_prune():
                raise StopTrial(f"pruned by the study's pruner at {report.tokens} tokens after decay "
                                f"(loss {report.loss:.4g})")
    return callback


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> float:
    job = to_job(cfg)
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    job_num = OmegaConf.select(hc.job, "num", default=None, throw_on_missing=False)  # unset outside -m
    meta = {"sweep": job.sweep_name, "overrides": ",".join(hc.overrides.task), "job_num": job_num}
    if job.train.pack_members:
        return _run_pack(job, hc, meta)
    result = run_trial(job.trial(), out, callback=pruning_callback(job.tuning), meta=meta)
    print(f"[windtunnel] {out}: {result['status']} final_eval_loss={result.get('final_eval_loss')}", file=sys.stderr)
    if result["status"] == "pruned" and job.tuning.trial_number >= 0:
        import optuna
        raise optuna.TrialPruned(result.get("error") or "pruned")
    # the value to compare trials on: the loss after a decay when there is one (a WSD run's end, or its
    # last decay branch), else the final held-out loss; NaN for diverged or failed runs
    return _value(result, out)


def _value(result: dict, out: Path) -> float:
    value = result.get("decayed_eval_loss") or result.get("final_eval_loss")
    if result["status"] != "completed" or value is None:
        if result["status"] == "failed":
            print(f"[windtunnel] {out} failed: {result['error']}", file=sys.stderr)
        return float("nan")
    return float(value)


def _run_pack(job: SweepJobConfig, hc, meta: dict) -> float:
    """A packed job (hydra/sweeper=windtunnel_grid with train.pack=K): its members train as one model, each
    into the run dir the unpacked sweep would have given it. Returns the best member's value."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, naming = OverridesParser.create(), hc.job.config.override_dirname
    shared = [o for o in hc.overrides.task if not o.startswith("train.pack_members=")]
    dirs, metas = [], []
    sweep_dir = Path(hc.sweep.dir) if Path(hc.sweep.dir).is_absolute() else Path(hc.runtime.cwd) / hc.sweep.dir
    for member in job.train.pack_members:
        overrides = shared + member.split(" ")
        name = get_overrides_dirname(parser.parse_overrides(overrides), list(naming.exclude_keys),
                                     naming.item_sep, naming.kv_sep)
        dirs.append(sweep_dir / name)
        metas.append({**meta, "overrides": ",".join(overrides), "pack_job": hc.runtime.output_dir})
    results = run_packed(member_configs(job.trial()), dirs, metas)
    values = []
    for out, result in zip(dirs, results):
        print(f"[windtunnel] {out}: {result['status']} final_eval_loss={result.get('final_eval_loss')}", file=sys.stderr)
        values.append(_value(result, out))
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else float("nan")


def preflight(overrides: list[str], checked: Optional[dict] = None) -> int:
    """Compose and check every job of a grid sweep before any of them trains. Returns the number of jobs
    (and fills `checked` with the composed train.pack). Raises ConfigError naming the job's overrides and
    the bad field."""
    from hydra import compose, initialize_config_module
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if not _is_sweep(parser, o)],
                       return_hydra_config=True)
        grid = base.hydra.sweeper.get("_target_", "").endswith(GRID_SWEEPERS)
        if checked is not None:
            checked["pack"] = base.train.pack
        if base.train.pack > 1 and not grid:
            raise ConfigError(f"train.pack={base.train.pack} packs the points of a grid; the sweeper "
                              f"{base.hydra.sweeper.get('_target_')} proposes one trial per job: use train.pack=1")
        if grid:
            params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
            jobs = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)[0]
        else:  # a search sweeper samples its own values: check the fixed part here, the rest per trial
            jobs = [[o for o in overrides if not _is_sweep(parser, o)]]
        for job in jobs:
            try:
                to_job(compose("config", overrides=list(job)))
            except ConfigError as err:
                raise ConfigError(f"sweep job [{' '.join(job)}]: {err}") from None
    return len(jobs)


def _is_sweep(parser, text: str) -> bool:
    try:
        return parser.parse_override(text).is_sweep_override()
    except Exception:  # noqa: BLE001 -- Hydra will report the syntax error itself
        return False


def _has_interval(parser, overrides: list[str]) -> bool:
    from hydra.core.override_parser.types import IntervalSweep
    for text in overrides:
        try:
            if isinstance(parser.parse_override(text).value(), IntervalSweep):
                return True
        except Exception:  # noqa: BLE001
            pass
    return False


def main(argv: list[str]) -> int:
    """Entry for `windtunnel sweep ARGS`: check every grid job first, then hand ARGS to Hydra. A search
    space (interval) on the command line selects the Optuna sweeper, which is what it needs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    multirun = "-m" in argv or "--multirun" in argv
    # the trainer/ group fills the train section; trainer.pack=K is what people type for train.pack=K
    argv = ["train.pack=" + a.partition("=")[2] if a.startswith("trainer.pack=") else a for a in argv]
    overrides = [a for a in argv if not a.startswith("-")]
    if multirun and _has_interval(OverridesParser.create(), overrides) and \
            not any(a.startswith("hydra/sweeper=") for a in overrides):
        print("windtunnel sweep: interval(...) is a search space; using hydra/sweeper=windtunnel_optuna",
              file=sys.stderr)
        argv = [*argv, "hydra/sweeper=windtunnel_optuna"]
        overrides.append("hydra/sweeper=windtunnel_optuna")
    if multirun and len(overrides) == len([a for a in argv if a not in ("-m", "--multirun")]):
        checked: dict = {}
        preflight(overrides, checked)  # only when every argument is an override (no --cfg, --help, ...)
        if checked.get("pack", 1) > 1 and not any(a.startswith("hydra/sweeper=") for a in overrides):
            argv = [*argv, "hydra/sweeper=windtunnel_grid"]  # Hydra's basic sweeper, plus packing
    sys.argv = ["windtunnel sweep", *argv]
    app()
    return 0
