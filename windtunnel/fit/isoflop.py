"""Chinchilla's Approach 2 (isoFLOP profiles); the critical batch size is fit/critical.py.

isoflop_law: per compute budget C, the optimum N*(C) of its profile of loss against log N, found by `profile`:
  full   a parabola through the whole profile (Hoffmann et al.'s Approach 2; the default)
  local  a parabola through the best model and up to two neighbours on each side
  akima  Akima's interpolation of the profile, minimised on a fine grid (Porian et al.)
with D*(C) = C / (6 N*) (or read off the budget's own (N, D) pairs when D is given); then N* = k_N C^a and
D* = k_D C^b by OLS in log space. Intervals resample the budgets and, within each, its models (so each budget's
own optimum uncertainty is in them). The other two profiles are fitted too, and a diagnostic says where one's
exponent falls outside this fit's interval.
"""
import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from .blas import one_blas_thread
from .lr import _optimum, log_grid

PROFILES = ("full", "local", "akima")


def profile_optimum(n: np.ndarray, loss: np.ndarray, profile: str = "full") -> tuple[float, bool]:
    """(N*, at the edge) of one budget's profile (n sorted ascending, one loss per n). An optimum whose best model is
    the smallest or largest, or whose fitted minimum lies outside the sampled N, is at the edge."""
    x = np.log(n)
    best = int(np.argmin(loss))
    edge = best in (0, len(n) - 1)
    if profile == "local":
        star, info = _optimum(n, loss)
        return star, info["edge"]
    if profile == "akima":
        grid = np.linspace(x[0], x[-1], 4001)
        star_x = grid[np.argmin(Akima1DInterpolator(x, loss)(grid))]
    else:
        c2, c1, _ = np.polyfit(x, loss, 2)
        star_x = -c1 / (2 * c2) if c2 > 0 else np.nan
    inside = np.isfinite(star_x) and x[0] <= star_x <= x[-1]
    return (float(np.exp(star_x)) if inside else float(n[best])), edge or not inside
from .result import FitResult, NotFittable, _interval, _need, leave_one_out, loo_warnings


def _fit_line(x, y) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


@one_blas_thread
def isoflop_law(df: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, rtol: float = 0.02,
                units: dict | None = None, profile: str = "full", compare: bool = True) -> FitResult:
    """N*(C) = k_N C^a and D*(C) = k_D C^b from isoFLOP profiles (canonical columns N, loss, and C, or N and D
    with C = 6 N D). Budgets whose best model is at the edge of their N grid are flagged and left out."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: one of {', '.join(PROFILES)}")
    df = df.copy()
    if "C" not in df:
        _need(df, ("N", "D", "loss"), "isoflop")
        df["C"] = 6.0 * df["N"].astype(float) * df["D"].astype(float)
    _need(df, ("N", "C", "loss"), "isoflop")
    df = df[np.isfinite(df[["N", "C", "loss"]].astype(float)).all(axis=1)]
    df["C"] = log_grid(df["C"].astype(float), rtol)
    rows, profiles = [], {}
    for c, g in df.groupby("C"):
        g = g.groupby("N", as_index=False).agg({"loss": "min", **({"D": "mean"} if "D" in g else {})})
        if len(g) < 3:
            continue
        n, loss = g["N"].to_numpy(float), g["loss"].to_numpy(float)
        star, edge = profile_optimum(n, loss, profile)
        d_fit = np.polyfit(np.log(n), np.log(g["D"].to_numpy(float)), 1) if "D" in g else None
        profiles[float(c)] = (n, loss, d_fit)
        rows.append({"C": float(c), "N_star": star, "D_star": _d_star(float(c), star, d_fit), "edge": edge,
                     "n_models": len(g)})
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
        if np.ptp(logc[i]) == 0:
            continue
        stars = [_resampled_star(good[j], profiles[good[j]["C"]], profile, rng) for j in i]
        draws.append([v for k in ("N_star", "D_star") for v in _fit_line(logc[i], np.log([s[k] for s in stars]))])
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
    if compare:
        diagnostics += _profiles_disagree(df, profile, params, intervals, n_boot, seed, rtol)
    if abs(params["a"] + params["b"] - 1) > 0.05 and "D" not in df:
        diagnostics.append(f"a + b = {params['a'] + params['b']:.3f}, not 1: check C = 6 N D")
    return FitResult(law="isoflop", form="isoflop", params=params, intervals=intervals,
                     units={"C": "FLOPs", "N": "parameters", "D": "tokens", **(units or {})}, n_points=len(good),
                     diagnostics=diagnostics, details={"optima": rows, "leave_one_out": loo, "profile": profile},
                     samples=[{"k_N": float(np.exp(d[0])), "a": d[1], "k_D": float(np.exp(d[2])), "b": d[3]}
                              for d in draws])


def _d_star(c: float, n_star: float, d_fit) -> float:
    return float(np.exp(np.polyval(d_fit, np.log(n_star)))) if d_fit is not None else c / (6 * n_star)


def _resampled_star(row: dict, prof: tuple, profile: str, rng) -> dict:
    """One budget's optimum with its models resampled (the original where a draw leaves fewer than 3 sizes or an
    edge optimum: that budget's profile cannot say more)."""
    n, loss, d_fit = prof
    i = np.sort(rng.integers(0, len(n), len(n)))
    i = i if profile == "full" else np.unique(i)  # a parabola weights a model drawn twice; interpolants cannot
    if len(np.unique(i)) >= 3:
        star, edge = profile_optimum(n[i], loss[i], profile)
        if not edge:
            return {"N_star": star, "D_star": _d_star(row["C"], star, d_fit)}
    return row


def _profiles_disagree(df, profile: str, params: dict, intervals: dict, n_boot: int, seed: int, rtol: float) -> list:
    """Where another profile method's exponent a lies outside this fit's interval of a."""
    notes = []
    low, high = intervals["a"]
    for other in (p for p in PROFILES if p != profile):
        try:
            a = isoflop_law(df, n_boot=0, seed=seed, rtol=rtol, profile=other, compare=False).params["a"]
        except NotFittable:
            continue
        if low is not None and not low <= a <= high:
            notes.append(f"the {other} profile gives a = {a:.3f}, outside this fit's interval [{low:.3f}, {high:.3f}] "
                         f"({profile} profile, a = {params['a']:.3f}): the profiles disagree (asymmetric or noisy "
                         f"profiles; compare --profile {other})")
    return notes
