"""MiniCPM's batch-size law: the optimal batch size at each loss, from per-size batch-size sweeps."""
import math

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from .. import laws
from .blas import one_blas_thread
from .result import (FitResult, NotFittable, _interval, _need, drop_decay, drop_overfit, leave_one_out, loo_warnings,
                     seed_note, seed_resample)
from .transition import transition_notes


def tokens_to_reach(tokens: np.ndarray, loss: np.ndarray, level) -> float | np.ndarray:
    """Tokens a run needed to first reach `level` (a number, or an array of levels) on its held-out curve; NaN if
    it never did, or did before its first eval. The curve is the running minimum of the evals, interpolated
    monotonically (PCHIP) in log tokens: linear interpolation of a convex curve between sparse evals biases the
    result by up to ~20% at 5 evals per decade, differently for each batch size, which would shift the iso-loss
    optimum. The curve is built once for all the levels."""
    levels = np.atleast_1d(np.asarray(level, dtype=float))
    out = np.full(len(levels), np.nan)
    keep = (tokens > 0) & np.isfinite(loss)
    if keep.any():
        t, l = np.asarray(tokens, float)[keep], np.asarray(loss, float)[keep]
        order = np.argsort(t, kind="stable")
        t, l = t[order], l[order]
        first = np.concatenate([[True], np.diff(t) > 0])  # one point per token count: its lowest loss
        x, y = np.log(t[first]), np.minimum.accumulate(np.minimum.reduceat(l, np.flatnonzero(first)))
        strict = np.concatenate([[True], np.diff(y) < 0])  # knots where the running minimum moved
        pchip = PchipInterpolator(x[strict], y[strict]) if strict.sum() >= 3 else None
        for k, lv in enumerate(levels):
            out[k] = _crossing(x, y, pchip, lv)
    return float(out[0]) if np.ndim(level) == 0 else out


def _crossing(x: np.ndarray, y: np.ndarray, pchip, level: float) -> float:
    """Where the running-minimum curve (x = log tokens, y = loss) first reaches `level`: PCHIP between the evals
    around the crossing where it has 3 knots, else linear; NaN if never, or at the first eval already."""
    hit = np.flatnonzero(y <= level)
    if len(hit) == 0 or hit[0] == 0:
        return float("nan")
    i = hit[0]
    if pchip is not None:
        fine = np.linspace(x[i - 1], x[i], 257)
        curve = pchip(fine)
        j = np.flatnonzero(curve <= level)
        if len(j) and j[0] > 0:
            a, b = j[0] - 1, j[0]
            w = (curve[a] - level) / (curve[a] - curve[b])
            return float(math.exp(fine[a] + w * (fine[b] - fine[a])))
    w = (y[i - 1] - level) / (y[i - 1] - y[i])
    return float(math.exp(x[i - 1] + w * (x[i] - x[i - 1])))


