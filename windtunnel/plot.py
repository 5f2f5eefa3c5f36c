"""The wind tunnel's figures, as MiniCPM's paper shows them. The only matplotlib importer.

Every function takes a table of runs or points (windtunnel's own columns: `windtunnel runs --points` /
`SweepTables`) or a FitResult, and returns a matplotlib Figure built without pyplot (no display, no global
state: safe in tests, sweeps and notebooks; `fig.savefig(path)` writes it).
"""
import math
import re

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from . import laws
from .fit import FitResult, log_grid

PARAM_TITLES = {"mup": "muP", "sp": "SP", "any": "all runs"}


def _figure(n_panels: int, width: float = 5.0, height: float = 4.0):
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    return fig, [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]


def _plain_log_ticks(axis, low: float, high: float) -> None:
    """A log axis spanning under 1.5 decades: matplotlib labels its minor ticks as 4.25x10^0, 5.25x10^0 ... and they
    collide; a few plain numbers instead (5 of them at most, at round values)."""
    if not (0 < low < high) or math.log10(high / low) >= 1.5:
        return
    ticks = [t for t in MaxNLocator(5).tick_values(low, high) if low <= t <= high and t > 0]
    axis.set_ticks(ticks)
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _labels(runs) -> dict:
    """run -> its label: the run dir's name without its sweep path (the overrides that make it differ), less
    the overrides every run shares (optim.lr=0.004 on each of 12 runs says nothing and pushes what differs past
    the label's 48 characters). Overrides are split at the commas before a key=."""
    names = {run: str(run).rstrip("/").split("/")[-1] for run in runs}
    parts = {run: re.split(r",(?=[\w.+~]+=)", name) for run, name in names.items()}
    shared = set.intersection(*(set(p) for p in parts.values())) if len(parts) > 1 else set()
    kept = {run: [x for x in p if x not in shared] for run, p in parts.items()}
    # keys without their section where that stays unambiguous (train.batch_size_tokens -> batch_size_tokens): a
    # width, a batch and a seed fit in the 48 characters
    keys = {x.split("=")[0] for p in kept.values() for x in p if "=" in x}
    short = {k: k.split(".")[-1] for k in keys}
    if len(set(short.values())) < len(keys):
        short = {k: k for k in keys}
    def shorten(x):
        key, eq, value = x.partition("=")
        return short.get(key, key) + eq + value
    full = {run: [shorten(x) for x in kept[run]] for run in parts}
    labels = {run: _fit_label(p, LABEL_MAX) if p else names[run][:LABEL_MAX] for run, p in full.items()}
    if len(set(labels.values())) < len(labels):  # what was left out told two runs apart: long beats ambiguous
        labels = {run: ",".join(p) or names[run] for run, p in full.items()}
    return labels


LABEL_MAX = 48  # characters: the legend beside a 9-inch figure at font size 6


def _fit_label(parts: list, limit: int) -> str:
    """The overrides joined; if that is too long, the first ones that fit, "…", and the last one: Hydra sorts
    overrides, so train.seed comes last, and a cut at the end would lose what tells one point's seeds apart."""
    joined = ",".join(parts)
    if len(joined) <= limit or len(parts) < 3:
        return joined[:limit]
    for keep in range(len(parts) - 2, 0, -1):
        label = ",".join(parts[:keep] + ["…", parts[-1]])
        if len(label) <= limit:
            return label
    return joined[:limit]


