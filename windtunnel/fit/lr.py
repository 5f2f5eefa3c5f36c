"""The LR optimum per size and parametrization, and the muTransfer verdict."""
import numpy as np
import pandas as pd

from .. import laws
from .result import FitResult, NotFittable, _interval, _need


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


