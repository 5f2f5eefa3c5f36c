"""Fit results, the canonical run table, and the NotFittable error shared by every law."""
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

# windtunnel's own tables -> canonical names
WINDTUNNEL_COLUMNS = {"run": "run_dir", "N": "N", "bs": "train.batch_size_tokens", "tokens": "tokens",
                      "loss": "eval_loss", "lr": "optim.lr", "param": "model.parametrization",
                      "width": "model.d_model", "seed": "train.seed", "D": "tokens", "overfit": "overfit",
                      "C": "flops", "steps": "steps"}


class NotFittable(ValueError):
    """The data cannot identify the law; the message says why and what to add."""


@dataclass
class FitResult:
    law: str  # "batch_size", "lr", "loss"
    form: str  # a key of laws.FORMS
    params: dict  # symbol -> value (symbols as in the form's docstring)
    intervals: dict  # symbol -> [low, high] (bootstrap percentiles)
    units: dict
    n_points: int
    diagnostics: list = field(default_factory=list)  # warnings a user must read before trusting the fit
    details: dict = field(default_factory=dict)  # per-level / per-group intermediate results
    samples: list = field(default_factory=list)  # bootstrap draws of params, for prediction intervals

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("params", "intervals")}
        out["parameters"] = {k: {"value": v, "interval": self.intervals.get(k)} for k, v in self.params.items()}
        return _plain(out)

    @classmethod
    def from_json(cls, data: dict) -> "FitResult":
        params = {k: v["value"] for k, v in data["parameters"].items()}
        intervals = {k: v["interval"] for k, v in data["parameters"].items()}
        return cls(law=data["law"], form=data["form"], params=params, intervals=intervals, units=data["units"],
                   n_points=data["n_points"], diagnostics=data.get("diagnostics", []),
                   details=data.get("details", {}), samples=data.get("samples", []))


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _interval(samples: np.ndarray, level: float = 0.95) -> list:
    samples = samples[np.isfinite(samples)]
    if len(samples) < 2:
        return [None, None]
    q = (1 - level) / 2
    return [float(np.quantile(samples, q)), float(np.quantile(samples, 1 - q))]


# ----------------------------------------------------------------------------- tables

