"""Experiment trackers (train.loggers): TensorBoard, Weights & Biases and MLflow, each imported only when named
and fed the rows metrics.jsonl gets (x axis: the optimizer step; every number of the row a scalar). They add
to the run directory, never replace it: the record is still config.json, metrics.jsonl and result.json.

Where they write: TensorBoard to RUN/tensorboard; W&B to its project (WANDB_PROJECT, default "windtunnel";
WANDB_MODE=offline keeps it in RUN/wandb), one W&B run per run dir, resumed with it; MLflow to
MLFLOW_TRACKING_URI (default a SQLite store, RUN/mlflow.db), experiment MLFLOW_EXPERIMENT_NAME (default
"windtunnel")."""
import hashlib
import os
import time
from pathlib import Path

from ..runs import flatten


def _scalars(row: dict) -> dict:
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, run_dir: Path, name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, name: str, config: dict):
        import wandb
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]  # one W&B run per run dir
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "windtunnel"), name=name, id=run_id,
                              resume="allow", dir=str(run_dir), config=config, reinit="create_new")

    def log(self, row: dict) -> None:
        self.run.log(_scalars(row), step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(self, run_dir: Path, name: str, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)  # a client per run: a pack logs K runs from one process
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "windtunnel")
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        params = [Param(k, str(v)[:500]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(row["step"])) for k, v in _scalars(row).items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


KINDS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


class Trackers:
    """The trackers one run dir asked for; log(row) feeds each, close() ends each."""

    def __init__(self, names: list, run_dir: Path, name: str, config: dict):
        self.trackers = [KINDS[n](Path(run_dir), name, config) for n in names]

    def log(self, row: dict) -> None:
        for tracker in self.trackers:
            tracker.log(row)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
