"""Fit the wind-tunnel laws from logged runs: optimal batch size vs loss, the LR optimum, and L(N, D).

Inputs are pandas tables with canonical columns (see `canonical`): windtunnel's own `load_runs` /
`load_results` tables, or anyone's CSV/Parquet of runs through a column mapping. Every fit returns a
FitResult that serialises to JSON with each parameter's value and bootstrap interval, its units and
diagnostics. Data that cannot identify a law raises NotFittable with the reason; it never returns a
confident number. The only scipy importer.
"""
import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from scipy.optimize import minimize
from scipy.special import logsumexp

from . import laws

# windtunnel's own tables -> canonical names
WINDTUNNEL_COLUMNS = {"run": "run_dir", "N": "N", "bs": "train.batch_size_tokens", "tokens": "tokens",
                      "loss": "eval_loss", "lr": "optim.lr", "param": "model.parametrization",
                      "width": "model.d_model", "seed": "train.seed", "D": "tokens"}


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
              n_kind: str = "non-embedding") -> tuple[pd.DataFrame, dict]:
    """Rename a table to canonical columns (run, N, bs, tokens/D, loss, lr, param, width, seed) and convert
    units: `bs_unit="sequences"` multiplies bs by seq_len; an `N_emb` column is subtracted from N when
    n_kind="total" (making N non-embedding). Returns the table and its units."""
    mapping = dict(WINDTUNNEL_COLUMNS)
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
    for col in ("N", "bs", "tokens", "D", "loss", "lr"):
        if col in out:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)  # 6ND overflows int64
    if "run" not in out:
        out["run"] = np.arange(len(out)) if "tokens" not in out else out.groupby(
            [c for c in ("N", "bs", "lr", "param", "seed") if c in out], dropna=False).ngroup()
    units = {"N": f"parameters ({n_kind})", "bs": "tokens per optimizer step", "tokens": "tokens",
             "loss": "nats/token (as logged)", "lr": "peak (base) learning rate"}
    return out, units