def canonical(df: pd.DataFrame, columns: dict | None = None, *, bs_unit: str = "tokens", seq_len: int = 0,
              n_kind: str = "non-embedding", missing_loss: bool = True) -> tuple[pd.DataFrame, dict]:
    """Rename a table to canonical columns (run, N, bs, tokens/D, loss, lr, param, width, seed) and convert
    units: `bs_unit="sequences"` multiplies bs by seq_len; an `N_emb` column is subtracted from N when
    n_kind="total" (making N non-embedding). Returns the table and its units. A value that is not a number, or
    missing where a point needs it (N, bs, lr, C, D), is refused with its rows; a missing loss (a diverged run, a
    train-only log row) is kept, and named in a note unless missing_loss (a run's log, where it is the rule)."""
    mapping = dict(WINDTUNNEL_COLUMNS)
    for canon in mapping:  # a table that already uses a canonical name (N, D, bs, lr, loss) needs no mapping
        if canon in df.columns and mapping[canon] not in df.columns:
            mapping[canon] = canon
    mapping.update(columns or {})
    out = pd.DataFrame(index=df.index)
    for canon, source in mapping.items():
        if source in df.columns:
            out[canon] = df[source]
    for bad in set(columns or {}) - set(out.columns):
        raise NotFittable(f"--columns {bad}={columns[bad]}: no column {columns[bad]!r} in the table; "
                          f"columns are: {', '.join(map(str, df.columns))}")
    if bs_unit not in ("tokens", "sequences"):
        raise NotFittable(f"bs_unit={bs_unit!r}: use tokens or sequences")
    if bs_unit == "sequences" and "bs" in out:
        if seq_len <= 0:
            raise NotFittable("bs_unit=sequences needs seq_len (tokens per sequence), e.g. --seq-len 2048")
        out["bs"] = out["bs"] * seq_len
    if "N_emb" in out and n_kind == "total":
        out["N"] = out["N"] - out["N_emb"]
        n_kind = "non-embedding"
    for col in ("N", "bs", "tokens", "D", "loss", "lr", "C"):
        if col in out:
            given = out[col]
            out[col] = pd.to_numeric(given, errors="coerce").astype(float)  # 6ND overflows int64
            text = out.index[out[col].isna() & given.notna()]  # "fast", "3.1e", "n/a": not silently missing
            missing = out.index[out[col].isna() & given.isna()] if col != "loss" else []
            for bad, what in ((text, "value(s) that are not numbers"), (missing, "missing (empty or NaN) value(s)")):
                if len(bad):
                    shown = ", ".join(f"{i} ({given[i]!r})" if isinstance(given[i], str) else str(i) for i in list(bad[:10]))
                    raise NotFittable(f"the {col} column ({mapping[col]}) has {len(bad)} {what}, at row(s) {shown}"
                                      f"{' ...' if len(bad) > 10 else ''}; fix those rows or leave them out "
                                      f"(--where, e.g. --where '{mapping[col]} > 0')")
    notes = []
    if "loss" in out and not missing_loss and out["loss"].isna().any():  # said, not dropped in silence
        rows = out.index[out["loss"].isna()]
        notes.append(f"{len(rows)} row(s) have no loss (empty or NaN: rows {', '.join(map(str, list(rows[:10])))}"
                     f"{' ...' if len(rows) > 10 else ''}): the lr law counts them as diverged, the other laws leave "
                     f"them out")
    if "loss" in out:  # a cross-entropy is > 0; NaN is a missing value (e.g. a train-only log row) and is allowed
        bad = out.index[(out["loss"] <= 0) | np.isinf(out["loss"])]
        if len(bad):
            raise NotFittable(f"the loss column has {len(bad)} non-positive or infinite value(s), at row(s) "
                              f"{', '.join(map(str, list(bad[:10])))}{' ...' if len(bad) > 10 else ''}; a loss in nats "
                              f"is > 0: fix those rows or leave them out (--where 'loss > 0')")
    for col in ("N", "bs", "lr", "C"):  # sizes, batches, rates and budgets are positive (logs of them are taken)
        if col in out:
            bad = out.index[(out[col] <= 0) | np.isinf(out[col])]
            if len(bad):
                raise NotFittable(f"the {col} column ({mapping[col]}) has {len(bad)} non-positive or infinite value(s), "
                                  f"at row(s) {', '.join(map(str, list(bad[:10])))}{' ...' if len(bad) > 10 else ''}; "
                                  f"fix those rows or leave them out (--where '{mapping[col]} > 0')")
    dup = out.duplicated()
    if dup.any():  # the same point twice counts twice: intervals shrink by sqrt(copies) without a warning
        notes.append(f"{int(dup.sum())} exact duplicate row(s) dropped (rows {', '.join(map(str, list(out.index[dup][:10])))}"
                     f"{' ...' if dup.sum() > 10 else ''})")
        out = out[~dup]
    if "run" not in out:
        out["run"] = np.arange(len(out)) if "tokens" not in out else out.groupby(
            [c for c in ("N", "bs", "lr", "param", "seed") if c in out], dropna=False).ngroup()
    units = {"N": f"parameters ({n_kind})", "bs": "tokens per optimizer step", "tokens": "tokens",
             "loss": "nats/token (as logged)", "lr": "peak (base) learning rate"}
    out.attrs["notes"] = notes  # read by `windtunnel fit` into every law's diagnostics
    return out, units


EXPONENTS = ("b", "e_N", "e_D", "alpha", "beta", "a")


def leave_one_out(n: int, refit, params: dict, names=None) -> dict:
    """Influence of single points: refit(keep) -> params without one point, for each of the n points; returns
    the largest change of each exponent and which point made it (a law resting on one point is fragile)."""
    names = names or list(range(n))
    changes = {k: (0.0, None) for k in params if k in EXPONENTS}
    for i in range(n):
        keep = np.ones(n, dtype=bool)
        keep[i] = False
        try:
            other = refit(keep)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            continue
        for k in changes:
            delta = abs(float(other[k]) - float(params[k]))
            if np.isfinite(delta) and delta > changes[k][0]:
                changes[k] = (delta, names[i])
    return {k: {"max_change": v, "point": _plain(p)} for k, (v, p) in changes.items()}


def loo_warnings(loo: dict, params: dict, limit: float = 0.1) -> list[str]:
    """A diagnostic for each exponent that one point moves by more than `limit` (relative)."""
    return [f"leaving out one point ({v['point']}) moves {k} by {v['max_change']:.3g} (> {limit:.0%} of {params[k]:.3g})"
            for k, v in loo.items() if params.get(k) and v["max_change"] > limit * abs(params[k])]


def _inside(value: float, low: float, high: float) -> bool:
    """value in [low, high], up to rounding: noise-free data give an interval as narrow as the estimate itself (every
    bootstrap refit lands on it), and the last bits of a float must not call that estimate 'outside'."""
    slack = 1e-9 * max(abs(value), abs(low), abs(high))
    return min(low, high) - slack <= value <= max(low, high) + slack


