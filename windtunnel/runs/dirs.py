"""The files of a run directory (its layout: runs/run.py), and the tables read back from many of them. No torch.

JSON files are written atomically (temp file, then rename); metrics lines are appended whole and a torn
last line (a kill mid-write) is ignored on read. Non-finite floats are stored as null.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ..config import LEGACY, TrainConfig
from . import lock
from .curve import instability

if TYPE_CHECKING:  # pandas loads when a table is made: a trainer process does not need it
    import pandas as pd

CONFIG, METRICS, RESULT, CHECKPOINT = "config.json", "metrics.jsonl", "result.json", "checkpoint"


class RunStatus(str, Enum):
    """A run's state in result.json (a str, so it compares equal to and serialises as its value)."""
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"  # a result: the LR (or batch) was too large; fits and sweeps count it
    PRUNED = "pruned"  # stopped early by a sweep's pruner; a re-run trains it again
    FAILED = "failed"  # an error; the message is in RunResult.error
    INTERRUPTED = "interrupted"  # read back only: says running, but its process died (runs/lock.py); resumed

    @property
    def finished(self) -> bool:
        """A re-run skips these: a diverged LR is a result, not an accident."""
        return self in (RunStatus.COMPLETED, RunStatus.DIVERGED)


@dataclass
class RunResult:
    """RUN/result.json: how the run ended, and the summary of its logged metrics (held-out losses in
    nats/token; decayed_eval_loss is the loss after a completed LR decay: the run's end or its last branch)."""
    status: RunStatus
    error: Optional[str] = None
    traceback: Optional[str] = None
    final_eval_loss: Optional[float] = None
    best_eval_loss: Optional[float] = None
    final_eval_bpb: Optional[float] = None
    final_eval_se: Optional[float] = None  # the final held-out loss's standard error over its windows
    decayed_eval_loss: Optional[float] = None
    steps: int = 0
    tokens: int = 0
    N: int = 0
    flops: float = 0.0
    train_s: float = 0.0
    tokens_per_s: Optional[float] = None
    world_size: int = 1
    pack: int = 1  # trials trained together as one fused model (train/packed.py)
    epochs: Optional[float] = None  # tokens trained / unique train tokens of the corpus
    overfit: bool = False  # held-out loss ended above its best by > train.overfit_margin as train loss fell
    overfit_rise: Optional[float] = None  # final / best held-out loss - 1, when overfit
    unstable: bool = False  # held-out loss rose by > train.overfit_margin above its best as train loss rose too
    unstable_rise: Optional[float] = None  # the largest held-out loss / best so far - 1, when unstable
    session_wall_s: float = 0.0
    pid: Optional[int] = None  # of the process training it, while running

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def compared_loss(self) -> Optional[float]:
        """The loss runs are compared on (as runs.seeds.run_loss reads a table): after the decay where the run had
        one, else its final held-out loss; None unless the run completed."""
        if self.status != RunStatus.COMPLETED:
            return None
        return self.decayed_eval_loss if self.decayed_eval_loss is not None else self.final_eval_loss

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in ("traceback", "pid")}

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_file(path, json.dumps(_clean(obj), indent=1, default=str))


def write_file(path: Path, data) -> Path:
    """Write a user's file atomically: `data` (str or bytes) goes to a hidden temp file beside `path`, is flushed to
    disk, then renamed over it. A failed write (a full disk, a file-size limit, a read-only folder) leaves the
    previous file as it was and raises one line naming the file and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path}: {err.strerror or err}; "
                                 f"{'the previous file is unchanged' if path.exists() else 'nothing was written'}") from None
    return path


def read_json(path: Path) -> Optional[dict]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a kill tears the last line; a resume that appended after it buried it
            if i < len(lines) - 1:
                warnings.warn(f"{path} line {i + 1} is not a JSON row (torn by a kill: {line[:60]!r}); skipped",
                              stacklevel=2)
    return rows


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def append_metrics(run_dir: Path, row: dict) -> None:
    path = Path(run_dir) / METRICS
    torn = path.exists() and path.stat().st_size and _last_byte(path) != b"\n"
    with open(path, "a") as f:  # after a torn last line, a newline first: never a row glued onto a fragment
        f.write(("\n" if torn else "") + json.dumps(_clean(row)) + "\n")  # one write: a kill tears at most the last
        f.flush()
    lock.beat(run_dir)


def rewrite_metrics(run_dir: Path, rows: Iterable[dict], name: str = METRICS) -> None:
    """Atomically replace the metrics (a resumed run drops the lines logged after its checkpoint)."""
    path = Path(run_dir) / name
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(_clean(r)) + "\n" for r in rows))
    os.replace(tmp, path)


def read_result(run_dir: Path) -> Optional[RunResult]:
    try:
        data = read_json(Path(run_dir) / RESULT)
    except json.JSONDecodeError:
        return None
    return RunResult.from_json(data) if data and "status" in data else None


def write_result(run_dir: Path, result: RunResult) -> RunResult:
    """Write result.json atomically; returns the result as it reads back (non-finite floats as None)."""
    write_json(Path(run_dir) / RESULT, result.to_json())
    return RunResult.from_json(_clean(result.to_json()))


def is_finished(run_dir: Path) -> bool:
    result = read_result(run_dir)
    return result is not None and result.finished


def git_commit() -> dict:
    """The commit of the code that ran (and whether its tree was dirty), or nulls outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


