"""The sweeper: ask Optuna for a batch of trials, launch them, tell Optuna their values."""
import contextlib
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from windtunnel.config import check_storage, redact
from windtunnel.sweep.study import fail_interrupted, make_storage

log = logging.getLogger(__name__)
SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp")
PRUNERS = ("none", "divergence", "median", "successive_halving")
STARTUP_SAMPLERS = ("tpe", "gp", "cmaes")  # those with an n_startup_trials of random trials


class SearchSpaceError(ValueError):
    pass


def distribution(key: str, override: Override):
    """One search dimension from Hydra's override grammar."""
    import optuna.distributions as d
    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution(list(override.sweep_string_iterator()))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None or stop <= start:
            raise SearchSpaceError(f"{key}={override.input_line.split('=', 1)[1]}: range needs start < stop")
        last = start + step * math.ceil((stop - start) / step - 1)  # Hydra's stop is exclusive
        if all(isinstance(x, int) for x in (start, stop, step)):
            return d.IntDistribution(start, last, step=step)
        return d.FloatDistribution(start, last, step=step)
    if isinstance(value, IntervalSweep):
        if value.start >= value.end:
            raise SearchSpaceError(f"{key}: interval({value.start}, {value.end}) has low >= high; write "
                                   f"interval({value.end}, {value.start})")
        if log_scale and value.start <= 0:
            raise SearchSpaceError(f"{key}: a log interval needs low > 0 (got {value.start})")
        if isinstance(value.start, int) and isinstance(value.end, int) and not log_scale:
            return d.IntDistribution(value.start, value.end)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SearchSpaceError(f"{key}: {override.input_line} is not a search space (use choice, range or interval)")


