"""`windtunnel runs`: the run table of a run directory tree or a committed record, one row per configuration (seeds
aggregated), per run (--by-seed) or per logged point (--points); --where selects, --versus adds each configuration's
paired-seed difference from a reference, --export writes a record."""
import json
import sys
from pathlib import Path

from ..config import ConfigError

RESULT_COLUMNS = ["sweep", "name", "status", "model.name", "model.parametrization", "N", "optim.lr",
                  "train.batch_size_tokens", "train.seed", "tokens", "epochs", "overfit", "unstable", "final_eval_loss",
                  "best_eval_loss", "final_eval_bpb", "tokens_per_s", "overrides", "run_dir"]
CONFIG_COLUMNS = ["sweep", "name", "status", "model.name", "model.parametrization", "N", "optim.lr",
                  "train.batch_size_tokens", "tokens", "n", "seeds", "unstable", "loss_mean", "loss_std", "vs_n", "vs_mean",
                  "vs_low", "vs_high", "verdict", "overrides"]
POINT_COLUMNS = ["status", "model.parametrization", "N", "optim.lr", "train.batch_size_tokens", "train.seed", "step",
                 "tokens", "lr", "train_loss", "eval_loss", "eval_se", "overrides"]
SORT_COLUMNS = ["sweep", "model.parametrization", "N", "train.batch_size_tokens", "optim.lr", "train.seed"]
# the default table's short headers (--wide: every column under its full name)
SHORT = {"model.name": "model", "model.parametrization": "param", "optim.lr": "lr", "train.batch_size_tokens": "batch",
         "train.seed": "seed", "final_eval_loss": "loss", "best_eval_loss": "best", "final_eval_bpb": "bpb",
         "tokens_per_s": "tok/s", "loss_mean": "loss", "loss_std": "std", "vs_mean": "vs", "vs_low": "low",
         "vs_high": "high"}
WIDTH = 120


def narrow(table, width: int = WIDTH) -> str:
    """The run table as text within `width` columns: short headers, numbers to 4 significant digits, the
    overrides without the items every row shares (what differs between runs) and cut to the room left, and
    columns a reader can do without (run_dir, sweep, tok/s, bpb, best, epochs, name; then a --versus table's seeds,
    tokens and vs_n) dropped while still too wide."""
    shown = table.rename(columns={k: v for k, v in SHORT.items() if v not in table.columns}).copy()
    for flag in ("overfit", "unstable"):  # a column of zeros says nothing a reader needs; one flagged run does
        if flag in shown and not any(v == 1 for v in shown[flag]):
            shown = shown.drop(columns=[flag])
    if "overrides" in shown and len(shown) > 1:
        items = [str(o).split(",") if o == o else [] for o in shown["overrides"]]
        common = set.intersection(*map(set, items)) if items else set()
        values: dict = {}  # key -> the values it takes: the key that varies most goes first (it survives a cut)
        for row in items:
            for item in row:
                values.setdefault(item.partition("=")[0], set()).add(item)
        shown["overrides"] = [",".join(sorted((i for i in row if i not in common),
                                              key=lambda i: -len(values[i.partition("=")[0]]))) for row in items]
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if v != v else f"{v:.4g}")
    widths = {c: max(len(str(c)), int(shown[c].astype(str).str.len().max() or 0)) for c in shown.columns}

    def line(columns) -> int:  # about what to_string(index=False) takes: each column its widest cell, 1 apart
        return sum(widths[c] for c in columns) + len(columns) - 1
    for optional in ("run_dir", "sweep", "tok/s", "bpb", "best", "epochs", "name", "seeds", "tokens", "vs_n"):
        if line(shown.columns) <= width or "overrides" not in shown:
            break
        room = width - line([c for c in shown.columns if c != "overrides"]) - 2
        if room >= 24:
            cut = shown["overrides"].astype(str)
            shown["overrides"] = cut.where(cut.str.len() <= room, cut.str[:max(room - 3, 1)] + "...")
            break
        if optional in shown:
            shown = shown.drop(columns=[optional])
    text = shown.to_string(index=False)
    excess = max(map(len, text.splitlines())) - width  # the estimate above can miss by a character or two
    if excess > 0 and "overrides" in shown:
        cut = shown["overrides"].astype(str)
        keep = max(int(cut.str.len().max()) - excess - 3, 1)
        shown["overrides"] = cut.where(cut.str.len() <= keep + 3, cut.str[:keep] + "...")
        text = shown.to_string(index=False)
    return text