def _natural(text: str) -> list:
    """A sort key that orders the numbers inside a label as numbers (bs=4096 before bs=131072, 2e-3 before 1e-2)."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text)
    return [(0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts)]


def loss_curves(points: pd.DataFrame, runs=None, title: str = "loss curves") -> Figure:
    """Held-out loss (markers) and training loss (faint line) against tokens, one colour per run; over 20 runs of
    several model sizes, one panel per size (colours repeat past 20 and a legend of 29 says nothing).
    points: `windtunnel runs --points` rows (run_dir, tokens, eval_loss, train_loss; N where known); runs: run_dirs."""
    pts = points[points["tokens"] > 0]
    if runs is not None:
        pts = pts[pts["run_dir"].isin(set(runs))]
    sizes = sorted(pts["N"].dropna().unique()) if "N" in pts else []
    if pts["run_dir"].nunique() <= 20 or len(sizes) < 2:
        fig, (ax,) = _figure(1, 9, 4.5)
        _curves_panel(ax, pts, title)
        return fig
    fig, axes = _figure(len(sizes), 5.5, 4.5)
    for ax, n in zip(axes, sizes):
        _curves_panel(ax, pts[pts["N"] == n], f"{title}: N = {n:.3g} non-embedding params", legend_inside=True)
    for ax in axes[1:]:
        ax.sharey(axes[0])
    return fig


def _curves_panel(ax, pts: pd.DataFrame, title: str, legend_inside: bool = False) -> None:
    n_runs = pts["run_dir"].nunique()
    palette = colormaps["tab20" if n_runs > 10 else "tab10"]
    labels = _labels(pts["run_dir"].unique())
    order = sorted(pts["run_dir"].unique(), key=lambda run: _natural(labels[run]))  # 4096 before 131072
    groups = dict(list(pts.groupby("run_dir")))
    for k, (run, g) in enumerate((run, groups[run]) for run in order):
        g = g.sort_values("tokens")
        colour = palette(k % palette.N)  # distinct up to 20 runs
        if "train_loss" in g and g["train_loss"].notna().any():
            tr = g.dropna(subset=["train_loss"])
            ax.plot(tr["tokens"], tr["train_loss"], color=colour, alpha=0.3, lw=1)
        ev = g.dropna(subset=["eval_loss"])
        spiked = "unstable" in g and bool(g["unstable"].iloc[0] == 1)  # runs.curve.instability, True or 1
        ax.plot(ev["tokens"], ev["eval_loss"], "o--" if spiked else "o-", color=colour, ms=3, lw=1.2, label=labels[run])
    if "unstable" in pts and any(v == 1 for v in pts["unstable"]):
        title += " (dashed: a run flagged unstable, a loss spike)"
    ax.set(xscale="log", xlabel="tokens", ylabel="loss (nats/token): held-out o, train faint", title=title)
    if ax.get_legend_handles_labels()[0] and len(ax.lines) <= 40:
        if legend_inside:  # panels side by side: the legend in the corner the curves leave empty
            ax.legend(fontsize=6, loc="lower left")
        else:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, not over the curves


def batch_size_curves(fit: FitResult) -> Figure:
    """MiniCPM Fig. 4: per model size, tokens to reach each loss level (y, log) against batch size (x, log),
    one colour per level; the iso-loss parabola of each level and the minima joined (black). Censored runs are
    open triangles: up at the budget (the level not reached), down at the first eval (already below it there)."""
    rows = fit.details["optima"]
    sizes = sorted({r["N"] for r in rows})
    fig, axes = _figure(len(sizes), 4.5, 4)
    cmap = colormaps["viridis"]
    for ax, n in zip(axes, sizes):
        mine = sorted((r for r in rows if r["N"] == n and r.get("bs")), key=lambda r: r["loss"])
        levels = [r["loss"] for r in mine]
        star_x, star_y = [], []
        for r in mine:
            colour = cmap((r["loss"] - min(levels)) / max(np.ptp(levels), 1e-9))
            ax.plot(r["bs"], r["reach"], "o", color=colour, ms=4, label=f"L = {r['loss']:.3g} nats")
            upper_bound = r.get("censored_upper") or [False] * len(r.get("censored_bs", []))
            for upper, marker in ((False, "^"), (True, "v")):  # never reached: need > budget; passed by the first eval
                pick = [k for k, u in enumerate(upper_bound) if u == upper]
                if pick:
                    ax.plot([r["censored_bs"][k] for k in pick], [r["censored_at"][k] for k in pick], marker,
                            mfc="none", color=colour, ms=5)
            xs = np.log(r["bs"] + r.get("censored_bs", []))
            grid = np.linspace(xs.min(), xs.max(), 50)
            ax.plot(np.exp(grid), np.exp(np.polyval(r["coef"], grid)), "-", color=colour, lw=1)
            if r.get("bs_opt") and not r.get("flag"):
                star_x.append(r["bs_opt"])
                star_y.append(math.exp(np.polyval(r["coef"], math.log(r["bs_opt"]))))
        ax.plot(star_x, star_y, "k*-", ms=9, lw=1, label="optimum per level")
        ax.set(xscale="log", yscale="log", xlabel="batch size (tokens)", ylabel="tokens to reach the level",
               title=f"N = {n:.3g} non-embedding params")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=6, ncol=2)
    return fig


def batch_size_law(fit: FitResult, reference: bool = True) -> Figure:
    """MiniCPM Fig. 5: the optimal batch size against the loss level (log-log), the fitted bs = a / L^b with
    its bootstrap band, and MiniCPM's 1.21e9 / L^6.24 (another corpus and tokenizer: compare slopes)."""
    rows = [r for r in fit.details["optima"] if r.get("bs_opt") and not r.get("flag")]
    fig, (ax,) = _figure(1, 6, 5.5)
    for k, n in enumerate(sorted({r["N"] for r in rows})):
        mine = [r for r in rows if r["N"] == n]
        ax.plot([r["loss"] for r in mine], [r["bs_opt"] for r in mine], "o", color=f"C{k}",
                label=f"N = {n:.3g} params")
    loss = np.geomspace(min(r["loss"] for r in rows) * 0.97, max(r["loss"] for r in rows) * 1.03, 60)
    a, b = fit.params["a"], fit.params["b"]
    lo_b, hi_b = fit.intervals.get("b") or (None, None)
    ax.plot(loss, laws.power_law(loss, a, b), "k-", label=f"fit: {a:.3g} / L^{b:.3g}" +
            (f" (b in [{lo_b:.3g}, {hi_b:.3g}])" if lo_b is not None else ""))
    if fit.samples:
        curves = np.array([laws.power_law(loss, s["a"], s["b"]) for s in fit.samples])
        ax.fill_between(loss, *np.percentile(curves, [2.5, 97.5], axis=0), color="k", alpha=0.15, lw=0,
                        label="95% bootstrap band")
    if reference:
        ref = laws.REFERENCE["minicpm-batch-size"].params
        theirs, ours = laws.power_law(loss, ref["a"], ref["b"]), laws.power_law(loss, a, b)
        if theirs.max() < 10 * ours.max() and theirs.min() > ours.min() / 10:  # in the figure's range: as it is
            ax.plot(loss, theirs, "--", color="C3", label=f"MiniCPM: {ref['a']:.3g} / L^{ref['b']} (C4, their tokenizer)")
        else:  # decades away (another corpus and tokenizer): its slope through the fit, so the data stay readable
            mid = math.exp(np.log(loss).mean())
            at = laws.power_law(mid, a, b)
            decades = math.log10(laws.power_law(mid, ref["a"], ref["b"]) / at)
            ax.plot(loss, at * (mid / loss) ** ref["b"], "--", color="C3",
                    label=f"MiniCPM's slope b = {ref['b']} through the fit at L = {mid:.3g} (their law "
                          f"{ref['a']:.3g} / L^{ref['b']} is {abs(decades):.1f} decades {'above' if decades > 0 else 'below'})")
    ax.set(xscale="log", yscale="log", xlabel="loss level L (nats/token)", ylabel="optimal batch size (tokens)",
           title="optimal batch size vs loss")
    _plain_log_ticks(ax.xaxis, loss.min(), loss.max())
    shown = [r["bs_opt"] for r in rows]
    if max(shown) / min(shown) < 30:  # (a wider y range keeps matplotlib's decade labels)
        _plain_log_ticks(ax.yaxis, *ax.get_ylim())
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))  # below the axes: never over the points
    return fig