def _need(df: pd.DataFrame, cols: tuple, law: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise NotFittable(f"the {law} law needs columns {', '.join(cols)}; missing {', '.join(missing)} "
                          f"(map them with --columns, e.g. --columns {missing[0]}=YOUR_COLUMN)")


# ----------------------------------------------------------------------------- batch size

def tokens_to_reach(tokens: np.ndarray, loss: np.ndarray, level: float) -> float:
    """Tokens a run needed to first reach `level` on its held-out curve; NaN if it never did, or did before
    its first eval. The curve is the running minimum of the evals, interpolated monotonically (PCHIP) in
    log tokens: linear interpolation of a convex curve between sparse evals biases the result by up to ~20%
    at 5 evals per decade, differently for each batch size, which would shift the iso-loss optimum."""
    keep = (tokens > 0) & np.isfinite(loss)
    order = np.argsort(tokens[keep])
    x, y = np.log(tokens[keep][order]), np.minimum.accumulate(loss[keep][order])
    hit = np.flatnonzero(y <= level)
    if len(hit) == 0 or hit[0] == 0:
        return float("nan")
    i = hit[0]
    strict = np.concatenate([[True], np.diff(y) < 0])  # knots where the running minimum moved
    xs, ys = x[strict], y[strict]
    if len(xs) >= 3:
        fine = np.linspace(x[i - 1], x[i], 257)
        curve = PchipInterpolator(xs, ys)(fine)
        j = np.flatnonzero(curve <= level)
        if len(j) and j[0] > 0:
            a, b = j[0] - 1, j[0]
            w = (curve[a] - level) / (curve[a] - curve[b])
            return float(math.exp(fine[a] + w * (fine[b] - fine[a])))
    w = (y[i - 1] - level) / (y[i - 1] - y[i])
    return float(math.exp(x[i - 1] + w * (x[i] - x[i - 1])))


def _levels(curves: dict, n_levels: int, early_frac: float) -> np.ndarray:
    """Loss levels from the 4th-lowest best loss (4 runs reach it) up to the median loss of the runs after
    `early_frac` of their tokens (earlier than that a run is still in its initial transient).
    curves: run -> (bs, tokens, loss)."""
    best = sorted(np.nanmin(l) for _, _, l in curves.values())
    early = [np.interp(np.log(early_frac * t.max()), np.log(t[t > 0]), np.minimum.accumulate(l[t > 0]))
             for _, t, l in curves.values()]
    lo, hi = best[min(3, len(best) - 1)] * (1 + 1e-6), float(np.median(early))
    return np.geomspace(lo, hi, n_levels) if hi > lo else np.array([])


def _size_optima(bs: np.ndarray, reach: np.ndarray, levels: np.ndarray, min_steps: float) -> list[dict]:
    """Per loss level: the parabola in (log bs, log tokens) through the runs that reached it, and its minimum.
    bs: (runs,), reach: (runs, levels) tokens to reach each level. A run's point counts only if it took at
    least min_steps optimizer steps to get there (before that it is in warmup)."""
    out = []
    for j, level in enumerate(levels):
        ok = np.isfinite(reach[:, j]) & (reach[:, j] >= min_steps * bs)
        if len(set(bs[ok])) < 3:
            continue
        x, y = np.log(bs[ok]), np.log(reach[ok, j])
        c2, c1, _ = np.polyfit(x, y, 2)
        if c2 <= 0:
            out.append({"loss": float(level), "bs_opt": None, "n_runs": int(ok.sum()),
                        "flag": "no minimum (parabola opens down)"})
            continue
        x_star = -c1 / (2 * c2)
        edge = not (x.min() < x_star < x.max())
        out.append({"loss": float(level), "bs_opt": float(math.exp(x_star)), "n_runs": int(ok.sum()),
                    "flag": "optimum at the edge of the swept grid" if edge else None})
    return out


def _power_fit(rows: list[dict]) -> tuple[float, float]:
    good = [r for r in rows if r["bs_opt"] and not r["flag"]]
    if len(good) < 3 or np.ptp(np.log([r["loss"] for r in good])) < 1e-3:
        return float("nan"), float("nan")
    guess = laws.power_law_guess([r["loss"] for r in good], [r["bs_opt"] for r in good])
    return guess["a"], guess["b"]


def batch_size_law(df: pd.DataFrame, *, n_levels: int = 8, early_frac: float = 0.05, min_steps: float = 4,
                   n_boot: int = 200, seed: int = 0, units: dict | None = None) -> FitResult:
    """MiniCPM's batch-size law bs_opt = a / L^b from per-size batch-size sweeps (canonical columns run, N,
    bs, tokens, loss: one row per held-out eval). Per size and loss level, the tokens each run needed to
    reach the level; a parabola in log-log through them; its minimum is that level's optimal batch size.
    Then log bs_opt = log a - b log L over all sizes. Intervals: bootstrap over runs within each size.
    Optima at the edge of the swept grid are reported and left out of the fit."""
    _need(df, ("run", "N", "bs", "tokens", "loss"), "batch-size")
    df = df.dropna(subset=["tokens", "loss"])  # train-only log rows carry no held-out loss
    sizes = {}  # N -> (bs per run, reach matrix (runs, levels), levels)
    for n, size in df.groupby("N"):
        curves = {r: (g["bs"].iloc[0], g["tokens"].to_numpy(float), g["loss"].to_numpy(float))
                  for r, g in size.groupby("run")}
        if len({c[0] for c in curves.values()}) < 3:
            continue
        levels = _levels(curves, n_levels, early_frac)
        bs = np.array([c[0] for c in curves.values()], dtype=float)
        reach = np.array([[tokens_to_reach(t, l, lv) for lv in levels] for _, t, l in curves.values()])
        sizes[n] = (bs, reach.reshape(len(bs), len(levels)), levels)
    if not sizes:
        raise NotFittable("no model size has runs at 3 or more batch sizes; the batch-size law needs a sweep of "
                          ">= 3 (MiniCPM: 6) batch sizes per size")

    def optima(pick: dict) -> list[dict]:
        return [{"N": float(n), **o} for n, (bs, reach, levels) in sizes.items()
                for o in _size_optima(bs[pick[n]], reach[pick[n]], levels, min_steps)]

    rows = optima({n: np.arange(len(v[0])) for n, v in sizes.items()})
    a, b = _power_fit(rows)
    good = [r for r in rows if r["bs_opt"] and not r["flag"]]
    if not np.isfinite(a):
        raise NotFittable(f"only {len(good)} loss level(s) have an interior batch-size optimum (need 3 across a "
                          f"range of losses); widen the batch-size grid around the optimum or train longer")
    rng = np.random.default_rng(seed)
    draws = np.array([_power_fit(optima({n: rng.integers(0, len(v[0]), len(v[0])) for n, v in sizes.items()}))
                      for _ in range(n_boot)]).reshape(-1, 2)
    diagnostics = []
    if any(r["flag"] for r in rows):
        diagnostics.append(f"{sum(1 for r in rows if r['flag'])} of {len(rows)} loss levels flagged "
                           f"(optimum at the grid edge or no minimum) and left out")
    if len(sizes) < 2:
        diagnostics.append("one model size only: b rests on the loss range of one sweep (MiniCPM used 3 sizes)")
    b_low, b_high = _interval(draws[:, 1])
    if b_low is not None and b_low <= 0 <= b_high:
        diagnostics.append(f"b's interval [{b_low:.3g}, {b_high:.3g}] includes 0: these runs show no clear change of "
                           f"the optimal batch with loss (train longer, or sweep sizes whose losses differ more)")
    return FitResult(law="batch_size", form="power_law", params={"a": a, "b": b},
                     intervals={"a": _interval(draws[:, 0]), "b": _interval(draws[:, 1])},
                     units={"x": "loss (as logged, nats/token)", "y": "batch size in tokens", **(units or {})},
                     n_points=len(good), diagnostics=diagnostics,
                     details={"optima": rows, "sizes": [float(n) for n in sizes]},
                     samples=[{"a": x, "b": y} for x, y in draws if np.isfinite(x)])


# ----------------------------------------------------------------------------- learning rate

def _lr_star(lr: np.ndarray, loss: np.ndarray) -> tuple[float, dict]:
    """Optimum of one LR sweep (mean loss per LR, diverged = inf): a parabola in log LR through the best
    point and up to two finite neighbours on each side; the best grid point when no parabola opens up."""
    finite = np.isfinite(loss)
    best = int(np.nanargmin(np.where(finite, loss, np.nan)))
    idx = [i for i in range(max(0, best - 2), min(len(lr), best + 3)) if finite[i]]
    info = {"best_lr": float(lr[best]), "best_loss": float(loss[best]),
            "edge": best in (0, len(lr) - 1) or not finite[max(best - 1, 0)] or not finite[min(best + 1, len(lr) - 1)]}
    if len(idx) >= 3:
        g = laws.log_parabola_guess(lr[idx], loss[idx])
        inside = np.log(lr[idx[0]]) <= g["log_lr_star"] <= np.log(lr[idx[-1]])
        if g["k"] > 0 and inside:
            return float(np.exp(g["log_lr_star"])), {**info, "parabola": g}
    return float(lr[best]), info


def lr_optimum(df: pd.DataFrame, *, band: float = 0.0025, n_boot: int = 200, seed: int = 0,
               units: dict | None = None) -> FitResult:
    """The LR optimum per model size and parametrization (canonical columns N, lr, loss; optional param,
    width, seed), the near-optimal band (every LR within `band` of the best loss), and the muTransfer verdict:
    how many grid steps the optimum moves across widths. Where it moves by more than one step, a power law
    lr* = c N^e_N is fitted (that is what SP needs and muP should not)."""
    _need(df, ("N", "lr", "loss"), "lr")
    df = df.copy()
    df["param"] = df["param"] if "param" in df else "any"
    df["loss"] = df["loss"].where(np.isfinite(df["loss"]), np.inf).fillna(np.inf)  # diverged runs lose
    rng = np.random.default_rng(seed)
    groups = []
    for (param, n), g in df.groupby(["param", "N"]):
        table = g.groupby("lr")["loss"].apply(list)
        lr = table.index.to_numpy(float)
        if len(lr) < 3:
            continue
        mean = np.array([np.mean(v) for v in table])
        star, info = _lr_star(lr, mean)
        near = lr[mean <= info["best_loss"] * (1 + band)]
        boots = []
        if max(len(v) for v in table) > 1:  # seeds: resample them per LR
            for _ in range(n_boot):
                boots.append(_lr_star(lr, np.array([np.mean(rng.choice(v, len(v))) for v in table]))[0])
        interval = _interval(np.log(boots)) if boots else [float(np.log(near.min())), float(np.log(near.max()))]
        groups.append({"param": param, "N": float(n), "width": float(g["width"].iloc[0]) if "width" in g else None,
                       "lr_star": star, "interval": [float(np.exp(v)) for v in interval] if interval[0] is not None
                       else [None, None], "band": [float(near.min()), float(near.max())], **info,
                       "grid_step": float(np.exp(np.median(np.diff(np.log(lr)))))})
    if not groups:
        raise NotFittable("no (model size, parametrization) has 3 or more learning rates; sweep a grid of LRs")
    diagnostics, verdicts = [], {}
    for g in groups:
        if g["edge"]:
            diagnostics.append(f"{g['param']} N={g['N']:.3g}: best LR {g['best_lr']:.3g} is at the edge of the "
                               f"grid (or next to a diverged LR); extend the grid")
    params, intervals, samples = {}, {}, []
    for param in sorted({g["param"] for g in groups}):
        mine = sorted((g for g in groups if g["param"] == param), key=lambda g: g["N"])
        logs = np.log([g["lr_star"] for g in mine])
        shift = (logs - logs[0]) / np.log(mine[0]["grid_step"])
        moves = bool(len(mine) > 1 and np.max(np.abs(shift)) > 1.0)
        verdicts[param] = {"sizes": [g["N"] for g in mine], "shift_in_grid_steps": shift.tolist(), "moves": moves,
                           "verdict": ("optimum moves with width" if moves else "optimum transfers across width")
                           if len(mine) > 1 else "one size only"}
    # The headline law: muP (or the only parametrization) -- a constant base LR, or a power law in N.
    main = "mup" if "mup" in verdicts else sorted(verdicts)[0]
    mine = sorted((g for g in groups if g["param"] == main), key=lambda g: g["N"])
    if verdicts[main]["moves"]:
        fit = laws.hyper_power_law_guess(np.array([g["lr_star"] for g in mine]), N=np.array([g["N"] for g in mine]))
        params = {"c": fit["c"], "e_N": fit["e_N"]}
        form = "hyper_power_law"
        intervals = {k: [None, None] for k in params}
        diagnostics.append(f"{main}: the LR optimum moves with size; lr* = c N^e_N fitted on {len(mine)} sizes")
    else:
        logs = np.log([g["lr_star"] for g in mine])
        lows = [np.log(g["interval"][0]) for g in mine if g["interval"][0]]
        highs = [np.log(g["interval"][1]) for g in mine if g["interval"][1]]
        params = {"lr_star": float(np.exp(logs.mean()))}
        intervals = {"lr_star": [float(np.exp(min(lows))), float(np.exp(max(highs)))] if lows else [None, None]}
        form = "constant"
    return FitResult(law="lr", form=form, params=params, intervals=intervals,
                     units={"lr": "peak (base) learning rate; under muP hidden matrices use lr / m", "N": "parameters",
                            **(units or {})},
                     n_points=len(df), diagnostics=diagnostics,
                     details={"parametrization": main, "optima": groups, "transfer": verdicts}, samples=samples)


# ----------------------------------------------------------------------------- loss law L(N, D)

# Parameter symbols per form, in the order of the optimiser's vector theta = (a, b, e, alpha, beta) with
# A = e^a, B = e^b, E = e^e. MiniCPM's form is the same family with N and D in billions.
LOSS_FORMS = {
    "chinchilla": {"symbols": ("A", "B", "E", "alpha", "beta"), "scale": 1.0,
                   "grid_ab": np.arange(0.0, 26.0, 5.0), "units": {"N": "parameters", "D": "tokens"}},
    "minicpm": {"symbols": ("C_N", "C_D", "L0", "alpha", "beta"), "scale": 1e9,
                "grid_ab": np.arange(-10.0, 5.0, 2.5), "units": {"N": "1e9 parameters", "D": "1e9 tokens"}},
}
_BOUNDS = [(-30.0, 60.0), (-30.0, 60.0), (-10.0, 5.0), (0.0, 3.0), (0.0, 3.0)]


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


def _minimize(theta0, logN, logD, logL, delta):
    return minimize(_huber_objective, theta0, args=(logN, logD, logL, delta), jac=True, method="L-BFGS-B",
                    bounds=_BOUNDS, options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-12})


