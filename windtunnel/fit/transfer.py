"""The muTransfer verdict: does the LR optimum stay put across widths?

Per parametrization, the drift is the least-squares slope of log2 lr* on log2 width (log2 N when no width is
known) times the swept span: how many octaves the optimum moves from the narrowest to the widest model. Its 95%
interval comes from the per-cell bootstrap over seeds (lr.py draws them), so it holds seed noise. A cell's optimum
is also known only to about half a grid step (a parabola through points a step apart; LR curves rise more steeply
above the optimum than below), whatever the seeds say: that resolution widens the interval on both sides before
the interval is compared with the tolerance. So
  - "optimum transfers across width": the widened interval lies within +-TOLERANCE_OCTAVES;
  - "optimum moves with width": it lies entirely outside (SP's drift, the negative control, must land here);
  - "inconclusive": it straddles the tolerance (a coarse grid, one seed, or a small drift): more seeds, a finer
    grid, or a wider span of widths decide it.
A 2x grid (half-step resolution 0.5 octaves) can therefore pass nothing: sweeps/prediction_check/lr's SP drift of
0.67 steps read as "transfers" under the earlier rule (at most one grid step, no seeds, no resolution).
Beside the verdict, what a user pays: the transfer regret, the widest model's loss at the narrowest one's best grid
LR minus its own best (mean over seeds), with a seed-bootstrap interval, on the grid itself (no parabola).
"""
import numpy as np
import pandas as pd

# A drift of half an octave (a factor 1.41 in LR) across the swept widths: near an optimum it costs little loss,
# and it is the resolution of the half-octave grids the sweeps use (sweeps/lr_transfer_8l: 2^(1/2) steps)
TOLERANCE_OCTAVES = 0.5
TRANSFERS, MOVES, INCONCLUSIVE = "optimum transfers across width", "optimum moves with width", "inconclusive"


def drift_octaves(sizes: np.ndarray, lr_star: np.ndarray) -> float:
    """Octaves the optimum moves across the span of sizes: the slope of log2 lr* on log2 size, times the span."""
    x, y = np.log2(sizes), np.log2(lr_star)
    slope = np.polyfit(x, y, 1)[0]
    return float(slope * (x.max() - x.min()))


def transfer_regret(narrow: tuple, wide: tuple, rng, n_boot: int = 200) -> dict:
    """The widest model's loss at the narrowest one's best grid LR minus its own best. Each curve: (lr (n,) sorted,
    per-LR lists of seed losses). The LR is the narrow curve's best grid point, matched on the wide grid to 2%;
    the interval resamples the seeds of every LR of both curves (percentile bootstrap)."""
    (lr_n, seeds_n), (lr_w, seeds_w) = narrow, wide

    def regret(loss_n, loss_w) -> tuple[float, float]:  # (the narrow curve's best LR, the wide curve's regret there)
        best = lr_n[int(np.argmin(loss_n))]
        at = np.flatnonzero(np.isclose(lr_w, best, rtol=0.02))
        return float(best), float(loss_w[at[0]] - loss_w.min()) if len(at) else float("nan")
    lr, value = regret([np.mean(s) for s in seeds_n], np.array([np.mean(s) for s in seeds_w]))
    out = {"lr": lr, "value": value, "interval": [value, value]}
    if max(len(s) for s in seeds_n + seeds_w) > 1 and np.isfinite(value):
        pick = lambda seeds: np.array([np.mean(rng.choice(s, len(s))) for s in seeds])  # noqa: E731
        boot = [regret(pick(seeds_n), pick(seeds_w))[1] for _ in range(n_boot)]
        out["interval"] = [float(v) for v in np.nanpercentile(boot, [2.5, 97.5])]
    return out


def transfer_verdicts(cells: list[dict], draws: list[list[float]], curves: list | None = None, rng=None,
                      tolerance: float = TOLERANCE_OCTAVES) -> dict:
    """Per parametrization (cells as lr.py builds them; draws[i]: cell i's bootstrap optima over seeds, empty with
    one seed per LR; curves[i]: (lr grid, per-LR seed losses) for the transfer regret): the drift in octaves with its
    seed interval, the grid's resolution, the verdict and the regret. Cells of the most common token budget only,
    so the drift is across width alone."""
    verdicts = {}
    for param in sorted({c["param"] for c in cells}):
        idx = [i for i, c in enumerate(cells) if c["param"] == param]
        if "D" in cells[idx[0]]:
            common = pd.Series([cells[i]["D"] for i in idx]).mode()[0]
            idx = [i for i in idx if cells[i]["D"] == common]
        idx.sort(key=lambda i: cells[i]["N"])
        mine = [cells[i] for i in idx]
        logs = np.log([c["lr_star"] for c in mine])
        step = max(c["grid_step"] for c in mine)
        shift = (logs - logs[0]) / np.log(mine[0]["grid_step"])
        verdict = {"sizes": [c["N"] for c in mine], "shift_in_grid_steps": shift.tolist(), "moves": False,
                   "verdict": "one size only"}
        if len(mine) > 1:
            sizes = np.array([c["width"] if c.get("width") else c["N"] for c in mine], float)
            drift = drift_octaves(sizes, np.exp(logs))
            n = max((len(draws[i]) for i in idx), default=0)
            if n:  # one bootstrap draw per cell per replicate; a one-seed cell keeps its point estimate
                table = np.array([draws[i] if len(draws[i]) == n else [c["lr_star"]] * n for i, c in zip(idx, mine)])
                boot = np.array([drift_octaves(sizes, table[:, b]) for b in range(n)])
                low, high = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
                low, high = min(low, drift), max(high, drift)
            else:
                low = high = drift
            resolution = 0.5 * float(np.log2(step))  # half a grid step, in octaves
            wide = (low - resolution, high + resolution)
            outcome = (TRANSFERS if -tolerance <= wide[0] and wide[1] <= tolerance
                       else MOVES if wide[0] > tolerance or wide[1] < -tolerance else INCONCLUSIVE)
            verdict.update(drift_octaves=drift, drift_interval=[low, high], resolution_octaves=resolution,
                           tolerance_octaves=tolerance, seeds_resampled=bool(n), moves=outcome == MOVES,
                           span=[float(sizes.min()), float(sizes.max())], verdict=outcome)
            if curves is not None:
                verdict["regret"] = transfer_regret(curves[idx[0]], curves[idx[-1]], rng or np.random.default_rng(0))
        verdicts[param] = verdict
    return verdicts


def verdict_line(param: str, v: dict) -> str:
    """One line of the CLI's table: the verdict, the drift with its interval, and what the tolerance holds."""
    if "drift_octaves" not in v:
        return f"{param}: {v['verdict']}"
    low, high = v["drift_interval"]
    noise = f"seed interval [{low:+.2f}, {high:+.2f}]" if v["seeds_resampled"] else "one seed: no seed interval"
    return (f"{param}: {v['verdict']}: the optimum drifts {v['drift_octaves']:+.2f} octaves from size "
            f"{v['span'][0]:.4g} to {v['span'][1]:.4g} ({noise}, +-{v['resolution_octaves']:.2f} for the grid's "
            f"resolution; tolerance +-{v['tolerance_octaves']:.2f})" + (
                f"; size {v['span'][1]:.4g} at size {v['span'][0]:.4g}'s best grid LR {v['regret']['lr']:.3g}: "
                f"{v['regret']['value']:+.3f} nats [{v['regret']['interval'][0]:+.3f}, {v['regret']['interval'][1]:+.3f}] "
                f"from its best" if "regret" in v else ""))