def _first_eval(tokens: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """(tokens, loss) of a run's first held-out eval after step 0 (the lowest loss if it was logged twice)."""
    keep = (tokens > 0) & np.isfinite(loss)
    if not keep.any():
        return float("nan"), float("nan")
    t = tokens[keep].min()
    return float(t), float(loss[keep][tokens[keep] == t].min())


def _window(curves: dict, early_frac: float, min_steps: float = 0.0) -> tuple[float, float]:
    """The loss window one size's runs measure: from the 4th-lowest best loss (4 runs reach it) up to the median loss
    of the runs after `early_frac` of their tokens or min_steps steps, whichever is later (before that a run is in
    its warmup and initial transient, where the tokens to reach a loss say little about the batch).
    curves: run -> (bs, tokens, loss)."""
    best = sorted(np.nanmin(l) for _, _, l in curves.values())
    early = [np.interp(np.log(max(early_frac * t.max(), min_steps * bs)), np.log(t[t > 0]),
                       np.minimum.accumulate(l[t > 0])) for bs, t, l in curves.values()]
    return best[min(3, len(best) - 1)] * (1 + 1e-6), float(np.median(early))


def _levels(curves: dict, n_levels: int, early_frac: float) -> np.ndarray:
    """n_levels loss levels spaced evenly in log over one size's window (_window)."""
    lo, hi = _window(curves, early_frac)
    return np.geomspace(lo, hi, n_levels) if hi > lo else np.array([])


def parse_levels(text: str) -> tuple[str, tuple]:
    """--levels: "" (the common window where the sizes' windows overlap, else each size its own), "common" (the levels
    every size measures after its transient, or a refusal), "per-size" (each size its own window, as MiniCPM staggered
    them) or "LO:HI" (the user's window, every size)."""
    text = (text or "").strip()
    if text in ("", "common"):
        return text or "auto", ()
    if text == "per-size":
        return "per-size", ()
    lo, sep, hi = text.partition(":")
    try:
        bounds = (float(lo), float(hi))
    except ValueError:
        bounds = ()
    if not sep or not bounds or not 0 < bounds[0] < bounds[1]:
        raise NotFittable(f"--levels {text!r}: give LO:HI with 0 < LO < HI (losses as logged, e.g. 3.2:4.5), "
                          f"'per-size' or 'common'")
    return "window", bounds


def _size_optima(bs: np.ndarray, reach: np.ndarray, levels: np.ndarray, min_steps: float,
                 budget: np.ndarray = None, censor: bool = True, first: np.ndarray = None,
                 early: np.ndarray = None) -> list[dict]:
    """Per loss level: the parabola in (log bs, log tokens) through the runs' tokens to reach it, and its
    minimum. bs: (runs,), reach: (runs, levels) tokens to reach each level (NaN: not measured), budget:
    (runs,) tokens each run trained, first: (runs,) tokens at each run's first eval, early: (runs, levels)
    True where a run was already below the level at its first eval. A run that never reached a level needed
    more than its whole run; one already below it at its first eval needed fewer tokens than that eval. With
    `censor`, such a point is a bound (censored regression: the parabola is refitted with each violated bound
    moved to the curve until none is violated) instead of being dropped, which would bias the optimum towards
    the batch sizes that were measured. A point counts only after min_steps optimizer steps (before that a
    run is in warmup). Levels that fewer than 3 batch sizes reach are skipped."""
    out = []
    never = ~np.isfinite(reach)  # (runs, levels) not measured: never reached, or below it at the first eval
    early = np.zeros_like(never) if early is None or first is None else early & never
    never &= ~early
    # a first eval inside warmup bounds nothing we trust, as a point reached there counts for nothing
    early &= (first >= min_steps * bs)[:, None] if first is not None else False
    for j, level in enumerate(levels):
        ok = np.isfinite(reach[:, j]) & (reach[:, j] >= min_steps * bs)
        if len(set(bs[ok])) < 3:
            out.append({"loss": float(level), "bs_opt": None, "n_runs": int(ok.sum()), "censored": 0,
                        "flag": "reached by fewer than 3 batch sizes"})
            continue
        cen = censor & ((never[:, j] & (budget is not None)) | early[:, j])
        x_ok, y_ok = np.log(bs[ok]), np.log(reach[ok, j])
        c2, c1, c0 = _quadratic(x_ok) @ y_ok
        if cen.any():
            # least squares with the censored points as bounds: minimise the reached points' squared residuals
            # plus each violated bound's squared distance to the curve, by alternately moving each bound to the
            # curve and refitting. Never reached: need > budget (lower bound); below the level at the first
            # eval: need < that eval's tokens (upper bound)
            x_cen = np.log(bs[cen])
            low = np.where(early[cen, j], -np.inf, np.log(budget[cen]) if budget is not None else 0.0)
            high = np.where(early[cen, j], np.log(first[cen]) if first is not None else 0.0, np.inf)
            x = np.concatenate([x_ok, x_cen])
            solve, at_cen = _quadratic(x), np.vander(x_cen, 3)  # (3, points), (censored, 3): fixed over the loop
            coef = np.array([c2, c1, c0])
            for _ in range(200):
                new = solve @ np.concatenate([y_ok, np.clip(at_cen @ coef, low, high)])
                converged = np.all(np.abs(new - coef) <= 1e-12 + 1e-10 * np.abs(coef))
                coef = new
                if converged:
                    break
            c2, c1, c0 = coef
        else:
            x = x_ok
        # the level's points and parabola, for the iso-loss figure (plot.batch_size_curves)
        row = {"loss": float(level), "n_runs": int(ok.sum()), "censored": int(cen.sum()),
               "censored_early": int((cen & early[:, j]).sum()), "coef": [c2, c1, c0],
               "bs": bs[ok].tolist(), "reach": reach[ok, j].tolist(),
               "censored_bs": bs[cen].tolist(),
               "censored_at": [float(first[i] if early[i, j] else budget[i]) for i in np.flatnonzero(cen)],
               "censored_upper": early[cen, j].tolist()}  # True: an upper bound (below the level at the first eval)
        if c2 <= 0:
            out.append({**row, "bs_opt": None, "flag": "no minimum (parabola opens down)"})
            continue
        x_star = -c1 / (2 * c2)
        edge = not (x.min() < x_star < x.max())
        # an all-but-flat parabola puts its minimum anywhere (exp would overflow); off the grid is all it says
        out.append({**row, "bs_opt": float(math.exp(np.clip(x_star, x.min() - 20, x.max() + 20))),
                    "flag": "optimum at the edge of the swept grid" if edge else None})
    return out


def _quadratic(x: np.ndarray) -> np.ndarray:
    """(3, points): the least-squares operator of a parabola in x, so that _quadratic(x) @ y = [c2, c1, c0] (what
    np.polyfit(x, y, 2) returns, without its per-call overhead: the censored fit solves it up to 200 times)."""
    return np.linalg.pinv(np.vander(x, 3))


def _form_check(rows: list[dict], boot_rows: list[list[dict]], half) -> dict:
    """b on the lower and the upper half of the levels, with bootstrap intervals from the same resamples; `disagree`
    when both are fitted and their intervals do not overlap (the law's form fails across the window)."""
    out = {}
    for name, upper in (("lower", False), ("upper", True)):
        b = _power_fit(half(rows, upper))[1]
        draws = np.array([_power_fit(half(r, upper))[1] for r in boot_rows])
        out[name] = {"b": float(b), "interval": list(_interval(draws)) if np.isfinite(b) else [None, None]}
    ok = all(np.isfinite(out[h]["b"]) and out[h]["interval"][0] is not None for h in ("lower", "upper"))
    out["disagree"] = bool(ok and (out["lower"]["interval"][1] < out["upper"]["interval"][0] or
                                   out["upper"]["interval"][1] < out["lower"]["interval"][0]))
    return out


def _power_fit(rows: list[dict]) -> tuple[float, float]:
    good = [r for r in rows if r["bs_opt"] and not r["flag"]]
    if len(good) < 3 or np.ptp(np.log([r["loss"] for r in good])) < 1e-3:
        return float("nan"), float("nan")
    guess = laws.power_law_guess([r["loss"] for r in good], [r["bs_opt"] for r in good])
    return guess["a"], guess["b"]


@one_blas_thread
def batch_size_law(df: pd.DataFrame, *, n_levels: int = 8, early_frac: float = 0.1, min_steps: float = 4,
                   n_boot: int = 200, seed: int = 0, censor: bool = True, units: dict | None = None,
                   levels: str = "") -> FitResult:
    """(see _batch_size_law); every numerical failure is a NotFittable with its reason, never a traceback."""
    try:
        return _batch_size_law(df, n_levels=n_levels, early_frac=early_frac, min_steps=min_steps, n_boot=n_boot,
                               seed=seed, censor=censor, units=units, levels=levels)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
        if isinstance(err, NotFittable):
            raise
        raise NotFittable(f"the batch-size fit failed numerically ({type(err).__name__}: {err}); check that each "
                          f"run's rows are one curve (map `run` to a run id with --columns run=...)") from None


def _batch_size_law(df: pd.DataFrame, *, n_levels: int, early_frac: float, min_steps: float, n_boot: int, seed: int,
                    censor: bool, units: dict | None, levels: str = "") -> FitResult:
    """MiniCPM's batch-size law bs_opt = a / L^b from per-size batch-size sweeps (canonical columns run, N,
    bs, tokens, loss: one row per held-out eval). Per size and loss level, the tokens each run needed to
    reach the level; a parabola in log-log through them; its minimum is that level's optimal batch size.
    Then log bs_opt = log a - b log L over all sizes. Intervals: bootstrap over runs within each size (over batch
    sizes, then over the seeds of each: fit/result.py seed_resample).
    The loss window (`levels`, parse_levels): by default the levels every size measures after its warmup and
    early_frac of its tokens, the same for all sizes, so no size reads the law off its transient; 'per-size' gives
    each size its own window (MiniCPM's staggered levels), 'LO:HI' the user's. A form diagnostic fits b on the lower
    and the upper half of the levels and says when the two disagree beyond their intervals.
    Optima at the edge of the swept grid are reported and left out of the fit. Where points are censored, the
    same fit with them dropped is reported beside it (details['uncensored'] and a diagnostic)."""
    _need(df, ("run", "N", "bs", "tokens", "loss"), "batch-size")
    df, dropped = drop_overfit(df.dropna(subset=["tokens", "loss"]))  # train-only log rows carry no held-out loss
    df, stable_only = drop_decay(df)
    dropped = list(dropped) + stable_only
    mode, bounds = parse_levels(levels)  # mode: auto, common, per-size or window
    all_curves = {}  # N -> run -> (bs, tokens, loss)
    for n, size in df.groupby("N"):
        curves = {r: (g["bs"].iloc[0], g["tokens"].to_numpy(float), g["loss"].to_numpy(float))
                  for r, g in size.groupby("run")}
        if len({c[0] for c in curves.values()}) >= 3:
            all_curves[n] = curves
    windows = {n: _window(c, early_frac, min_steps) for n, c in all_curves.items()}
    window_note = []
    if mode in ("auto", "common") and windows:
        bounds = (max(lo for lo, _ in windows.values()), min(hi for _, hi in windows.values()))
        shown = "; ".join(f"N={n:.3g}: {lo:.4g}-{hi:.4g}" for n, (lo, hi) in windows.items())
        if mode == "auto" and not bounds[0] * 1.01 < bounds[1]:  # disjoint loss ranges (sizes of distinct floors)
            mode = "per-size"
            window_note = [f"the sizes' loss windows do not overlap ({shown}): each size's levels span its own window "
                           f"after its transient (staggered, as MiniCPM's); --levels LO:HI sets one by hand"]
        elif len(windows) >= 2 and not bounds[0] < bounds[1]:
            raise NotFittable(f"no loss level is measured by every size after its transient (windows {shown}); "
                              f"give each size its own window (--levels per-size, as MiniCPM staggered them) or "
                              f"one by hand (--levels LO:HI)")
    sizes = {}  # N -> (bs per run, reach matrix (runs, levels), levels, ...)
    for n, curves in all_curves.items():
        lo, hi = windows[n] if mode == "per-size" else bounds
        levels = np.geomspace(lo, hi, n_levels) if hi > lo else np.array([])
        bs = np.array([c[0] for c in curves.values()], dtype=float)
        reach = np.array([tokens_to_reach(t, l, levels) for _, t, l in curves.values()])
        budget = np.array([np.nanmax(t) for _, t, _ in curves.values()], dtype=float)
        first = np.array([_first_eval(t, l) for _, t, l in curves.values()], dtype=float).reshape(-1, 2)
        early = first[:, 1:] <= levels[None, :]  # (runs, levels): below the level at the first eval already
        sizes[n] = (bs, reach.reshape(len(bs), len(levels)), levels, budget, first[:, 0], early)
    if not sizes:
        raise NotFittable("no model size has runs at 3 or more batch sizes; the batch-size law needs a sweep of "
                          ">= 3 (MiniCPM: 6) batch sizes per size")
    if len(sizes) < 2:
        raise NotFittable(f"one model size only (N={next(iter(sizes)):.3g}): b would rest on the loss range of one sweep; "
                          f"the batch-size law needs 2 or more sizes (MiniCPM used 3)")

    def optima(pick: dict, censored: bool = censor) -> list[dict]:
        return [{"N": float(n), **o} for n, (bs, reach, levels, budget, first, early) in sizes.items()
                for o in _size_optima(bs[pick[n]], reach[pick[n]], levels, min_steps, budget[pick[n]], censored,
                                      first[pick[n]], early[pick[n]])]

    def half(rows: list[dict], upper: bool) -> list[dict]:  # the lower or upper half of the window's losses (in log)
        return [r for r in rows if (r["loss"] > middle) == upper]

    all_levels = np.concatenate([v[2] for v in sizes.values()])
    middle = float(np.sqrt(all_levels.min() * all_levels.max())) if len(all_levels) else 0.0  # the window's middle
    everyone = {n: np.arange(len(v[0])) for n, v in sizes.items()}
    rows = optima(everyone)
    a, b = _power_fit(rows)
    good = [r for r in rows if r["bs_opt"] and not r["flag"]]
    if not np.isfinite(a):
        raise NotFittable(f"only {len(good)} loss level(s) have an interior batch-size optimum (need 3 across a "
                          f"range of losses); widen the batch-size grid around the optimum or train longer")
    rng = np.random.default_rng(seed)
    picks = [{n: seed_resample(v[0], rng) for n, v in sizes.items()} for _ in range(n_boot)]
    boot_rows = [optima(pick) for pick in picks]
    draws = np.array([_power_fit(r) for r in boot_rows]).reshape(-1, 2)
    has_censored = censor and any(r.get("censored") for r in rows)
    if has_censored:  # beside it, the same fit with the censored points dropped, on the same resamples
        uncensored_draws = np.array([_power_fit(optima(pick, False)) for pick in picks]).reshape(-1, 2)
        uncensored = dict(zip(("a", "b"), _power_fit(optima(everyone, False))))
        uncensored["intervals"] = {"a": _interval(uncensored_draws[:, 0]), "b": _interval(uncensored_draws[:, 1])}
    diagnostics = list(dropped) + window_note + seed_note([f"{n}:{b}" for n, v in sizes.items() for b in v[0]], "batch size")
    evals = float(df.groupby("run").size().median())
    if evals < 5:  # the tokens to reach a level are read off each run's curve; one final point is not a curve
        diagnostics.append(f"the runs log a median of {evals:g} held-out evals each, too few to read the tokens to "
                           f"reach a loss off a curve: not identified by MiniCPM's method; for a table of final "
                           f"losses use --law batch-size-data (Step Law's bs* = c D^b)")
    for flag in sorted({r["flag"] for r in rows if r["flag"]}):
        diagnostics.append(f"{sum(1 for r in rows if r['flag'] == flag)} of {len(rows)} loss levels left out: {flag}")
    if has_censored:
        n_early = sum(r.get("censored_early", 0) for r in rows)
        n_never = sum(r.get("censored", 0) for r in rows) - n_early
        if n_never:
            diagnostics.append(f"{n_never} (run, level) points never reached, counted as needing more than their "
                               f"run's tokens (censored)")
        if n_early:
            diagnostics.append(f"{n_early} (run, level) points already below the level at the run's first eval, "
                               f"counted as needing fewer tokens than that eval (censored)")
        lo, hi = uncensored["intervals"]["b"]
        diagnostics.append(f"dropping the censored points instead (each read as a missing point) "
                           f"gives b = {uncensored['b']:.3g} [{lo:.3g}, {hi:.3g}]"
                           if np.isfinite(uncensored["b"]) and lo is not None else
                           "dropping the censored points instead leaves too few loss levels to fit")
    form = _form_check(rows, boot_rows, half)
    if form.get("disagree"):
        lo_half, hi_half = form["lower"], form["upper"]
        diagnostics.append(f"b depends on the loss window: b = {lo_half['b']:.3g} [{lo_half['interval'][0]:.3g}, "
                           f"{lo_half['interval'][1]:.3g}] on the lower half of the levels and {hi_half['b']:.3g} "
                           f"[{hi_half['interval'][0]:.3g}, {hi_half['interval'][1]:.3g}] on the upper half, beyond "
                           f"their intervals: bs = a / L^b does not hold across this window; quote b with its window "
                           f"(--levels LO:HI)")
    b_low, b_high = _interval(draws[:, 1])
    if b_low is not None and b_low <= 0 <= b_high:
        diagnostics.append(f"b's interval [{b_low:.3g}, {b_high:.3g}] includes 0: these runs show no clear change of "
                           f"the optimal batch with loss (train longer, or sweep sizes whose losses differ more)")
    loo = leave_one_out(len(good), lambda keep: dict(zip(("a", "b"), _power_fit([r for r, k in zip(good, keep) if k]))),
                        {"a": a, "b": b}, [f"N={r['N']:.3g} L={r['loss']:.4g}" for r in good])
    diagnostics += loo_warnings(loo, {"b": b})
    diagnostics += transition_notes({(n, r): c[1:] for n, curves in all_curves.items() for r, c in curves.items()},
                                    (float(all_levels.min()), float(all_levels.max())), early_frac)
    return FitResult(law="batch_size", form="power_law", params={"a": a, "b": b},
                     intervals={"a": _interval(draws[:, 0]), "b": _interval(draws[:, 1])},
                     units={"x": "loss (as logged, nats/token)", "y": "batch size in tokens", **(units or {})},
                     n_points=len(good), diagnostics=diagnostics,
                     details={"optima": rows, "sizes": [float(n) for n in sizes], "leave_one_out": loo,
                              "window": {"mode": mode, **({"levels": [float(x) for x in bounds]} if mode != "per-size"
                                                          else {"per_size": {str(n): [float(w) for w in windows[n]]
                                                                             for n in sizes}})},
                              "halves": form,
                              **({"uncensored": uncensored} if has_censored else {})},
                     samples=[{"a": x, "b": y} for x, y in draws if np.isfinite(x)])


