"""Fit the wind-tunnel laws from logged runs: optimal batch size vs loss (MiniCPM) or vs tokens (Step Law), the
LR optimum per cell and its law, L(N, D) (Approach 3), isoFLOP optima (Approach 2) and the critical batch.

Inputs are pandas tables with canonical columns (see `canonical`): windtunnel's own `load_runs` /
`load_results` tables, or anyone's CSV/Parquet of runs through a column mapping. Every fit returns a
FitResult that serialises to JSON with each parameter's value and bootstrap interval, its units and
diagnostics. Data that cannot identify a law raises NotFittable with the reason; it never returns a
confident number. The only scipy importer.

The package is callable: `from windtunnel import fit, load_runs; fits, not_fittable = fit(load_runs("sweeps/batch_size"))`
fits every law (or the ones named) over a run table (fit_laws).
"""
from .batch import batch_size_law, tokens_to_reach
from .loss import LOSS_FORMS, loss_law
from .critical import critical_batch_law
from .isoflop import isoflop_law
from .lr import batch_size_data_law, coarse_grid_warnings, log_grid, lr_optimum
from .result import WINDTUNNEL_COLUMNS, FitResult, NotFittable, canonical, drop_decay, quality, unidentified
from .transition import transition_notes
from ..config import callable_module
from ..laws import LAW_NAMES


def fit_laws(tables, laws=None, *, form: str = "chinchilla", n_boot: int = 200, levels: str = "",
             lr_estimator: str = "parabola", critical_error: str = "log", profile: str = "full") -> tuple[dict, dict]:
    """Every law in `laws` (names as FitResult.law or as the CLI's; None = all) over a run table (tables.load_runs:
    its .points, one row per held-out eval, and .per_run, one row per finished run): (law -> FitResult,
    law -> why it is not fittable). Each result's diagnostics include the table's notes and quality warnings.
    `levels`: the batch-size law's loss window (fit/batch.py parse_levels: "", "per-size" or "LO:HI");
    `lr_estimator`: "parabola" or "band" (fit/lr.py); `critical_error`: "log" or "linear" (fit/critical.py);
    `profile`: the isoFLOP profile's optimum, "full", "local" or "akima" (fit/isoflop.py)."""
    names = list(LAW_NAMES.values()) if laws is None or laws == "all" else [laws] if isinstance(laws, str) else laws
    results, errors = {}, {}
    for law in (LAW_NAMES.get(n, n.replace("-", "_")) for n in names):
        try:
            pooled(tables, law)
            mixed(tables, law)
            if law == "batch_size":
                res = batch_size_law(tables.points, n_boot=n_boot, units=tables.units, levels=levels)
            elif law == "isoflop":
                res = isoflop_law(tables.per_run, n_boot=n_boot, units=tables.units, profile=profile)
            elif law == "critical_batch":
                res = critical_batch_law(tables.points, n_boot=n_boot, units=tables.units, error=critical_error)
            elif law == "batch_size_data":
                res = batch_size_data_law(tables.per_run, n_boot=n_boot, units=tables.units)
            elif law == "lr":
                res = lr_optimum(tables.per_run, n_boot=n_boot, units=tables.units, estimator=lr_estimator)
            elif law == "loss":
                res = loss_law(tables.per_run, form=form, n_boot=n_boot, units=tables.units)
                res.diagnostics += transition_notes(stable_curves(tables), (float(tables.per_run["loss"].min()),
                                                                            float(tables.per_run["loss"].max())),
                                                    law="loss")
            else:
                raise ValueError(f"unknown law {law!r}; use one of {', '.join(LAW_NAMES)}")
        except NotFittable as err:
            errors[law] = str(err)
            continue
        res.diagnostics += list(getattr(tables, "notes", [])) + quality(res)
        if law == "lr" and getattr(tables, "proxy_shape", None):  # predict compares the target's with these
            res.details["proxy_shape"] = tables.proxy_shape
        results[law] = res
    return results, errors