class WindtunnelOptunaSweeper(Sweeper):
    def __init__(self, sampler: str, seed: Optional[int], direction: str, study_name: Optional[str],
                 storage: Optional[str], n_trials: int, n_jobs: int, pruner: str, pruner_startup_trials: int,
                 reduction_factor: int, max_loss_ratio: float, params: Optional[Dict[str, str]],
                 heartbeat_interval: int = 60, sampler_startup_trials: Optional[int] = None) -> None:
        if sampler not in SAMPLERS:
            raise SearchSpaceError(f"hydra.sweeper.sampler={sampler!r}: use one of {', '.join(SAMPLERS)}")
        if pruner not in PRUNERS:
            raise SearchSpaceError(f"hydra.sweeper.pruner={pruner!r}: use one of {', '.join(PRUNERS)}")
        if sampler_startup_trials is not None and (sampler not in STARTUP_SAMPLERS or sampler_startup_trials < 1):
            raise SearchSpaceError(f"hydra.sweeper.sampler_startup_trials={sampler_startup_trials}: a count >= 1, for "
                                   f"the samplers that start with random trials ({', '.join(STARTUP_SAMPLERS)}; "
                                   f"this sweep's is {sampler})")
        if storage:  # also checked by `windtunnel sweep`'s preflight; here for Hydra apps that use this sweeper directly
            check_storage("hydra.sweeper.storage", storage)
        self.sampler_name, self.seed, self.direction = sampler, seed, direction
        self.sampler_startup = {} if sampler_startup_trials is None else {"n_startup_trials": sampler_startup_trials}
        self.study_name, self.storage_spec = study_name, storage
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        self.pruner_name, self.startup, self.reduction, self.max_loss_ratio = (pruner, pruner_startup_trials,
                                                                               reduction_factor, max_loss_ratio)
        self.params = dict(params or {})
        self.heartbeat = max(0, int(heartbeat_interval))
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def _sampler(self, space: dict, seed: int | None = None) -> tuple[Any, int]:
        """The sampler, and how many trials it can propose (a grid is finite). seed: instead of the configured one."""
        import optuna
        seed = self.seed if seed is None else seed
        if self.sampler_name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **self.sampler_startup), self.n_trials
        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=seed), self.n_trials
        if self.sampler_name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **self.sampler_startup), self.n_trials
        if self.sampler_name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **self.sampler_startup), self.n_trials
        grid = {}
        for key, dist in space.items():
            if hasattr(dist, "choices"):
                grid[key] = list(dist.choices)
            elif getattr(dist, "step", None):
                n = round((dist.high - dist.low) / dist.step)
                grid[key] = [dist.low + i * dist.step for i in range(n + 1)]
            else:
                raise SearchSpaceError(f"{key}: the grid sampler needs choice(...) or range(...), not an interval")
        return optuna.samplers.GridSampler(grid, seed=seed), min(self.n_trials, math.prod(map(len, grid.values())))

    def _pruner(self):
        import optuna
        if self.pruner_name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.startup, n_warmup_steps=0)
        if self.pruner_name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(reduction_factor=self.reduction)
        return optuna.pruners.NopPruner()  # "divergence" is decided in the job (windtunnel/sweep/study.py)

    def sweep(self, arguments: List[str]) -> None:
        import optuna
        parser = OverridesParser.create()
        fixed, space = [], {}
        for override in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments)):
            key = override.get_key_element()
            if override.is_sweep_override():
                space[key] = distribution(key, override)
            else:
                space.pop(key, None)
                fixed.append(override.input_line)
        if not space:
            raise SearchSpaceError("no search space: give hydra.sweeper.params or sweep overrides such as "
                                   "optim.lr=tag(log,interval(1e-3,1e-1))")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage_spec = self.storage_spec or str(self.sweep_dir / "optuna.journal")
        study_name = self.study_name or self.sweep_dir.name
        sampler, n_total = self._sampler(space)
        study = optuna.create_study(study_name=study_name, storage=make_storage(storage_spec, self.heartbeat),
                                    sampler=sampler, pruner=self._pruner(), direction=self.direction,
                                    load_if_exists=True)
        if study.trials and self.seed is not None:  # continuing a study: the same seed would replay its first draws
            # a seed drawn from (seed, trials so far): two workers joining one study never share one (a sum could:
            # seed 0 after 1 trial = seed 1 after none)
            import numpy as np
            derived = int(np.random.SeedSequence([self.seed, len(study.trials)]).generate_state(1)[0])
            study.sampler = self._sampler(space, seed=derived)[0]
            log.info(f"windtunnel_optuna: study {study_name!r} has {len(study.trials)} trials; continuing it (sampler "
                     f"seed from seed {self.seed} and those {len(study.trials)} trials: {derived})")
        prune = {"none": "none", "divergence": "divergence"}.get(self.pruner_name, "decayed")
        tuning = [f"tuning.storage='{storage_spec}'", f"tuning.study_name='{study_name}'", f"tuning.prune={prune}",
                  f"tuning.max_loss_ratio={self.max_loss_ratio}", f"tuning.heartbeat_s={self.heartbeat}"]
        log.info(f"windtunnel_optuna: study {study_name!r} in {redact(storage_spec)}, {n_total} trials, "
                 f"sampler {self.sampler_name}, pruner {self.pruner_name}")
        done = 0
        while done < n_total:
            # trials of dead workers (no heartbeat) -> FAIL, and a retry with their parameters is queued: asked
            # next, it finds its run dir and resumes it (RDB storages with heartbeat_interval > 0)
            with warnings.catch_warnings():  # (Optuna marks it experimental)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            for number in fail_interrupted(study, self.sweep_dir):  # journal storages: from the run dirs' locks
                log.warning(f"trial {number}: its worker died mid-run; recorded as FAIL, its parameters queued again")
            trials = [study.ask(space) for _ in range(min(self.n_jobs, n_total - done))]
            batch = [tuple(fixed + [f"{k}={_encode(t.params[k])}" for k in space] + tuning
                           + [f"tuning.trial_number={t.number}"]) for t in trials]
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret)
            done += len(batch)
        self._write_results(study)

    @staticmethod
    def _tell(study, trial, ret) -> None:
        import optuna
        try:
            # a job that raised re-raises here (Hydra's public JobReturn API), after Hydra writes "Error executing
            # job" to stderr: for a pruned trial that line is wrong, and for a failed one ours below says it
            with contextlib.redirect_stderr(io.StringIO()):
                value = ret.return_value
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info(f"trial {trial.number}: pruned")
            return
        except Exception as err:  # noqa: BLE001 -- a failed job is a FAIL trial; the study goes on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning(f"trial {trial.number} raised {err!r}; recorded as FAIL")
            return
        if value is None or not math.isfinite(float(value)):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # diverged or failed: recorded, not fatal
            log.warning(f"trial {trial.number}: no finite loss (diverged or failed), recorded as FAIL")
        else:
            study.tell(trial, float(value))

    def _write_results(self, study) -> None:
        import optuna
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        results: Dict[str, Any] = {"study_name": study.study_name, "n_trials": len(study.trials),
                                   "states": {s.name: sum(t.state == s for t in study.trials)
                                              for s in optuna.trial.TrialState}}
        if done:
            results.update(best_value=study.best_value, best_params=study.best_params,
                           best_trial=study.best_trial.number)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info(f"windtunnel_optuna: {results}")


def _encode(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
