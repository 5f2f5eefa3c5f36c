"""The tables every analysis reads: from a run directory tree, a committed record (sweeps/<name>/) or anyone's
CSV/Parquet, load_runs gives the per-run table and the points table (one row per held-out eval) in canonical
columns, after the column language (--derive, --where, --drop-top). fit(tables) (windtunnel/fit) fits the laws
over them. Shared by `windtunnel fit`, `windtunnel report`, `windtunnel plot`, the demo and the notebook, so all
fit the same rows the same way. Public: `from windtunnel import load_runs`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError

if TYPE_CHECKING:  # pandas, scipy (fit) and the run tables load when a table does: `windtunnel --help` imports this
    import pandas as pd

CORPUS_KEYS = ("data.source", "data.path", "data.tokenizer", "data.bpe_vocab_size", "data.mixture", "corpus_manifest")


@dataclass
class SweepTables:
    points: pd.DataFrame  # canonical columns, one row per logged point (run, N, bs, tokens, loss, ...)
    per_run: pd.DataFrame  # canonical columns, one row per finished run (loss = final or decayed held-out loss)
    units: dict
    notes: list = field(default_factory=list)
    runs: pd.DataFrame = None  # the run table as recorded (statuses, epochs, overfit flags), None for a foreign file
    logged: pd.DataFrame = None  # the finished runs' logged points as recorded (train_loss, eval_loss, lr per step)
    proxy_shape: dict = field(default_factory=dict)  # the runs' muP base widths and depths (what an LR law transfers from)
    labels: pd.DataFrame = None  # a foreign file's other columns with few values (dataset, hparams, ...), per_run's rows


LABEL_VALUES = 20  # a column with at most this many values labels configurations (dataset, hparams, decay, ...)


def parse_columns(text: str) -> dict:
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--columns item {item!r} must look like CANONICAL=YOUR_COLUMN (e.g. N=params)")
        out[key.strip()] = value.strip()
    return out


def load_runs(source, *, columns: str = "", derive=(), where=(), drop_top: int = 0, drop_by: str = "loss",
              bs_unit: str = "tokens", seq_len: int = 0, n_kind: str = "non-embedding") -> SweepTables:
    """The runs under `source` (a run directory tree, a record sweeps/NAME, or a CSV/Parquet file of anyone's runs)
    as SweepTables in canonical columns (fit.canonical), ready for fit(). `columns` maps canonical names to the
    file's (N=params,loss=val_loss); derive/where/drop_top shape the table as read (the CLI's --derive, --where,
    --drop-top). Finished runs only; a diverged run's loss is inf (it loses every comparison)."""
    import pandas as pd

    from . import fit
    from .runs import RunStatus, load_points, load_record, load_results, record_in
    path = Path(source)
    options = dict(bs_unit=bs_unit, seq_len=seq_len, n_kind=n_kind)
    mapping = parse_columns(columns)
    shape = dict(derive=derive, where=where, drop_top=drop_top, drop_by=drop_by, aliases=mapping)
    if path.is_dir():
        record = record_in(path)
        if record:  # a committed record (sweeps/<name>/)
            runs, all_points = load_record(record)
        else:
            runs, all_points = load_results(path), None
        if runs.empty:
            raise FileNotFoundError(f"no run directories under {path}")
        finished = runs[runs["status"].isin([RunStatus.COMPLETED.value, RunStatus.DIVERGED.value])].copy()
        # per-run loss: after a decay where there was one (a run with decay branches is represented by them,
        # each branch a run of its own, so the stable run itself is left out); diverged runs lose
        if "train.branch_at_n" in finished:
            finished = finished[[not (isinstance(b, list) and b) for b in finished["train.branch_at_n"]]]
        if "decayed_eval_loss" in finished:
            finished["final_eval_loss"] = finished["decayed_eval_loss"].fillna(finished["final_eval_loss"])
        finished = _shape(finished, **shape)
        per_run, units = fit.canonical(finished, {"loss": "final_eval_loss", **mapping}, **options)
        _check_one_corpus(finished, path)
        _check_one_eval_set(finished, path)
        diverged = finished["status"].to_numpy() == RunStatus.DIVERGED.value
        per_run.loc[diverged, "loss"] = float("inf")
        if "train.total_tokens" in finished:  # a diverged run stopped early: its cell is the budget it was given
            for col in {"tokens", "D"} & set(per_run):
                per_run.loc[diverged, col] = finished.loc[diverged, "train.total_tokens"].to_numpy(float)
        raw = load_points(path) if all_points is None else all_points
        if "run_dir" in raw:  # a running or failed run has no N yet: not a point
            raw = raw[raw["run_dir"].isin(finished["run_dir"])]
        points, _ = fit.canonical(raw, mapping, **options)
        points["decay"] = decay_rows(raw).reindex(points.index, fill_value=False).to_numpy()
        shape_of = {key.split(".")[1]: sorted({int(v) for v in finished[key].dropna()})
                    for key in ("model.dim_model_base", "model.n_layers") if key in finished}
        return SweepTables(points, per_run, units, per_run.attrs.get("notes", []), runs, raw, shape_of)
    if not path.exists():
        raise FileNotFoundError(f"{path} is neither a run directory nor a file")
    try:
        raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame()
    if raw.empty:
        raise fit.NotFittable(f"{path} holds no rows{' (only a header: ' + ', '.join(map(str, raw.columns)) + ')' if len(raw.columns) else ''}; "
                              f"a fit needs one row per run")
    table = _shape(raw, **shape)
    if table.empty:
        raise fit.NotFittable(f"no row of {path} is left after --where/--drop-top ({len(raw)} rows before)")
    data, units = fit.canonical(table, mapping, missing_loss=False, **options)
    if "D" not in data and "tokens" in data:
        data["D"] = data["tokens"]
    used = set(mapping.values()) | set(data.columns)
    labels = table.loc[data.index, [c for c in table.columns if c not in used and 1 < table[c].nunique() <= LABEL_VALUES
                                    and "seed" not in str(c).lower()]]
    return SweepTables(data, data, units, data.attrs.get("notes", []), labels=labels)