def loss_law(df: pd.DataFrame, *, form: str = "chinchilla", delta: float = 1e-3, n_starts: int = 500,
             n_boot: int = 100, seed: int = 0, units: dict | None = None) -> FitResult:
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
    best = fits[0]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(logL), len(logL))
        draws.append(_minimize(best.x, logN[i], logD[i], logL[i], delta).x)
    draws = np.array(draws).reshape(-1, 5)

    def named(theta):
        a, b, e, alpha, beta = theta
        return dict(zip(spec["symbols"], (math.exp(a), math.exp(b), math.exp(e), alpha, beta)))
    params = named(best.x)
    named_draws = [named(d) for d in draws]
    intervals = {k: _interval(np.array([d[k] for d in named_draws])) for k in params}
    diagnostics = _loss_diagnostics(best, fits, logN, logD, logL, delta, spec["symbols"])
    pred = np.exp(logsumexp(np.stack([best.x[0] - best.x[3] * logN, best.x[1] - best.x[4] * logD,
                                      np.full_like(logN, best.x[2])]), axis=0))
    alpha, beta = best.x[3], best.x[4]
    details = {"objective": float(best.fun), "starts": len(starts), "rmse_log": float(np.sqrt(np.mean(
        (np.log(pred) - logL) ** 2))), "a_N": float(beta / (alpha + beta)) if alpha + beta > 0 else None}
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