def quality(result: "FitResult") -> list[str]:
    """Warnings any law's numbers raise: an exponent whose interval spans 0 (not identified), an estimate outside
    its own interval, a non-finite parameter, a poor fit in log space (rmse_log above 5%)."""
    out = []
    for key, value in result.params.items():
        low, high = result.intervals.get(key) or (None, None)
        if value is None or not np.isfinite(value):
            out.append(f"{key} = {value} is not a finite number")
        elif low is not None and not _inside(value, low, high):
            out.append(f"{key} = {value:.4g} lies outside its interval [{low:.4g}, {high:.4g}]")
        if key in EXPONENTS and low is not None and low <= 0 <= high:
            note = f"{key}'s interval [{low:.3g}, {high:.3g}] includes 0: not identified"
            if not any(note.split(":")[0] in d for d in result.diagnostics):
                out.append(note)
    rmse = result.details.get("rmse_log") if isinstance(result.details, dict) else None
    if rmse is not None and rmse > 0.05:
        out.append(f"rmse in log loss {rmse:.3f} (> 0.05): the form does not describe these points well")
    return out


UNIDENTIFIED = ("not identified", "degenerate", "ill-conditioned", "includes 0", "is not a finite number",
                "lies outside its interval")


def unidentified(result: "FitResult") -> list[str]:
    """The diagnostics that say the data do not identify the law (an exponent's interval spans 0, a parameter
    at its bound, an ill-conditioned optimum, ...): `windtunnel fit` exits non-zero on any of them."""
    return [d for d in result.diagnostics if any(k in d for k in UNIDENTIFIED)]


def drop_overfit(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows of runs flagged as overfitting (held-out loss rose above its best while train loss fell) are left
    out: their late points measure memorisation, not how loss falls with data. Returns the rest and the
    diagnostic naming them."""
    if "overfit" not in df or not df["overfit"].fillna(False).astype(bool).any():
        return df, []
    flagged = df["overfit"].fillna(False).astype(bool)
    names = sorted({str(r) for r in df.loc[flagged, "run"]}) if "run" in df else []
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return df[~flagged], [f"left out {len(names) or int(flagged.sum())} overfitting run(s) (held-out loss rose above "
                          f"its best while train loss fell; see the runs table's overfit column): {shown}"]


def drop_decay(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows flagged `decay` (a WSD run's decay, tables.decay_rows) left out: a decay reaches lower losses at the same
    fraction of every run, whatever its batch, so the batch-size laws read their levels off the stable phase.
    Returns the rest and the diagnostic that says so."""
    decay = df["decay"].fillna(False).astype(bool) if "decay" in df else None
    if decay is None or not decay.any():
        return df, []
    runs = f" in {df.loc[decay, 'run'].nunique()} runs' decays" if "run" in df else ""
    return df[~decay], [f"WSD runs: loss levels read off the stable phase ({int(decay.sum())} held-out evals{runs} "
                        f"left out)"]


def _need(df: pd.DataFrame, cols: tuple, law: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise NotFittable(f"the {law} law needs columns {', '.join(cols)}; missing {', '.join(missing)} "
                          f"(map them with --columns, e.g. --columns {missing[0]}=YOUR_COLUMN)")




def seed_resample(cells, rng) -> np.ndarray:
    """One bootstrap pick of runs (indices into `cells`, each run's configuration label): the configurations are
    resampled, then the seeds within each picked configuration, so an interval holds the seed noise as well as the
    scatter between configurations. With one seed per configuration this is the plain resampling of runs, draw for
    draw (a fit's earlier intervals are unchanged)."""
    cells = np.asarray(cells)
    labels, index = np.unique(cells, return_inverse=True)
    groups = [np.flatnonzero(index == i) for i in range(len(labels))]
    if len(groups) == len(cells):  # one run per configuration: the runs themselves
        return rng.integers(0, len(cells), len(cells))
    first = rng.integers(0, len(groups), len(groups))
    return np.concatenate([groups[g] if len(groups[g]) == 1 else rng.choice(groups[g], len(groups[g]))
                           for g in first])


def seed_note(cells, what: str = "point") -> list[str]:
    """The diagnostic of a fit whose configurations hold one seed each: its interval sees seed noise only as scatter
    between configurations (windtunnel resolution measures it; train 2+ seeds per point to resample it)."""
    counts = np.unique(np.unique(np.asarray(cells), return_counts=True)[1])
    if counts.max() > 1:
        return [] if counts.min() > 1 else [f"some {what}s have one seed, others {counts.max()}: only the multi-seed "
                                            f"ones' seed noise is resampled"]
    return [f"one seed per {what}: the interval holds seed noise only as the scatter between {what}s (train 2+ seeds "
            f"per {what}, train.seed, to resample it; `windtunnel resolution` measures the seed spread)"]
