"""The sweeper and its config node (registered as hydra/sweeper=windtunnel_grid)."""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from windtunnel.config import PACKABLE

PACKS_DIR = "packs"  # a packed job's own Hydra output (its .hydra/ and log), under the sweep dir


@dataclass
class WindtunnelGridSweeperConf:
    _target_: str = "hydra_plugins.windtunnel_grid_sweeper.grid.WindtunnelGridSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None = all)
    params: Optional[Dict[str, str]] = None  # the grid, in Hydra's override grammar (as the basic sweeper)


ConfigStore.instance().store(group="hydra/sweeper", name="windtunnel_grid", node=WindtunnelGridSweeperConf,
                             provider="windtunnel")


def pack_jobs(jobs: Sequence[Sequence[str]], k: int, first_pack: int = 0) -> List[List[str]]:
    """Group jobs (lists of `key=value` overrides) that differ only in PACKABLE keys into packs of up to k.
    A pack of two or more becomes one job: the shared overrides, train.pack_members=['<member overrides>',
    ...] and its own output subdir; a lone point stays as it was. Order is kept, so packs are stable across
    runs of the same command (a re-run finds the same run dirs)."""
    if k <= 1:
        return [list(job) for job in jobs]
    groups: "OrderedDict[tuple, list[str]]" = OrderedDict()
    for job in jobs:
        shared = tuple(o for o in job if o.partition("=")[0] not in PACKABLE)
        member = " ".join(o for o in job if o.partition("=")[0] in PACKABLE)
        groups.setdefault(shared, []).append(member)
    out, n = [], first_pack
    for shared, members in groups.items():
        for i in range(0, len(members), k):
            chunk = members[i:i + k]
            if len(chunk) == 1:
                out.append([*shared, *filter(None, chunk[0].split(" "))])
                continue
            quoted = ",".join(f"'{m}'" for m in chunk)
            out.append([*shared, f"train.pack_members=[{quoted}]", f"hydra.sweep.subdir={PACKS_DIR}/pack{n}"])
            n += 1
    return out


class WindtunnelGridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.pack, self.packs_made = 1, 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.pack = int(OmegaConf.select(config, "train.pack", default=1) or 1)

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        jobs = pack_jobs(super().get_job_batch(), self.pack, self.packs_made)
        self.packs_made += sum(any(o.startswith("train.pack_members=") for o in job) for job in jobs)
        return jobs