def lr_curves(per_run: pd.DataFrame, fit: FitResult = None) -> Figure:
    """The muTransfer picture: final held-out loss against LR, one curve per width (mean over seeds), muP beside
    SP; each width's fitted optimum marked (star at lr*, on the parabola's level). Where the token budget D
    varies (decay branches, Step Law's grids), one curve per (width, D), as the fit has one cell each.
    per_run: canonical columns (lr, loss, width or N, param; D optional)."""
    df = per_run[np.isfinite(per_run["loss"])].copy()
    df["param"] = df["param"] if "param" in df else "any"
    size = "width" if "width" in df and df["width"].notna().all() else "N"
    df["lr"] = log_grid(df["lr"])  # the fit's grouping: LRs and token budgets on its log grid
    by_d = "D" in df and df["D"].nunique() > 1
    if by_d:
        df["D"] = log_grid(df["D"])
    params = sorted(df["param"].unique(), key=lambda p: {"mup": 0, "sp": 1}.get(p, 2))
    fig, axes = _figure(len(params), 5, 4)
    optima = (fit.details.get("optima") or []) if fit is not None else []
    for ax, param in zip(axes, params):
        for k, (key, g) in enumerate(df[df["param"] == param].groupby([size, "D"] if by_d else [size])):
            s, d = key if by_d else (key[0], None)
            mean = g.groupby("lr")["loss"].mean()
            ax.plot(mean.index, mean.to_numpy(), "o-", color=f"C{k % 10}", ms=3,
                    label=f"{size} {s:.4g}" + (f", D {d:.3g}" if by_d else ""))
            cell = [c for c in optima if c["param"] == param and math.isclose(
                c["width"] if size == "width" else c["N"], float(s), rel_tol=1e-6)
                and (not by_d or c.get("D") == float(d))]
            if cell:
                c = cell[0]
                ax.plot([c["lr_star"]], [c["best_loss"]], "*", color=f"C{k % 10}", ms=14, mec="k",
                        label=f"lr* {c['lr_star']:.3g}" + (" (edge)" if c["edge"] else ""))
        ax.set(xscale="log", xlabel="learning rate", ylabel="final held-out loss (nats/token)",
               title=PARAM_TITLES.get(param, param))
        ax.xaxis.set_minor_formatter(NullFormatter())  # a grid of powers of 2 spans < 2 decades: labels collide
        grid = np.sort(df.loc[df["param"] == param, "lr"].unique())
        if len(grid) <= 12:  # label the grid's own LRs (a fine grid may hold no power of 10 at all)
            ax.set_xticks(grid, [f"{x:.2g}" for x in grid], rotation=45, fontsize=7)
        ax.legend(fontsize=6, ncol=2)
    return fig


