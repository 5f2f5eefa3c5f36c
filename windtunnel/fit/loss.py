"""L(N, D) by Chinchilla's Approach 3 (Huber on log residuals, L-BFGS-B from a grid, bootstrap)."""
import itertools
import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp

from .blas import one_blas_thread
from .result import FitResult, NotFittable, _interval, _need, drop_overfit, loo_warnings, seed_note, seed_resample

# Parameter symbols per form, in the order of the optimiser's vector theta = (a, b, e, alpha, beta) with
# A = e^a, B = e^b, E = e^e. MiniCPM's form is the same family with N and D in billions.
LOSS_FORMS = {
    "chinchilla": {"symbols": ("A", "B", "E", "alpha", "beta"), "scale": 1.0,
                   "grid_ab": np.arange(0.0, 26.0, 5.0), "units": {"N": "parameters", "D": "tokens"}},
    "minicpm": {"symbols": ("C_N", "C_D", "L0", "alpha", "beta"), "scale": 1e9,
                "grid_ab": np.arange(-10.0, 5.0, 2.5), "units": {"N": "1e9 parameters", "D": "1e9 tokens"}},
}
_BOUNDS = [(-30.0, 60.0), (-30.0, 60.0), (-10.0, 5.0), (0.0, 3.0), (0.0, 3.0)]
_POLISH = {"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-12}  # the best start only: its optimum to ~1e-9
_OPTIONS = {"maxiter": 1000}  # scipy's default tolerances for the many starts (each then only ranks a basin)


def _huber_objective(theta, logN, logD, logL, delta):
    """Sum of Huber(delta) over residuals r = LSE(a - alpha logN, b - beta logD, e) - log L, and its gradient."""
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * logN, b - beta * logD  # (n,) each; the third term is the constant e
    lse = np.logaddexp(np.logaddexp(t1, t2), e)
    r = lse - logL
    small = np.abs(r) <= delta
    value = np.sum(np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)))
    dr = np.where(small, r, delta * np.sign(r))  # d huber / d r
    p1, p2, p3 = dr * np.exp(t1 - lse), dr * np.exp(t2 - lse), dr * np.exp(e - lse)  # softmax-weighted
    grad = np.array([p1.sum(), p2.sum(), p3.sum(), -(p1 @ logN), -(p2 @ logD)])
    return value, grad


def _grid_objective(starts, logN, logD, logL, delta):
    """Huber sums at many starting points at once: starts (k, 5) -> (k,)."""
    a, b, e, al, be = (starts[:, i:i + 1] for i in range(5))
    lse = np.logaddexp(np.logaddexp(a - al * logN, b - be * logD), e)  # (k, n)
    r = np.abs(lse - logL)
    return np.sum(np.where(r <= delta, 0.5 * r ** 2, delta * (r - 0.5 * delta)), axis=1)


def _leave_one_out_shifts(theta, logN, logD, logL, delta) -> np.ndarray:
    """theta_{-i} - theta for every point i, by one Newton step: removing point i leaves the gradient -g_i at
    the optimum, so the shift is H^-1 g_i (H by central differences of the analytic gradient). (n, 5)."""
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * logN, b - beta * logD
    lse = np.logaddexp(np.logaddexp(t1, t2), e)
    r = lse - logL
    dr = np.where(np.abs(r) <= delta, r, delta * np.sign(r))
    p1, p2, p3 = dr * np.exp(t1 - lse), dr * np.exp(t2 - lse), dr * np.exp(e - lse)
    per_point = np.stack([p1, p2, p3, -p1 * logN, -p2 * logD], axis=1)  # (n, 5) gradient of each point's term
    eps, hessian = 1e-5, np.zeros((5, 5))
    for j in range(5):
        step = np.zeros(5)
        step[j] = eps
        hessian[:, j] = (_huber_objective(theta + step, logN, logD, logL, delta)[1]
                         - _huber_objective(theta - step, logN, logD, logL, delta)[1]) / (2 * eps)
    return np.linalg.lstsq(0.5 * (hessian + hessian.T), per_point.T, rcond=None)[0].T


def _minimize(theta0, logN, logD, logL, delta, options=None):
    return minimize(_huber_objective, theta0, args=(logN, logD, logL, delta), jac=True, method="L-BFGS-B",
                    bounds=_BOUNDS, options=options or _OPTIONS)


