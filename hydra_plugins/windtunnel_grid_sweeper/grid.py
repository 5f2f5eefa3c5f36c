"""The sweeper and its config node (registered as hydra/sweeper=windtunnel_grid)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from windtunnel.sweep.grid import expand, pack_jobs


@dataclass
class WindtunnelGridSweeperConf:
    _target_: str = "hydra_plugins.windtunnel_grid_sweeper.grid.WindtunnelGridSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None = all)
    params: Optional[Dict[str, str]] = None  # the grid, in Hydra's override grammar (as the basic sweeper)


ConfigStore.instance().store(group="hydra/sweeper", name="windtunnel_grid", node=WindtunnelGridSweeperConf,
                             provider="windtunnel")


class WindtunnelGridSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None):
        self.max_batch_size, self.params = max_batch_size, dict(params or {})
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None
        pack = int(OmegaConf.select(self.config, "train.pack", default=1) or 1)
        jobs = pack_jobs(expand([f"{k}={v}" for k, v in self.params.items()] + list(arguments)), pack)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or len(jobs)
        returns = []
        for start in range(0, len(jobs), size):
            batch = [tuple(job) for job in jobs[start:start + size]]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=start)
            for r in results:
                _ = r.return_value  # re-raises the exception of a job that raised (as Hydra's basic sweeper)
            returns.append(results)
        return returns
