"""A sweep's committed record (sweeps/<name>/runs.csv.gz): every logged point and status of its runs, in one
compact table that `windtunnel fit` reads as it reads the run directories themselves."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import LEGACY, TrainConfig
from .dirs import load_points, load_results, run_dirs
from .curve import instability

if TYPE_CHECKING:
    import pandas as pd

RECORD = "runs.csv.gz"  # a sweep's record (sweeps/<name>/): every logged point of every run, and every status
_RUN_KEYS = ("run_dir", "status", "N", "tokens", "steps", "epochs", "overfit", "unstable", "final_eval_loss",
             "best_eval_loss", "decayed_eval_loss", "error")
_FIT_KEYS = ("train.batch_size_tokens", "optim.lr", "model.parametrization", "model.d_model", "train.seed",
             "train.total_tokens", "train.branch_at_n", "flops", "train.eval_set", "train.eval_tokens",
             "train.final_eval_tokens", "eval_se", "final_eval_se")  # what the fits read, kept even when constant


def export_record(root: Path, out: Path, keep_runs=None) -> pd.DataFrame:
    """Write the runs under root as one compact table: one row per logged point (a run that logged nothing,
    e.g. failed at start, keeps one row), the run's swept hyperparameters and results beside each, run_dir
    relative to root; config fields equal in every run are left out unless a fit reads them. keep_runs: the
    run_dir values to write (`windtunnel runs --where`), None for all."""
    import pandas as pd
    results, points = load_results(root), load_points(root)
    if keep_runs is not None:
        results = results[results["run_dir"].isin(keep_runs)]
        points = points[points["run_dir"].isin(keep_runs)] if "run_dir" in points else points
    table = pd.concat([points, results[~results["run_dir"].isin(points.get("run_dir", []))]], ignore_index=True)
    keep = set(_RUN_KEYS) | set(_FIT_KEYS) | {"eval_loss", "train_loss"}
    cols = [c for c in table.columns if c in keep or c in ("step", "lr", "grad_norm", "eval_bpb")
            or table[c].astype(str).nunique(dropna=False) > 1]
    table = table[cols].copy()
    table["run_dir"] = [os.path.relpath(p, root) for p in table["run_dir"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False, compression="gzip")
    os.replace(tmp, out)
    return table


def record_in(root: Path) -> Path | None:
    """The committed record a directory is (sweeps/NAME/: a runs.csv.gz and no run dirs), else None."""
    record = Path(root) / RECORD
    return record if record.exists() and not run_dirs(root) else None


def load_record(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, one row per logged point) from a record written by export_record."""
    import pandas as pd
    points = pd.read_csv(path, compression="gzip", low_memory=False)
    # lists (train.branch_at_n) were written as text; pandas 3 reads text as its "str" dtype, pandas 2 as object
    for col in [c for c in points.columns if pd.api.types.is_string_dtype(points[c]) or points[c].dtype == object]:
        if points[col].astype(str).str.startswith("[").any():
            points[col] = [json.loads(v) if isinstance(v, str) and v.startswith("[") else v for v in points[col]]
    for key, value in LEGACY.items():  # a record written before the field existed
        if key not in points:
            points[key] = value
    results = points.groupby("run_dir", sort=True).last().reset_index()  # run-level columns repeat on every row
    if "step" in points:
        points = points[points["step"].notna()]
    results = flag_unstable(results, points)
    if "run_dir" in points:  # the curves carry the flag as the runs have it now (a record may predate the flag)
        points = points.assign(unstable=points["run_dir"].map(dict(zip(results["run_dir"], results["unstable"]))))
    return results, points


def flag_unstable(results: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """results with `unstable` and `unstable_rise` read off each finished run's logged curve (`curve.instability`, at
    its train.overfit_margin), as dirs._run_row does: the record's column is what the rule said at export (records
    before the flag have none, runs before the rule's fix may have missed a spike) and stands only for a run whose
    curve has no held-out loss."""
    import pandas as pd
    results = results.copy()
    empty = pd.Series(None, index=results.index, dtype=object)
    recorded = (results["unstable"] if "unstable" in results else empty).astype(object)
    rises = (results["unstable_rise"] if "unstable_rise" in results else empty).astype(object)
    finished = results["status"].isin(["completed", "diverged", "pruned"])
    if finished.any() and {"run_dir", "step", "eval_loss", "train_loss"} <= set(points.columns):
        curves = dict(list(points[points["run_dir"].isin(set(results.loc[finished, "run_dir"]))].groupby("run_dir")))
        default = TrainConfig().overfit_margin  # an export leaves out a field every run shares at its default
        margins = results.get("train.overfit_margin", pd.Series(default, index=results.index)).fillna(default)
        for i in results.index[finished]:
            curve = curves.get(results.at[i, "run_dir"])
            if curve is not None and curve["eval_loss"].notna().any():
                rows = [{"step": s, "eval_loss": e if e == e else None, "train_loss": t if t == t else None}
                        for s, e, t in zip(curve["step"], curve["eval_loss"], curve["train_loss"])]  # NaN: not logged
                rises.at[i] = instability(rows, float(margins.at[i]))
                recorded.at[i] = rises.at[i] is not None
    results["unstable"] = [bool(v == 1) for v in recorded]  # None, NaN: not flagged
    results["unstable_rise"] = pd.to_numeric(rises)  # None: not flagged
    return results