@one_blas_thread
def loss_law(df: pd.DataFrame, *, form: str = "chinchilla", delta: float = 1e-3, n_starts: int = 500,
             n_boot: int = 100, seed: int = 0, loo: bool = True, units: dict | None = None) -> FitResult:
    """Chinchilla Approach 3 (canonical columns N, D, loss; one row per finished run or checkpoint):
    minimise the *sum* of Huber(delta) on log residuals of log L = LSE(a - alpha ln N, b - beta ln D, e) with
    L-BFGS-B and analytic gradients from a grid of starts (alpha, beta in 0..2 step 0.5, e in -1..1 step 0.5,
    a, b on a 6-point grid: 4,500 starts, of which the n_starts with the lowest objective are optimised;
    n_starts=0 optimises all), keep the best.
    Intervals: bootstrap over rows, each refit from the best solution. Diagnostics flag parameters at a
    bound, an ill-conditioned optimum, and distant local optima with near-equal objective."""
    if form not in LOSS_FORMS:
        raise NotFittable(f"form={form!r} is unknown; use chinchilla or minicpm")
    _need(df, ("N", "D", "loss"), "loss")
    df, dropped = drop_overfit(df)
    spec = LOSS_FORMS[form]
    data = df[["N", "D", "loss"]].astype(float)
    data = data[np.isfinite(data).all(axis=1) & (data > 0).all(axis=1)]
    for col, what in (("N", "model sizes"), ("D", "token counts")):
        if data[col].nunique() < 3:
            raise NotFittable(f"the loss law needs at least 3 distinct {what} ({col}); this data has "
                              f"{data[col].nunique()} ({', '.join(f'{v:.3g}' for v in sorted(data[col].unique())[:5])})"
                              f"; L(N, D) is not identifiable from it")
    if len(data) < 8:
        raise NotFittable(f"the loss law has 5 parameters; {len(data)} usable runs are too few (need >= 8)")
    logN, logD = np.log(data["N"].to_numpy() / spec["scale"]), np.log(data["D"].to_numpy() / spec["scale"])
    logL = np.log(data["loss"].to_numpy())

    exps, es = np.arange(0.0, 2.01, 0.5), np.arange(-1.0, 1.01, 0.5)
    starts = np.array(list(itertools.product(spec["grid_ab"], spec["grid_ab"], es, exps, exps)))
    if n_starts:
        starts = starts[np.argsort(_grid_objective(starts, logN, logD, logL, delta))[:n_starts]]
    fits = [_minimize(s, logN, logD, logL, delta) for s in starts]
    fits.sort(key=lambda f: f.fun)
    best = _minimize(fits[0].x, logN, logD, logL, delta, _POLISH)  # polished: the same optimum as strict everywhere
    fits[0] = best
    rng = np.random.default_rng(seed)
    draws = []
    cells = [f"{n:.6g}:{d:.6g}" for n, d in zip(data["N"], data["D"])]  # one configuration: its seeds resampled
    for _ in range(n_boot):
        i = seed_resample(cells, rng)
        draws.append(_minimize(best.x, logN[i], logD[i], logL[i], delta, _POLISH).x)  # from the optimum: strict
    draws = np.array(draws).reshape(-1, 5)

    def named(theta):
        a, b, e, alpha, beta = theta
        return dict(zip(spec["symbols"], (math.exp(a), math.exp(b), math.exp(e), alpha, beta)))
    params = named(best.x)
    named_draws = [named(d) for d in draws]
    intervals = {k: _interval(np.array([d[k] for d in named_draws])) for k in params}
    diagnostics = dropped + seed_note(cells, "(N, D) point") + _loss_diagnostics(best, fits, logN, logD, logL, delta, spec["symbols"])
    pred = np.exp(logsumexp(np.stack([best.x[0] - best.x[3] * logN, best.x[1] - best.x[4] * logD,
                                      np.full_like(logN, best.x[2])]), axis=0))
    alpha, beta = best.x[3], best.x[4]
    details = {"objective": float(best.fun), "starts": len(starts), "rmse_log": float(np.sqrt(np.mean(
        (np.log(pred) - logL) ** 2))), "a_N": float(beta / (alpha + beta)) if alpha + beta > 0 else None}
    if loo:  # each point left out once: one Newton step from the optimum (the influence function)
        shifts = _leave_one_out_shifts(best.x, logN, logD, logL, delta)  # (n, 5)
        details["leave_one_out"] = {k: {"max_change": float(np.abs(shifts[:, j]).max()),
                                        "point": int(np.abs(shifts[:, j]).argmax())}
                                    for j, k in ((3, spec["symbols"][3]), (4, spec["symbols"][4]))}
        diagnostics += loo_warnings(details["leave_one_out"], params)
    return FitResult(law="loss", form="chinchilla" if form == "chinchilla" else "minicpm_loss", params=params,
                     intervals=intervals, units={**spec["units"], "L": "loss as logged", **(units or {})},
                     n_points=len(logL), diagnostics=diagnostics, details=details, samples=named_draws)


def _loss_diagnostics(best, fits, logN, logD, logL, delta, symbols) -> list[str]:
    out = []
    names = ("log " + symbols[0], "log " + symbols[1], "log " + symbols[2], symbols[3], symbols[4])
    for value, (lo, hi), name in zip(best.x, _BOUNDS, names):
        if min(value - lo, hi - value) < 1e-3 * (hi - lo):
            out.append(f"{name} = {value:.4g} is at its bound [{lo}, {hi}]: the fit is degenerate "
                       f"(e.g. the data cannot separate the irreducible loss from a size or data term)")
    # Gauss-Newton curvature of the log residuals: a huge condition number means some combination of
    # parameters is unconstrained by the data.
    eps = 1e-6
    base = _residuals(best.x, logN, logD, logL)
    J = np.column_stack([(_residuals(best.x + eps * np.eye(5)[i], logN, logD, logL) - base) / eps for i in range(5)])
    cond = np.linalg.cond(J.T @ J)
    if not np.isfinite(cond) or cond > 1e12:
        out.append(f"ill-conditioned optimum (condition number {cond:.2g}): intervals are unreliable")
    near = [f for f in fits[1:] if f.fun <= best.fun * 1.01 + 1e-12 and np.max(np.abs(f.x[3:] - best.x[3:])) > 0.05]
    if near:
        out.append(f"{len(near)} other local optima reach within 1% of the best objective with exponents "
                   f"differing by > 0.05 (e.g. alpha={near[0].x[3]:.3f}, beta={near[0].x[4]:.3f})")
    return out


def _residuals(theta, logN, logD, logL):
    a, b, e, alpha, beta = theta
    return logsumexp(np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)]), axis=0) - logL
