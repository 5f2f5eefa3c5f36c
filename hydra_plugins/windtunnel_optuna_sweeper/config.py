"""The sweeper's config node, registered as hydra/sweeper=windtunnel_optuna."""
from dataclasses import dataclass, field
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class WindtunnelOptunaSweeperConf:
    _target_: str = "hydra_plugins.windtunnel_optuna_sweeper.sweeper.WindtunnelOptunaSweeper"
    sampler: str = "tpe"  # tpe, random, grid, cmaes, gp
    seed: Optional[int] = None  # sampler seed
    sampler_startup_trials: Optional[int] = None  # tpe, gp, cmaes: random trials before the model guides the
    #   search (None: Optuna's default, 10 for tpe and gp, 1 for cmaes)
    direction: str = "minimize"
    study_name: Optional[str] = None  # default: the sweep directory's name
    storage: Optional[str] = None  # journal file path or SQLAlchemy URL; default ${hydra.sweep.dir}/optuna.journal
    n_trials: int = 20  # trials this process runs (several processes may share one study)
    n_jobs: int = 1  # trials launched per batch (the launcher decides how many run at once)
    pruner: str = "none"  # none, divergence, median, successive_halving
    pruner_startup_trials: int = 2  # median: trials finished before pruning starts
    reduction_factor: int = 2  # successive_halving
    max_loss_ratio: float = 1.0  # divergence: prune above this multiple of the trial's initial loss
    heartbeat_interval: int = 60  # seconds; RDB storages: a trial whose worker died is failed and retried after
    #                               2 x this (0 = off; Optuna's journal storage has no heartbeats)
    params: Dict[str, str] = field(default_factory=dict)  # search space in Hydra's override grammar


ConfigStore.instance().store(group="hydra/sweeper", name="windtunnel_optuna", node=WindtunnelOptunaSweeperConf,
                             provider="windtunnel")