def cmd_runs(args) -> int:
    from ..runs import by_config, export_record, load_points, load_record, load_results, record_in
    record = record_in(args.dir)
    if args.export and record:
        raise ConfigError(f"{args.dir} is a committed record already (its runs.csv.gz); --export writes one from "
                          f"run directories")
    # a committed record (sweeps/NAME/) reads back as its run dirs: (one row per run, one per logged point)
    if record:
        results, points = load_record(record)
    else:  # the run table only where it is read (--where, or the default one-row-per-run view)
        points = None
        results = load_results(args.dir) if args.where or not (args.export or args.points) else None
    keep = None
    if args.where:  # the runs whose row (one per run: its hyperparameters and results) satisfies every EXPR
        from ..fit import columns
        chosen = results
        for expr in args.where:
            chosen = columns.where(chosen, expr)
        keep = set(chosen["run_dir"]) if "run_dir" in chosen else set()
    if args.export:
        table = export_record(Path(args.dir), Path(args.export), keep_runs=keep)
        print(f"{table['run_dir'].nunique()} runs, {len(table)} rows -> {args.export}")
        return 0
    if args.points:
        table = points if points is not None else load_points(args.dir)
    else:
        table = results
    if keep is not None and "run_dir" in table:
        table = table[table["run_dir"].isin(keep)]
    if table.empty:
        print(f"no runs under {args.dir}" + (f" match --where {' and '.join(args.where)}" if args.where else ""),
              file=sys.stderr)
        return 1
    order = [c for c in SORT_COLUMNS if c in table] + (["run_dir", "step"] if args.points else ["run_dir"])
    table = table.sort_values([c for c in order if c in table], kind="stable", na_position="last")  # numbers as numbers
    seeds = not args.points and not args.by_seed
    if args.versus and not seeds:
        raise ConfigError("--versus compares configurations over their seeds: leave out --points and --by-seed")
    if args.versus:  # one row per configuration, with its paired-seed difference from the reference
        from ..tables import versus
        table = versus(table, args.versus)
    elif seeds:  # one row per configuration, its seeds aggregated
        table = by_config(table)
    if not args.points and not args.all_columns:
        table = table[[c for c in (CONFIG_COLUMNS if seeds else RESULT_COLUMNS) if c in table.columns]]
    if args.json:  # every column, full float precision, NaN as null; streamed a chunk at a time (110k points)
        print("[")
        for start in range(0, len(table), 5000):
            chunk = table.iloc[start:start + 5000]
            rows = chunk.astype(object).where(chunk.notna(), None).to_dict(orient="records")
            print(",\n".join(json.dumps(r, default=str) for r in rows) + ("," if start + 5000 < len(table) else ""))
        print("]")
        return 0
    import pandas as pd
    if args.points and not (args.all_columns or args.wide):  # the curves: what varies along a run, and which run
        table = table[[c for c in POINT_COLUMNS if c in table.columns]]
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
        print(table.to_string(index=False) if args.wide or args.all_columns else narrow(table))
    if args.versus:
        print(resolution_line(table))
    return 0


def resolution_line(table) -> str:
    """What the regret table can resolve, from the reference's own seeds: its seed sd and the smallest paired
    difference that 2, 3 and 4 seeds a point call better or worse at 95% (fit.seeds.resolvable: the verdicts above
    are t intervals with n - 1 degrees of freedom, so 2 seeds resolve only a difference 12.7 seed sds wide)."""
    from ..fit.seeds import resolvable
    reference = table[table["verdict"] == "reference"].iloc[0]
    n, sd = int(reference["n"]), float(reference["loss_std"])
    if n < 2 or sd != sd:
        return f"resolution: the reference has {n} seed(s), no seed sd: train it at 2 or more seeds to read the table"
    steps = ", ".join(f"{resolvable(sd, k):.3g} ({k} seeds)" for k in (2, 3, 4))
    return (f"resolution: reference seed sd {sd:.3g} nats ({n} seeds)\n"  # two lines: a 120-column terminal
            f"  smallest paired difference resolved at 95%: {steps}")
