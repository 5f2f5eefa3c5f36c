"""Chinchilla's Approach 2 (isoFLOP profiles); the critical batch size is fit/critical.py.

isoflop_law: per compute budget C, a parabola of loss in log N through the best model and its neighbours;
its minimum is N*(C), with D*(C) = C / (6 N*) (or read off the budget's own (N, D) pairs when D is given);
then N* = k_N C^a and D* = k_D C^b by OLS in log space, intervals by bootstrap over budgets.
"""
import numpy as np
import pandas as pd

from .blas import one_blas_thread
from .lr import _optimum, log_grid
from .result import FitResult, NotFittable, _interval, _need, leave_one_out, loo_warnings


def _fit_line(x, y) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


@one_blas_thread
def isoflop_law(df: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, rtol: float = 0.02,
                units: dict | None = None) -> FitResult:
    """N*(C) = k_N C^a and D*(C) = k_D C^b from isoFLOP profiles (canonical columns N, loss, and C, or N and D
    with C = 6 N D). Budgets whose best model is at the edge of their N grid are flagged and left out."""
    df = df.copy()
    if "C" not in df:
        _need(df, ("N", "D", "loss"), "isoflop")
        df["C"] = 6.0 * df["N"].astype(float) * df["D"].astype(float)
    _need(df, ("N", "C", "loss"), "isoflop")
    df = df[np.isfinite(df[["N", "C", "loss"]].astype(float)).all(axis=1)]
    df["C"] = log_grid(df["C"].astype(float), rtol)
    rows = []
    for c, g in df.groupby("C"):
        g = g.groupby("N", as_index=False).agg({"loss": "min", **({"D": "mean"} if "D" in g else {})})
        if len(g) < 3:
            continue
        n = g["N"].to_numpy(float)
        star, info = _optimum(n, g["loss"].to_numpy(float))
        d_star = float(np.exp(np.polyval(np.polyfit(np.log(n), np.log(g["D"].to_numpy(float)), 1), np.log(star)))) \
            if "D" in g else c / (6 * star)
        rows.append({"C": float(c), "N_star": star, "D_star": d_star, "edge": info["edge"], "n_models": len(g)})
    good = [r for r in rows if not r["edge"]]
    if len(good) < 3:
        raise NotFittable(f"isoFLOP needs interior optima at 3 or more compute budgets; this data has {len(good)} "
                          f"({len(rows)} budgets with >= 3 model sizes, {len(rows) - len(good)} with the best model at "
                          f"the edge of their size grid)")
    logc = np.log([r["C"] for r in good])
    fits = {k: _fit_line(logc, np.log([r[k] for r in good])) for k in ("N_star", "D_star")}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(good), len(good))
        if np.ptp(logc[i]) > 0:
            draws.append([v for k in ("N_star", "D_star") for v in _fit_line(logc[i], np.log([good[j][k] for j in i]))])
    draws = np.array(draws).reshape(-1, 4)
    params = {"k_N": float(np.exp(fits["N_star"][0])), "a": fits["N_star"][1],
              "k_D": float(np.exp(fits["D_star"][0])), "b": fits["D_star"][1]}
    intervals = {"k_N": [float(np.exp(v)) if v is not None else None for v in _interval(draws[:, 0])],
                 "a": _interval(draws[:, 1]),
                 "k_D": [float(np.exp(v)) if v is not None else None for v in _interval(draws[:, 2])],
                 "b": _interval(draws[:, 3])}
    diagnostics = [f"{len(rows) - len(good)} budget(s) with the best model at the edge of the size grid left out"] \
        if len(good) < len(rows) else []
    loo = leave_one_out(len(good), lambda keep: {"a": _fit_line(logc[keep], np.log([r["N_star"] for r, k in zip(
        good, keep) if k]))[1], "b": _fit_line(logc[keep], np.log([r["D_star"] for r, k in zip(good, keep) if k]))[1]},
        params, [f"C={r['C']:.3g}" for r in good])
    diagnostics += loo_warnings(loo, params)
    if abs(params["a"] + params["b"] - 1) > 0.05 and "D" not in df:
        diagnostics.append(f"a + b = {params['a'] + params['b']:.3f}, not 1: check C = 6 N D")
    return FitResult(law="isoflop", form="isoflop", params=params, intervals=intervals,
                     units={"C": "FLOPs", "N": "parameters", "D": "tokens", **(units or {})}, n_points=len(good),
                     diagnostics=diagnostics, details={"optima": rows, "leave_one_out": loo},
                     samples=[{"k_N": float(np.exp(d[0])), "a": d[1], "k_D": float(np.exp(d[2])), "b": d[3]}
                              for d in draws])
