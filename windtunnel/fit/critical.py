"""The critical batch size (McCandlish et al. 2018; Zhang et al. 2024, arXiv 2410.21676) from batch-size sweeps.

At each (N, target loss) the steps to reach the target follow S(B) = S_min + E_min / B (steps fall as 1/B while the
batch is small, then level off at S_min). From it:
- McCandlish's B_noise = E_min / S_min (the batch where S = 2 S_min; tokens E = E_min (1 + B / B_noise));
- Zhang et al.'s critical batch, the batch whose steps exceed linear scaling from the sweep's smallest batch B_0 by
  20%: S(B) = 1.2 S(B_0) B_0 / B, i.e. B_crit = B_noise / 5 + 1.2 B_0.
The hyperbola is fitted in log S (a multiplicative error model, as Zhang et al. fit it): steps span decades across
a batch sweep, and least squares in S itself lets the smallest batches decide the fit. `error="linear"` keeps the
unweighted fit in S, for comparison. Laws: both batches against the loss (a / L^b, Kaplan's form), against N and
against D (c X^e), when the data give one target per size (steps-to-target rows, as Zhang's). Intervals: each
point's batch sizes are resampled; the laws resample the points and, for each, one of its own bootstrap draws.
"""
import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from .batch import _levels, tokens_to_reach
from .blas import one_blas_thread
from .result import FitResult, NotFittable, _interval, _need, drop_decay

ZHANG_OVERHEAD = 0.2  # Zhang et al.: 20% more steps than linear scaling from the smallest batch


def hyperbola(bs: np.ndarray, steps: np.ndarray, error: str = "log") -> tuple[float, float]:
    """(S_min, E_min) of S = S_min + E_min / B; nan where the steps do not fall with the batch."""
    x, y = 1.0 / bs, steps
    slope, s0 = np.polyfit(x, y, 1) if len(np.unique(x)) > 1 else (np.nan, np.nan)
    if error == "linear":
        return (float(s0), float(slope)) if s0 > 0 and slope > 0 else (np.nan, np.nan)
    start = np.log([max(s0, 1e-3 * y.min()) if np.isfinite(s0) else y.min(),
                    max(slope, 1e-3 * y.max() * bs.min()) if np.isfinite(slope) else y.max() * bs.min()])
    fit = least_squares(lambda p: np.log(np.exp(p[0]) + np.exp(p[1]) * x) - np.log(y), start, method="lm")
    s_min, e_min = np.exp(fit.x)
    # a B_noise outside 1000x the sweep's batches is the hyperbola's asymptote, not a measurement
    b_noise = e_min / s_min
    return (float(s_min), float(e_min)) if bs.min() / 1e3 < b_noise < bs.max() * 1e3 else (np.nan, np.nan)


def _point(bs: np.ndarray, steps: np.ndarray, error: str, n_boot: int, rng) -> dict:
    s_min, e_min = hyperbola(bs, steps, error)
    b0 = float(bs.min())
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(bs), len(bs))
        if len(np.unique(bs[i])) >= 3:
            s, e = hyperbola(bs[i], steps[i], error)
            draws.append(e / s)
    draws = np.array(draws, dtype=float)
    b_noise = e_min / s_min
    ok = np.isfinite(b_noise)
    zhang = ZHANG_OVERHEAD * b_noise + (1 + ZHANG_OVERHEAD) * b0
    return {"S_min": s_min if ok else None, "E_min": e_min if ok else None, "B_noise": b_noise if ok else None,
            "B_noise_interval": _interval(draws), "B_crit": zhang if ok else None,
            "B_crit_interval": [None if v is None else ZHANG_OVERHEAD * v + (1 + ZHANG_OVERHEAD) * b0
                                for v in _interval(draws)],
            "D_crit": zhang * (s_min + e_min / zhang) if ok else None,  # tokens to the target at B_crit
            "B_0": b0, "n_batches": int(len(np.unique(bs))), "draws": draws,
            "flag": None if ok else "the steps do not follow S_min + E_min / B here (no B_noise within 1000x the "
                                    "sweep's batches)"}


def _power(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(intercept)), float(slope)


def _law(points: list[dict], x_key: str, y_key: str, n_boot: int, rng) -> dict | None:
    """c x^e over the points (log-log least squares), with an interval from resampling the points and, for each,
    one of its own bootstrap draws (scaled from B_noise to y_key by the point's affine map)."""
    pts = [p for p in points if p.get(y_key) and p.get(x_key)]
    x = np.array([p[x_key] for p in pts], dtype=float)
    if len(pts) < 3 or np.ptp(np.log(x)) < 1e-3:
        return None
    y = np.array([p[y_key] for p in pts], dtype=float)
    c, e = _power(x, y)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(pts), len(pts))
        if np.ptp(np.log(x[i])) < 1e-3:
            continue
        ys = []
        for k in i:
            d = pts[k]["draws"]
            b_noise = d[rng.integers(len(d))] if len(d) else pts[k]["B_noise"]
            ys.append(b_noise if y_key == "B_noise" else ZHANG_OVERHEAD * b_noise + (1 + ZHANG_OVERHEAD) * pts[k]["B_0"])
        ys = np.array(ys)
        if (ys > 0).all():
            boots.append(_power(x[i], ys))
    boots = np.array(boots).reshape(-1, 2)
    return {"c": c, "e": e, "c_interval": _interval(boots[:, 0]), "e_interval": _interval(boots[:, 1]),
            "n_points": len(pts), "samples": boots}


