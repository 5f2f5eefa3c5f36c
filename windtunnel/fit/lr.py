"""The LR optimum per cell (model size, and token budget when it varies), the LR law across cells, the muP
transfer verdict, and Step Law's batch-size law bs* = c D^b.

A cell is one (parametrization, N, D) sweep; within it the loss at each LR is the mean over seeds of the
best batch size's runs (the optimum LR at the best batch). LRs are grouped on a log grid with a relative
tolerance, so 0.0003453 and 0.000345 are one grid point. A cell's optimum is the minimum of a parabola in log
LR through the best point and its neighbours; an optimum at the edge of its grid (or next to a diverged LR)
is flagged and left out of the law: it only says the optimum lies beyond the grid.
"""
import numpy as np
import pandas as pd

from .. import laws
from .blas import one_blas_thread
from .result import FitResult, NotFittable, _interval, _need, leave_one_out, loo_warnings, seed_note
from .transfer import transfer_verdicts


def log_grid(values, rtol: float = 0.02) -> np.ndarray:
    """Each value replaced by its cluster's representative: sorted values whose neighbours differ by less than
    rtol (relative) are one grid point, named by its most common value (0.000345 and 0.0003453 are one)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values)
    logs = np.log(values[order])
    cluster = np.concatenate([[0], np.cumsum(np.diff(logs) > np.log1p(rtol))])
    members = values[order]
    names = np.array([pd.Series(members[cluster == c]).mode().iloc[0] for c in range(cluster[-1] + 1)])
    out = np.empty_like(values)
    out[order] = names[cluster]
    return out


def _optimum(x: np.ndarray, loss: np.ndarray) -> tuple[float, dict]:
    """Optimum of one sweep (x sorted, loss per x, diverged = inf): a parabola in log x through the best
    point and up to two finite neighbours on each side; the best grid point when no parabola opens up."""
    finite = np.isfinite(loss)
    best = int(np.nanargmin(np.where(finite, loss, np.nan)))
    idx = [i for i in range(max(0, best - 2), min(len(x), best + 3)) if finite[i]]
    info = {"best_x": float(x[best]), "best_loss": float(loss[best]),
            "edge": best in (0, len(x) - 1) or not finite[max(best - 1, 0)] or not finite[min(best + 1, len(x) - 1)]}
    if len(idx) >= 3:
        g = laws.log_parabola_guess(x[idx], loss[idx])
        if g["k"] > 0 and np.log(x[idx[0]]) <= g["log_lr_star"] <= np.log(x[idx[-1]]):
            return float(np.exp(g["log_lr_star"])), info
    return float(x[best]), info


@one_blas_thread
def lr_optimum(df: pd.DataFrame, *, band: float = 0.0025, n_boot: int = 200, seed: int = 0, rtol: float = 0.02,
               units: dict | None = None, estimator: str = "parabola") -> FitResult:
    """LR optima per cell (canonical columns N, lr, loss; optional D, bs, param, width, seed) and the LR law:
    lr* = c N^e_N D^e_D where the token budget varies across cells (Step Law's form), lr* = c N^e_N where the
    optimum moves with size, else one constant base LR (what muP promises). Intervals: bootstrap over seeds
    within a cell (or the near-optimal band, every LR within `band` of the best loss, without seeds), and
    over cells for the law. The muTransfer verdict (transfer.py): the optimum's drift across widths, in octaves,
    with its seed interval and the grid's resolution, against a tolerance.
    estimator: "parabola" (each cell's optimum from a parabola in log LR, then the law through the optima) or "band"
    (Step Law's: the law by least squares through every run within `band` of its cell's best loss)."""
    if estimator not in ("parabola", "band"):
        raise ValueError(f"estimator={estimator!r}: 'parabola' (per-cell optimum) or 'band' (Step Law's near-optimal runs)")
    _need(df, ("N", "lr", "loss"), "lr")
    df = _checked_lr(df.copy())
    df["param"] = df["param"] if "param" in df else "any"
    df["lr"] = log_grid(df["lr"], rtol)
    df["loss"] = df["loss"].where(np.isfinite(df["loss"]), np.inf).fillna(np.inf)  # diverged runs lose
    if "D" in df:
        df["D"] = log_grid(df["D"], rtol)
    by_d = "D" in df and df["D"].nunique() > 1
    keys = ["param", "N"] + (["D"] if by_d else [])
    other = [c for c in ("bs",) if c in df and df[c].nunique() > 1]
    rng = np.random.default_rng(seed)
    diagnostics = _not_swept(df, keys, other) + _copied_losses(df, keys, other)
    cells, seed_counts, draws, curves = [], [], [], []
    for key, g in df.groupby(keys, dropna=False):
        per = g.groupby(["lr", *other])["loss"].apply(list)  # seeds of each (lr, bs)
        mean = per.apply(np.mean)
        best_other = mean.groupby(level=0).idxmin()  # the best batch at each LR
        lr = np.sort(mean.index.get_level_values(0).unique().to_numpy(float))
        if len(lr) < 3:
            continue
        seeds = [per[best_other[v]] for v in lr]
        seed_counts += [len(s) for s in seeds]
        loss = np.array([np.mean(s) for s in seeds])
        star, info = _optimum(lr, loss)
        near = lr[loss <= info["best_loss"] * (1 + band)]
        boots = [_optimum(lr, np.array([np.mean(rng.choice(s, len(s))) for s in seeds]))[0]
                 for _ in range(n_boot)] if max(len(s) for s in seeds) > 1 else []
        low, high = (np.exp(_interval(np.log(boots))) if boots else (near.min(), near.max()))
        draws.append(boots)
        curves.append((lr, seeds))
        cells.append({"param": key[0], "N": float(key[1]), **({"D": float(key[2])} if by_d else {}), "width": float(g["width"].iloc[0]) if "width" in g
                      else None, "lr_star": star, "interval": [float(min(low, star)), float(max(high, star))],
                      "band": [float(near.min()), float(near.max())], "best_lr": info["best_x"],
                      "best_loss": info["best_loss"], "edge": info["edge"], "n_lrs": len(lr),
                      "grid_step": float(np.exp(np.median(np.diff(np.log(lr)))))})
    if not cells:
        raise NotFittable("no cell (model size, token budget, parametrization) has 3 or more learning rates; "
                          "sweep a grid of LRs")
    diagnostics += [f"{c['param']} N={c['N']:.3g}" + (f" D={c['D']:.3g}" if by_d else "") +
                   f": best LR {c['best_lr']:.3g} is at the edge of its grid (or next to a diverged LR); left out "
                   f"of the law, extend the grid" for c in cells if c["edge"]]
    diagnostics += coarse_grid_warnings(cells)
    diagnostics += seed_note(np.repeat(np.arange(len(seed_counts)), seed_counts), "LR point")
    # its own stream: the regret's bootstrap leaves the law's draws (and every committed interval) as they were
    verdicts = transfer_verdicts(cells, draws, curves, rng=np.random.default_rng([seed, 1]))
    main = "mup" if "mup" in verdicts else sorted(verdicts)[0]
    mine = sorted((c for c in cells if c["param"] == main and not c["edge"]), key=lambda c: (c["N"], c.get("D", 0)))
    if not mine:
        raise NotFittable(f"every {main} cell's optimum is at the edge of its LR grid ({len(cells)} cells): the data "
                          f"only bound the optimum from one side; extend the LR grid past the best LR")
    params, intervals, samples, form = _law(mine, by_d, verdicts[main]["moves"], n_boot, rng)
    if estimator == "band":
        params, intervals, samples, form = _band_law(df[df["param"] == main], keys, by_d, band, n_boot, rng, form)
    if estimator == "band":  # the default (each cell's parabola) is said by details["estimator"] and the CLI's table
        diagnostics.append(f"estimator: band (Step Law's: least squares through every run within {100 * band:g}% of "
                           f"its cell's best loss)")
    loo = {}
    if form != "constant" and estimator == "parabola":
        columns = [k for k, name in (("N", "e_N"), ("D", "e_D")) if name in params]
        names = {"N": "e_N", "D": "e_D"}
        loo = leave_one_out(len(mine), lambda keep: dict(zip([names[k] for k in columns], _ols(
            [c for c, k in zip(mine, keep) if k], columns)[1:])), params,
            [f"N={c['N']:.3g}" + (f" D={c['D']:.3g}" if "D" in c else "") for c in mine])
        diagnostics += loo_warnings(loo, params)
        law = " ".join(f"{k}={v:.4g}" for k, v in params.items())
        diagnostics.append(f"{main}: the LR optimum moves with size or tokens; lr* = c N^e_N"
                           f"{' D^e_D' if form == 'step_law' else ''} ({law}) fitted on {len(mine)} cells")
    return FitResult(law="lr", form=form, params=params, intervals=intervals,
                     units={"lr": "peak (base) learning rate; under muP hidden matrices use lr / m", "N": "parameters",
                            "D": "tokens", **(units or {})},
                     n_points=len(df), diagnostics=diagnostics,
                     details={"parametrization": main, "optima": cells, "transfer": verdicts, "leave_one_out": loo,
                              "estimator": estimator},
                     samples=samples)


def _checked_lr(df: pd.DataFrame) -> pd.DataFrame:
    """The table with a numeric, finite, positive lr in every row; else a refusal naming the rows."""
    lr = pd.to_numeric(df["lr"], errors="coerce")
    bad = df.index[~(np.isfinite(lr) & (lr > 0))]
    if len(bad) == len(df):
        raise NotFittable(f"the lr column holds no usable learning rate ({len(df)} rows, e.g. {df['lr'].iloc[0]!r}): "
                          f"map the column that holds the peak LR with --columns lr=YOUR_COLUMN")
    if len(bad):
        rows = ", ".join(f"{i} ({df.loc[i, 'lr']!r})" for i in bad[:5])
        raise NotFittable(f"{len(bad)} row(s) have no usable lr (empty, NaN, non-numeric or <= 0): rows {rows}"
                          f"{' ...' if len(bad) > 5 else ''}; fix them or leave them out with --where")
    return df.assign(lr=lr)


def _not_swept(df: pd.DataFrame, keys: list, other: list) -> list:
    """A refusal where the LR was not swept but set by a rule: one LR per cell, or within every cell one LR per
    value of another column (the batch size), so the loss cannot separate the LR from that column."""
    groups = df.groupby(keys, dropna=False)
    if groups["lr"].nunique().max() < 2:
        raise NotFittable("the LR was not swept: every cell (size, token budget, parametrization) has one learning "
                          "rate, as when a heuristic sets it; the lr law needs 3 or more LRs per cell (sweep a grid "
                          "of LRs, e.g. optim.lr=...), the other laws do not")
    for column in other:
        pairs = [(g["lr"].nunique(), g[column].nunique(), len(g[["lr", column]].drop_duplicates())) for _, g in groups]
        if all(a == b == c and a > 1 for a, b, c in pairs):
            raise NotFittable(f"the LR was not swept independently: in every cell each {column} has its own LR and "
                              f"each LR its own {column} (LR collinear with {column}, as when LR is scaled with the "
                              f"batch): the loss cannot tell an LR optimum from a {column} optimum; sweep LR at fixed "
                              f"{column}")
    return []


def _copied_losses(df: pd.DataFrame, keys: list, other: list) -> list:
    """Warnings for identical final losses in one cell: at two LRs (a copied row, or a run logged twice under two
    names), or at one LR (duplicates would count as seeds)."""
    notes = []
    for key, g in df.groupby(keys, dropna=False):
        finite = g[np.isfinite(g["loss"])]
        same = finite[finite.duplicated("loss", keep=False)]
        for loss, rows in same.groupby("loss"):
            lrs = sorted(rows["lr"].unique())
            where = " ".join(f"{k}={v:.3g}" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                             else f"{k}={v}" for k, v in
                             zip(keys, key if isinstance(key, tuple) else (key,)))
            notes.append(f"{where}: identical final loss {loss:.6g} at " + (
                f"LRs {', '.join(f'{v:.3g}' for v in lrs)} (a copied row or one run logged twice?)" if len(lrs) > 1
                else f"LR {lrs[0]:.3g} in {len(rows)} rows (duplicates count as seeds here)"))
    if len(notes) > 3:  # one line per copy would bury the other diagnostics
        notes = notes[:2] + [f"... and {len(notes) - 2} more identical final losses within cells (check the table for "
                             f"copied rows)"]
    return notes


def _band_law(df: pd.DataFrame, keys: list, by_d: bool, band: float, n_boot: int, rng, form: str):
    """Step Law's estimator: per cell every run within `band` of its best loss, then least squares of log lr on
    log N (and log D) through all of them; bootstrap over those runs. A constant law stays one value (their mean)."""
    kept = pd.concat([g[g["loss"] <= g["loss"].min() * (1 + band)] for _, g in df.groupby(keys, dropna=False)
                      if np.isfinite(g["loss"].min())])
    rows = kept.to_dict("records")
    if form == "constant":
        value = float(np.exp(np.log(kept["lr"]).mean()))
        draws = [float(np.exp(np.log(kept["lr"].to_numpy()[rng.integers(0, len(kept), len(kept))]).mean()))
                 for _ in range(n_boot)]
        return {"lr_star": value}, {"lr_star": _interval(np.array(draws))}, [], "constant"
    columns = ["N", "D"] if by_d and kept["D"].nunique() > 1 and kept["N"].nunique() > 1 else \
        ["D"] if by_d and kept["D"].nunique() > 1 else ["N"]
    return _power_law_fit(rows, columns, "lr", n_boot, rng)


COARSE_STEP = 2 ** 0.5  # LR grids coarser than half an octave per step cannot place an optimum to better than a step


def coarse_grid_warnings(cells: list[dict]) -> list[str]:
    """One warning per parametrization whose interior optima come from LR grids coarser than COARSE_STEP. LR
    curves rise more steeply above the optimum than below it (a divergence cliff), and a parabola through
    points one or two steps away does not see where the cliff begins: the bootstrap interval holds seed noise
    only. Measured in sweeps/lr_search: at width 512 a 2x grid read 0.0033, where a 2^(1/4) grid read 0.0049
    and three Optuna searches found 0.0052-0.0058 (0.56-0.8 of a step away)."""
    out = []
    for param in sorted({c["param"] for c in cells}):
        coarse = [c for c in cells if c["param"] == param and not c["edge"] and c["grid_step"] > COARSE_STEP]
        if coarse:
            step = max(c["grid_step"] for c in coarse)
            out.append(f"{param}: LR grid steps of {step:.3g}x ({len(coarse)} cell(s)): each optimum is a parabola "
                       f"through points up to two steps away, and LR curves rise more steeply above their optimum "
                       f"than below, so it is known only to about half a step (a factor {step ** 0.5:.2g} either way), "
                       f"not to its interval (seed noise only); refine with steps of 2^(1/4) around the best LR")
    return out


def _ols(cells: list[dict], columns: list[str], target: str = "lr_star") -> np.ndarray:
    X = np.column_stack([np.ones(len(cells))] + [np.log([c[k] for c in cells]) for k in columns])
    return np.linalg.lstsq(X, np.log([c[target] for c in cells]), rcond=None)[0]


def _law(cells: list[dict], by_d: bool, moves: bool, n_boot: int, rng):
    """(params, intervals, bootstrap samples, form) of the LR law over the interior cells."""
    by_d = by_d and len({c["D"] for c in cells}) > 1  # one budget among the usable cells: no D exponent to fit
    columns = (["N", "D"] if len({c["N"] for c in cells}) > 1 else ["D"]) if by_d else (["N"] if moves else [])
    if not columns or len(cells) < len(columns) + 2:
        logs = np.log([c["lr_star"] for c in cells])
        lows, highs = [np.log(c["interval"][0]) for c in cells], [np.log(c["interval"][1]) for c in cells]
        value = float(np.exp(logs.mean()))
        return {"lr_star": value}, {"lr_star": [min(float(np.exp(min(lows))), value),
                                                max(float(np.exp(max(highs))), value)]}, [], "constant"
    return _power_law_fit(cells, columns, "lr_star", n_boot, rng)


def _power_law_fit(rows: list[dict], columns: list[str], target: str, n_boot: int, rng):
    """log target = log c + e_N log N (+ e_D log D) by least squares over `rows`, bootstrapped over them:
    (params, intervals, samples, form)."""
    names = {"N": "e_N", "D": "e_D"}
    coef = _ols(rows, columns, target)
    draws = np.array([_ols([rows[i] for i in rng.integers(0, len(rows), len(rows))], columns, target)
                      for _ in range(n_boot)]).reshape(n_boot, len(columns) + 1)  # (n_boot, 1 + exponents)
    params = {"c": float(np.exp(coef[0])), **{names[k]: float(v) for k, v in zip(columns, coef[1:])}}
    intervals = {"c": [float(np.exp(v)) if v is not None else None for v in _interval(draws[:, 0])],
                 **{names[k]: _interval(draws[:, i + 1]) for i, k in enumerate(columns)}}
    samples = [{"c": float(np.exp(d[0])), **{names[k]: float(v) for k, v in zip(columns, d[1:])}} for d in draws]
    return params, intervals, samples, "step_law" if "D" in columns else "hyper_power_law"


@one_blas_thread
def batch_size_data_law(df: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, rtol: float = 0.02,
                        units: dict | None = None) -> FitResult:
    """Step Law's batch-size law bs* = c D^b (canonical columns N, D, bs, lr, loss; optional seed): per (N, D) cell
    the loss at each batch size is that of its best LR (each (bs, lr)'s mean over seeds); the optimum is the minimum
    of a parabola in log bs; edge optima are left out; then OLS of log bs* on log D. Bootstrap: the cells are
    resampled and, where a (bs, lr) has several seeds, its seeds too (each draw's optima found again), so the
    interval holds seed noise as well as the scatter between cells."""
    _need(df, ("N", "D", "bs", "loss"), "batch-size-data")
    df = df.copy()
    df["loss"] = df["loss"].where(np.isfinite(df["loss"]), np.inf).fillna(np.inf)
    df["bs"] = log_grid(df["bs"], rtol)
    df["lr"] = df["lr"] if "lr" in df else 0.0
    cells, seeds, seed_counts = [], [], []
    for (n, d), g in df.groupby(["N", "D"]):
        per = g.groupby(["bs", "lr"])["loss"].apply(list)  # (bs, lr) -> its seeds' losses
        if per.index.get_level_values(0).nunique() < 3:
            continue
        star, info = _bs_optimum(per, np.mean)
        cells.append({"N": float(n), "D": float(d), "bs_star": star, "best_bs": info["best_x"], "edge": info["edge"]})
        seeds.append(per)
        seed_counts += [len(v) for v in per]
    keep = [i for i, c in enumerate(cells) if not c["edge"]]
    interior = [cells[i] for i in keep]
    if len({c["D"] for c in interior}) < 3:
        raise NotFittable(f"bs* = c D^b needs interior batch-size optima at 3 or more token budgets D; this data has "
                          f"{len({c['D'] for c in interior})} ({len(cells)} cells with >= 3 batch sizes, "
                          f"{len(cells) - len(interior)} at the grid edge)")
    rng = np.random.default_rng(seed)
    coef = _ols(interior, ["D"], "bs_star")
    several = max(seed_counts) > 1
    draws = []
    for _ in range(n_boot):
        picks = rng.integers(0, len(interior), len(interior))
        # each picked cell's optimum found again from its seeds resampled (one seed per point: the optimum as is)
        draws.append(_ols([{**interior[i], "bs_star": _bs_optimum(seeds[keep[i]], lambda s: np.mean(rng.choice(
            s, len(s))))[0]} if several else interior[i] for i in picks], ["D"], "bs_star"))
    draws = np.array(draws)
    diagnostics = [f"{len(cells) - len(interior)} cell(s) with the optimum at the edge of the batch grid left out"] \
        if len(interior) < len(cells) else []
    diagnostics += seed_note(np.repeat(np.arange(len(seed_counts)), seed_counts), "(N, D, batch, LR) point")
    return FitResult(law="batch_size_data", form="power_law_D", params={"c": float(np.exp(coef[0])), "b": float(coef[1])},
                     intervals={"c": [float(np.exp(v)) if v is not None else None for v in _interval(draws[:, 0])],
                                "b": _interval(draws[:, 1])},
                     units={"bs": "batch size in tokens", "D": "tokens", **(units or {})}, n_points=len(interior),
                     diagnostics=diagnostics, details={"optima": cells},
                     samples=[{"c": float(np.exp(a)), "b": float(b)} for a, b in draws])


def _bs_optimum(per: pd.Series, average) -> tuple[float, dict]:
    """The batch-size optimum of one (N, D) cell: per batch size the best LR's average over its seeds (`average`: the
    mean, or the mean of a resample), then the parabola's minimum in log bs. per: (bs, lr) -> list of seed losses."""
    loss = per.apply(average).groupby(level=0).min()
    return _optimum(loss.index.to_numpy(float), loss.to_numpy(float))