def wsd_curves(points: pd.DataFrame, fit: FitResult = None) -> Figure:
    """WSD runs and their decay branches: held-out loss against tokens (left), each branch's end marked, with
    the fitted L(N, D) along D for each size (dashed); the LR schedules (right). points: `windtunnel runs
    --points` rows (run_dir, tokens, eval_loss, lr, N)."""
    fig, (ax, ax_lr) = _figure(2, 5.5, 4)
    pts = points[points["tokens"] > 0]
    sizes = sorted(pts["N"].dropna().unique()) if "N" in pts else [None]
    colour = {n: f"C{k}" for k, n in enumerate(sizes)}
    # one size and several schedules (WSD against cosine): a colour and a legend entry per run instead of per size
    per_run = len(sizes) <= 1 and pts["run_dir"].nunique() > 1
    labels = _labels(pts["run_dir"].unique())
    order = sorted(pts["run_dir"].unique(), key=lambda run: _natural(labels[run]))  # 4096 before 131072
    groups = dict(list(pts.groupby("run_dir")))
    for k, (run, g) in enumerate((run, groups[run]) for run in order):
        g = g.sort_values("tokens")
        n = g["N"].iloc[0] if "N" in g else None
        c = f"C{k % 10}" if per_run else colour.get(n, "C0")
        ev = g.dropna(subset=["eval_loss"])
        branch = "/branch" in str(run) or "decay" in str(run)
        ax.plot(ev["tokens"], ev["eval_loss"], "-", color=c, lw=0.8 if branch else 1.5, alpha=0.9,
                label=labels[run] if per_run else None)
        if branch and len(ev):
            ax.plot(ev["tokens"].iloc[-1], ev["eval_loss"].iloc[-1], "o", color=c, ms=4)
        if "lr" in g and g["lr"].notna().any():
            ax_lr.plot(g["tokens"], g["lr"], color=c, lw=0.8)
    if per_run:
        ax.legend(fontsize=7)
    if fit is not None and fit.law == "loss":
        d = np.geomspace(pts["tokens"].min(), pts["tokens"].max(), 60)
        scale = 1e9 if fit.form == "minicpm_loss" else 1.0  # MiniCPM's form takes N and D in billions
        for n in sizes:
            if n is not None:
                loss = laws.FORMS[fit.form][0](np.full_like(d, n) / scale, d / scale, **fit.params)
                ax.plot(d, loss, "--", color=colour[n], label=f"fit N = {n:.3g}")
        ax.legend(fontsize=7)
    ax.set(xscale="log", xlabel="tokens", ylabel="held-out loss (nats/token)", title="WSD runs, branch ends o")
    if per_run:  # schedules differ only late (where their LRs part): linear tokens, y zoomed on the second half
        late = pts.dropna(subset=["eval_loss"])
        late = late[late["tokens"] >= late["tokens"].max() / 2]["eval_loss"]
        pad = 0.05 * (late.max() - late.min()) + 1e-9
        ax.set(xscale="linear", ylim=(late.min() - pad, late.max() + pad),
               title="schedules at equal tokens (second half)")
    ax_lr.set(xlabel="tokens", ylabel="learning rate", title="LR schedules")
    return fig


def coord_check(df: pd.DataFrame) -> Figure:
    """The coordinate check (microsoft/mup's plot): mean |activation| of each module against width after a few
    steps, muP beside SP. df: windtunnel.train.coord_check's rows (parametrization, width, module, step,
    mean_abs); flat lines across width pass, lines that grow with width fail."""
    params = sorted(df["parametrization"].unique(), key=lambda p: {"mup": 0, "sp": 1}.get(p, 2))
    fig, axes = _figure(len(params), 4.5, 4)
    last = df["step"].max()
    for ax, param in zip(axes, params):
        sub = df[(df["parametrization"] == param) & (df["step"] == last)]
        for k, (module, g) in enumerate(sub.groupby("module", sort=False)):
            mean = g.groupby("width")["mean_abs"].mean()
            ax.plot(mean.index, mean.to_numpy(), "o-", color=f"C{k % 10}", ms=3, label=module)
        ax.set(xscale="log", yscale="log", xlabel="width (d_model)", ylabel=f"mean |activation| after step {last}",
               title=PARAM_TITLES.get(param, param))
        ax.legend(fontsize=6)
    return fig