def _check_one_corpus(runs, path) -> None:
    """Runs trained on different corpora measure different things: never pooled as if they were seeds."""
    for key in CORPUS_KEYS:
        if key in runs:
            values = sorted({str(v) for v in runs[key]})
            if len(values) > 1:
                raise ConfigError(f"the runs under {path} were trained on different corpora ({key}: "
                                  f"{', '.join(values[:4])}); fit each corpus's runs separately (point fit at one "
                                  f"sweep's directory, or keep one with --where, e.g. --where \"`{key}` == '{values[0]}'\")")


def _check_one_eval_set(runs, path) -> None:
    """Losses measured on different held-out sets differ by the sets, not the runs: never pooled."""
    from .config import LEGACY, eval_set_of
    column = (lambda key: runs[key].fillna(LEGACY.get(key, 0)) if key in runs else [LEGACY.get(key, 0)] * len(runs))
    names = sorted({eval_set_of(s, e, f) for s, e, f in zip(column("train.eval_set"), column("train.eval_tokens"),
                                                              column("train.final_eval_tokens"))})
    if len(names) > 1:
        raise ConfigError(f"the runs under {path} were measured on different held-out sets ({', '.join(names[:4])}: "
                          f"train.eval_set:tokens); fit one set's runs (--where \"`train.eval_set` == 'sample'\"), or "
                          f"re-run the others with the same train.eval_set, train.eval_tokens and train.final_eval_tokens")


