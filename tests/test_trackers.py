"""train.loggers: each tracker gets the rows metrics.jsonl gets, read back from its own files (offline)."""
import json

import pytest
from conftest import tiny_trial

from windtunnel import config, runs
from windtunnel.compose import compose
from windtunnel.config import ConfigError
from windtunnel.train import run_trial


pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


def logged(run_dir, key: str) -> dict:
    return {m["step"]: m[key] for m in runs.read_metrics(run_dir) if m.get(key) is not None}


def test_tensorboard_event_file_holds_the_metrics_rows(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    assert run_trial(tiny_trial(loggers=["tensorboard"]), out).status == "completed"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("eval_loss", "train_loss", "lr"):
        want = logged(out, key)
        got = {e.step: e.value for e in events.Scalars(key)}
        assert sorted(got) == sorted(want) and len(want) >= 10
        assert all(got[s] == pytest.approx(want[s], rel=1e-6) for s in want)  # float32 in the event file


def wandb_history(path) -> list[dict]:
    """The history rows of an offline W&B run file (run-ID.wandb: a 7-byte header, then LevelDB-log records,
    32 KiB blocks, each record a protobuf Record); wandb 0.31 no longer ships a Python reader."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, block, buf, rows = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or the LAST piece of a record split over blocks
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_run_holds_every_row(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    try:
        assert run_trial(tiny_trial(loggers=["wandb"]), out).status == "completed"
    finally:
        wandb.teardown()  # its service process, which would otherwise live on until this process ends
    (path,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    history = {r["_step"]: r for r in wandb_history(path) if "_step" in r}
    metrics = runs.read_metrics(out)
    assert sorted(history) == [m["step"] for m in metrics] and len(metrics) >= 10
    for m in metrics:
        for key in ("train_loss", "eval_loss", "lr"):
            if m.get(key) is not None:
                assert history[m["step"]][key] == pytest.approx(m[key])


def test_mlflow_store_has_every_eval(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    assert run_trial(tiny_trial(loggers=["mlflow"]), out).status == "completed"
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("windtunnel").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == str(tiny_trial().optim.lr)
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval_loss")}
    want = logged(out, "eval_loss")
    assert sorted(history) == sorted(want) and all(history[s] == pytest.approx(want[s]) for s in want)


def test_an_unknown_or_missing_tracker_is_refused_before_training(monkeypatch):
    with pytest.raises(ConfigError, match="train.loggers item='neptune' is unknown; use one of tensorboard, wandb, mlflow"):
        compose(["train.loggers=[neptune]"])
    monkeypatch.setattr(config, "installed", lambda module: module != "wandb")
    with pytest.raises(ConfigError, match=r"train.loggers=\[wandb\] needs the wandb package: pip install wandb"):
        compose(["train.loggers=[wandb]"])