# ----------------------------------------------------------------------------- tables

def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys (model.d_model)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_dirs(root: Path) -> list[Path]:
    """Every directory under root (root included) that holds a config.json, in sorted order. Symlinked folders
    are followed (a sweep folder linked into a runs tree is part of it), each real folder once (a link that points
    back up the tree is not walked again)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"runs directory {root} does not exist")
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a loop, or a second link to a folder already walked
            subfolders[:] = []
            continue
        seen.add(real)
        if CONFIG in names:
            found.append(Path(folder))
    return sorted(found)


def _run_row(run_dir: Path, metrics: Optional[list] = None) -> dict:
    """run_dir's config and result as one flat row; metrics: its metrics.jsonl rows when the caller has read them
    (a run written before the unstable flag gets it from its curve)."""
    config = read_json(run_dir / CONFIG)
    result = read_json(run_dir / RESULT) or {"status": "incomplete"}
    if not isinstance(config, dict) or "trial" not in config:
        raise ValueError("config.json has no 'trial' section")
    row = {"run_dir": str(run_dir), **LEGACY}  # a field its config.json lacks: what the run then meant by it
    row.update(flatten(config["trial"]))
    row.update({k: v for k, v in config.items() if k not in ("trial",) and not isinstance(v, dict)})
    row.update({k: v for k, v in result.items() if k not in ("traceback",)})
    if row["status"] == RunStatus.RUNNING.value and not lock.is_live(run_dir):
        row["status"] = RunStatus.INTERRUPTED.value  # its process died; the next sweep resumes it
    if row["status"] in ("completed", "diverged", "pruned"):
        # the flag is the curve's, by today's rule: result.json's copy is what the rule said when the run ended
        # (runs before the flag have none; runs before the rule's fix may have missed a spike); it stands only
        # where no held-out loss was logged
        curve = read_metrics(run_dir) if metrics is None else metrics
        if any(m.get("eval_loss") is not None for m in curve):
            rise = instability(curve, row.get("train.overfit_margin", TrainConfig().overfit_margin))
            row["unstable"], row["unstable_rise"] = rise is not None, rise
    if not row.get("N"):  # a run that has not finished (or failed early) has no result's N: its model says it
        row["N"] = _n_of(config["trial"].get("model", {}))
    return row


def _n_of(model: dict) -> int | None:
    from .. import sizing
    from ..config import ModelConfig
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        return sizing.n_params(ModelConfig(**{k: v for k, v in model.items() if k in known}))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def load_results(root: Path) -> pd.DataFrame:
    """One row per run under root: its hyperparameters (dotted columns), N, status and final results."""
    import pandas as pd
    rows = []
    for run_dir in run_dirs(root):
        try:
            rows.append(_run_row(run_dir))
        except (ValueError, OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping corrupt run directory {run_dir}: {err}", stacklevel=2)
    return pd.DataFrame(rows)


def load_points(root: Path) -> pd.DataFrame:
    """One row per logged point of every run under root, with the run's hyperparameters, N and status. The runs'
    hyperparameters are a table of one row per run, taken once per point by index (a dict per point held every
    hyperparameter again: 1,000 runs of 110 points took 2.6 GB and 67 s)."""
    import numpy as np
    import pandas as pd
    runs, points, owner = [], [], []
    for run_dir in run_dirs(root):
        try:
            metrics = read_metrics(run_dir)
            row = _run_row(run_dir, metrics)
        except (ValueError, OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping corrupt run directory {run_dir}: {err}", stacklevel=2)
            continue
        owner += [len(runs)] * len(metrics)
        points += metrics
        runs.append(row)
    if not points:
        return pd.DataFrame()
    per_run = pd.DataFrame(runs)
    logged = pd.DataFrame(points)
    shared = per_run.drop(columns=[c for c in per_run.columns if c in logged.columns]).take(np.asarray(owner))
    # the columns in the order {**run, **point} gives: the run's keys first (a logged value wins), then the points'
    table = pd.concat([shared.reset_index(drop=True), logged], axis=1)
    return table[list(per_run.columns) + [c for c in logged.columns if c not in per_run.columns]]