def decay_rows(raw: pd.DataFrame) -> pd.Series:
    """Per logged row of a run table: True in a WSD decay, after a stable phase at the peak LR (the batch-size laws
    read their levels off the stable phase). A run has a stable phase when its logged LR sits at its peak on 3 or more
    rows spanning at least half its steps: WSD's; a cosine run leaves its peak at once and is never flagged.
    Per-run quantities by groupby-transform: one pass over 110k points, not a Python loop per run."""
    import pandas as pd
    if not {"run_dir", "lr", "step"} <= set(raw.columns):
        return pd.Series(False, index=raw.index)
    lr, step = pd.to_numeric(raw["lr"], errors="coerce"), pd.to_numeric(raw["step"], errors="coerce")
    run = raw["run_dir"]
    at_peak = (lr >= lr.groupby(run).transform("max") * (1 - 1e-6)) & (lr > 0)
    peak_steps = step.where(at_peak).groupby(run)
    first, last = peak_steps.transform("min"), peak_steps.transform("max")
    stable = (at_peak.groupby(run).transform("sum") >= 3) & (last - first >= 0.5 * step.groupby(run).transform("max"))
    return (stable & (step > last)).fillna(False).astype(bool)


def _shape(table, *, derive=(), where=(), drop_top: int = 0, drop_by: str = "loss", aliases=None):
    """--derive, then --where, then --drop-top, on the table as read: expressions name its own columns, or the
    canonical names --columns maps to them (aliases: canonical -> the table's name)."""
    from .fit import columns
    for item in derive or []:
        name, sep, expr = item.partition("=")
        if not sep:
            raise ConfigError(f"--derive {item!r} must look like NAME=EXPR (e.g. D=C/(6*N))")
        table = columns.derive(table, name, expr, aliases)
    for expr in where or []:
        table = columns.where(table, expr, aliases)
    drop_by = (aliases or {}).get(drop_by, drop_by) if drop_by not in table.columns else drop_by
    return columns.drop_top(table, drop_by, drop_top) if drop_top else table


def versus(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per configuration (runs.by_config: seeds aggregated) with its paired-seed difference from a reference
    configuration, the runs where the column-language EXPR `reference` holds (exactly one configuration): vs_n (seeds
    both have), vs_mean (its loss minus the reference's, nats; negative = better), vs_low, vs_high (the 95% t
    interval over those seeds) and verdict (better / worse only where the interval excludes 0, else tied within
    noise; one seed: no interval; "reference" on the reference's row). The regret table of a prediction check.
    runs: runs.load_results rows (one per run)."""
    import math

    import pandas as pd

    from .fit import columns
    from .fit.seeds import paired_difference
    from .runs import by_config, config_columns, config_key, run_loss

    chosen = columns.where(runs, reference)
    ref_keys = sorted(set(config_key(chosen)))
    if len(ref_keys) != 1:
        differ = [c for c in config_columns(runs) if chosen[c].astype(str).nunique() > 1] if len(chosen) else []
        raise ConfigError(f"--versus {reference!r} selects {len(ref_keys)} configurations" +
                          (f" (they differ in {', '.join(differ)})" if differ else "") +
                          ": name exactly one, e.g. add \" and `train.batch_size_tokens` == 16384\"")
    def seed_losses(group) -> dict:  # seed -> the loss runs are compared on (completed runs only)
        seeds = group["train.seed"] if "train.seed" in group else pd.Series(0, index=group.index)
        return {int(s): float(v) for s, v in zip(seeds, run_loss(group)) if not math.isnan(v)}
    losses = {k: seed_losses(g) for k, g in runs.groupby(config_key(runs), sort=False)}
    reference_losses = losses[ref_keys[0]]
    table = by_config(runs)
    rows = []
    for k in config_key(table):
        if k == ref_keys[0]:
            rows.append({"vs_n": len(reference_losses), "vs_mean": 0.0, "vs_low": math.nan, "vs_high": math.nan,
                         "verdict": "reference"})
            continue
        d = paired_difference(losses.get(k, {}), reference_losses)
        rows.append({"vs_n": d["n"], "vs_mean": d["mean"], "vs_low": d["interval"][0], "vs_high": d["interval"][1],
                     "verdict": d["verdict"]})
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