def _monotone_notes(points: list[dict]) -> list[str]:
    """Where the law assumes an order and the points break it beyond their intervals: B_noise should grow as the
    loss falls (within a size) and, at one target per size, grow with N."""
    notes = []
    ok = [p for p in points if p["B_noise"]]
    by_size: dict = {}
    for p in ok:
        by_size.setdefault(p["N"], []).append(p)
    one_per_size = all(len(v) == 1 for v in by_size.values())
    series = [("N", sorted(ok, key=lambda p: p["N"]), "grows with N")] if one_per_size and len(ok) >= 3 else \
        [(f"loss at N={n:.3g}", sorted(v, key=lambda p: -p["loss"]), "grows as the loss falls") for n, v in by_size.items()
         if len(v) >= 3]
    for what, seq, rule in series:
        broken = [(a, b) for a, b in zip(seq, seq[1:]) if b["B_noise"] < a["B_noise"]]
        beyond = [(a, b) for a, b in broken if a["B_noise_interval"][0] is not None and b["B_noise_interval"][1]
                  is not None and b["B_noise_interval"][1] < a["B_noise_interval"][0]]
        if broken:
            key = "N" if what == "N" else "loss"
            pairs = ", ".join(f"{key}={a[key]:.4g}: {a['B_noise']:.4g} -> {key}={b[key]:.4g}: {b['B_noise']:.4g}"
                              for a, b in broken[:3])
            notes.append(f"B_noise is not monotone in {what} (the law assumes it {rule}): {pairs}; "
                         f"{len(beyond)} of {len(broken)} reversal(s) beyond the per-point intervals")
    return notes


def _steps_table(df: pd.DataFrame, n_levels: int, early_frac: float) -> pd.DataFrame:
    if "steps" in df:
        _need(df, ("N", "bs", "loss", "steps"), "critical-batch")
        return df[["N", "bs", "loss", "steps"]].astype(float)
    _need(df, ("run", "N", "bs", "tokens", "loss"), "critical-batch")
    rows = []
    for n, size in df.dropna(subset=["tokens", "loss"]).groupby("N"):
        curves = {r: (g["bs"].iloc[0], g["tokens"].to_numpy(float), g["loss"].to_numpy(float))
                  for r, g in size.groupby("run")}
        for level in _levels(curves, n_levels, early_frac):
            for bs, t, l in curves.values():
                reach = tokens_to_reach(t, l, level)
                if np.isfinite(reach):
                    rows.append({"N": float(n), "bs": float(bs), "loss": float(level), "steps": reach / bs})
    return pd.DataFrame(rows, columns=["N", "bs", "loss", "steps"])


@one_blas_thread
def critical_batch_law(df: pd.DataFrame, *, n_levels: int = 8, early_frac: float = 0.05, n_boot: int = 200,
                       seed: int = 0, units: dict | None = None, error: str = "log") -> FitResult:
    """B_noise and Zhang's B_crit per (N, target loss), and their laws in L, N and D, from batch-size sweeps with
    loss curves (canonical columns run, N, bs, tokens, loss) or from rows that already give the steps to a target
    loss (columns N, bs, loss as the target, steps). The headline law is B_noise = a / L^b."""
    if error not in ("log", "linear"):
        raise ValueError(f"error={error!r}: 'log' (multiplicative, the default) or 'linear'")
    df, stable_only = drop_decay(df)  # WSD runs: steps to a loss in the stable phase, as the batch-size law reads them
    table = _steps_table(df, n_levels, early_frac)
    rng = np.random.default_rng(seed)
    points = []
    for (n, level), g in table.groupby(["N", "loss"]):
        if g["bs"].nunique() >= 3:
            points.append({"N": float(n), "loss": float(level), **_point(g["bs"].to_numpy(float),
                                                                          g["steps"].to_numpy(float), error, n_boot, rng)})
    good = [p for p in points if p["B_noise"]]
    if len(good) < 3 or np.ptp(np.log([p["loss"] for p in good])) < 1e-3:
        raise NotFittable(f"the critical batch law needs B_noise at 3 or more distinct losses; this data gives "
                          f"{len(good)} (each needs >= 3 batch sizes that reach the loss, with steps that fall as the "
                          f"batch grows and level off)")
    by_loss = _law(good, "loss", "B_noise", n_boot, rng)
    one_per_size = len({p["N"] for p in good}) == len(good)
    laws = {"B_noise(L)": by_loss, "B_crit(L)": _law(good, "loss", "B_crit", n_boot, rng)}
    if one_per_size:
        laws.update({"B_noise(N)": _law(good, "N", "B_noise", n_boot, rng),
                     "B_crit(N)": _law(good, "N", "B_crit", n_boot, rng),
                     "B_crit(D)": _law(good, "D_crit", "B_crit", n_boot, rng)})
    diagnostics = stable_only + ([f"{len(points) - len(good)} target(s) without a critical batch"]
                                 if len(good) < len(points) else [])
    if not one_per_size:
        diagnostics.append("B_crit(N) and B_crit(D) need one target loss per size (steps-to-target rows); these "
                           "sweeps give several levels per size: only the laws in L are fitted")
    diagnostics += _monotone_notes(good)
    if error == "linear":
        diagnostics.append("error=linear: least squares in S, where the smallest batches' steps decide the fit")
    details = {"levels": [{k: v for k, v in p.items() if k != "draws"} for p in points], "error_model": error,
               "laws": {name: {k: v for k, v in law.items() if k != "samples"} for name, law in laws.items() if law}}
    return FitResult(law="critical_batch", form="power_law", params={"a": by_loss["c"], "b": -by_loss["e"]},
                     intervals={"a": by_loss["c_interval"], "b": [-v if v is not None else None
                                                                   for v in by_loss["e_interval"][::-1]]},
                     units={"x": "loss (as logged)", "y": "B_noise in tokens (as bs)", **(units or {})},
                     n_points=len(good), diagnostics=diagnostics, details=details,
                     samples=[{"a": float(c), "b": -float(e)} for c, e in by_loss["samples"]])