def stable_curves(tables) -> dict:
    """run -> (tokens, held-out loss) of each stable run, its decays left out: a WSD branch holds its stable run's
    curve up to the branch, so the longest branch of a stable run stands for it (tables.runs' branch_of); a run
    without branches as it is. Empty for a table without curves (a foreign file of final losses)."""
    points, runs = tables.points, getattr(tables, "runs", None)
    if points is None or not {"run", "tokens", "loss"} <= set(points.columns):
        return {}
    points, _ = drop_decay(points.dropna(subset=["tokens", "loss"]))
    parent = {}
    if runs is not None and {"run_dir", "branch_of"} <= set(runs.columns):
        parent = {r: r.rsplit("/", 1)[0] if b == b else r for r, b in zip(runs["run_dir"], runs["branch_of"])}
    curves = {}
    for run, g in points.groupby("run"):
        key = parent.get(run, run)
        if key not in curves or g["tokens"].max() > curves[key][0].max():
            curves[key] = (g["tokens"].to_numpy(float), g["loss"].to_numpy(float))
    return curves


POOL_KEYS = {"isoflop": ("C", "N"), "lr": ("param", "N", "D", "lr", "bs"), "batch_size_data": ("N", "D", "bs", "lr"),
             "loss": ("N", "D")}


# the batch-size laws read each (N, batch) as one configuration (its runs as seeds): runs there that differ in these
# columns are different experiments (two LRs give two laws: sweeps/batch_size_8l)
MIXED_KEYS = {"batch_size": (("N", "bs"), ("lr", "param")), "critical_batch": (("N", "bs"), ("lr", "param"))}


def mixed(tables, law: str) -> None:
    """A refusal where one point of a batch-size law pools runs of several LRs (or parametrizations), naming the
    column (as the user's table names it), its values and the filter that fits one of them."""
    per_run, recorded = tables.per_run, getattr(tables, "runs", None)  # recorded: the run table as written
    if law not in MIXED_KEYS or per_run is None or per_run.empty:
        return
    keys, columns = MIXED_KEYS[law]
    if not all(k in per_run for k in keys):
        return
    for column in (c for c in columns if c in per_run):
        counts = per_run.groupby(list(keys), dropna=False)[column].nunique()
        if (counts > 1).any():
            values = sorted(per_run[column].dropna().unique(), key=str)
            shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values[:4])
            first = f"{values[0]:.6g}" if isinstance(values[0], float) else repr(values[0])
            name = WINDTUNNEL_COLUMNS.get(column, column)  # a windtunnel run table's own name (optim.lr), else lr
            name = f"`{name}`" if recorded is not None and name in recorded else column
            raise NotFittable(f"{int((counts > 1).sum())} (N, batch) point(s) pool runs of different {column} values "
                              f"({shown}{' ...' if len(values) > 4 else ''}): each is its own batch-size law; fit one "
                              f"at a time, e.g. --where \"{name} == {first}\"")


def pooled(tables, law: str) -> None:
    """A refusal where one point of the law (an isoFLOP (C, N), an LR cell's LR, a loss law's (N, D)) pools rows
    that a foreign file's label columns (dataset, hparams, ...) call different configurations, naming the columns
    and a filter, as two corpora are refused."""
    labels = getattr(tables, "labels", None)
    if labels is None or labels.empty or law not in POOL_KEYS:
        return
    keys = [k for k in POOL_KEYS[law] if k in tables.per_run]
    rows = tables.per_run[keys].join(labels)
    varying = [c for c in labels.columns if (rows.groupby(keys, dropna=False)[c].nunique() > 1).any()]
    if varying:
        groups = rows.groupby(keys, dropna=False)
        n = int((groups[varying[0]].nunique() > 1).sum())
        example = str(sorted(map(str, labels[varying[0]].dropna().unique()))[:3])
        first = sorted(labels[varying[0]].dropna().unique(), key=str)[0]
        raise NotFittable(f"{n} point(s) at one ({', '.join(keys)}) pool rows of different configurations: the "
                          f"column(s) {', '.join(varying)} differ within them ({varying[0]}: {example}); fit one "
                          f"configuration at a time, e.g. --where \"{varying[0]} == {first!r}\"")


__all__ = ["fit_laws", "FitResult", "LOSS_FORMS", "NotFittable", "WINDTUNNEL_COLUMNS", "batch_size_data_law", "batch_size_law",
           "canonical", "coarse_grid_warnings", "critical_batch_law", "isoflop_law", "log_grid", "quality",
           "loss_law", "lr_optimum", "tokens_to_reach", "unidentified"]

callable_module(__name__, fit_laws)
