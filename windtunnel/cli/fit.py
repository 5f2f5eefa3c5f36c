"""`windtunnel fit`: a run directory, a sweep's record or anyone's table of runs, through the column language, into
every law's fit, printed with the tables behind it."""
import json
import sys
from pathlib import Path

from ..config import ConfigError

LAW_NAMES = {"batch-size": "batch_size", "batch-size-data": "batch_size_data", "lr": "lr", "loss": "loss",
             "isoflop": "isoflop", "critical-batch": "critical_batch"}


def parse_columns(text: str) -> dict:
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--columns item {item!r} must look like CANONICAL=YOUR_COLUMN (e.g. N=params)")
        out[key.strip()] = value.strip()
    return out


def _fit_tables(args):
    """(points table, per-run table, units) in canonical columns, from a run directory or a CSV/Parquet file."""
    import pandas as pd

    from .. import fit
    from ..runs import RECORD, RunStatus, load_record, load_results, load_runs, run_dirs
    path = Path(args.source)
    options = dict(bs_unit=args.bs_unit, seq_len=args.seq_len, n_kind=args.n_kind)
    if path.is_dir():
        record = path / RECORD
        if record.exists() and not run_dirs(path):  # a committed record (sweeps/<name>/)
            runs, all_points = load_record(record)
        else:
            runs, all_points = load_results(path), None
        if runs.empty:
            raise FileNotFoundError(f"no run directories under {path}")
        finished = runs[runs["status"].isin([RunStatus.COMPLETED.value, RunStatus.DIVERGED.value])].copy()
        # per-run loss: after a decay where there was one (a run with decay branches is represented by them,
        # each branch a run of its own, so the stable run itself is left out); diverged runs lose
        if "train.branch_at_n" in finished:
            finished = finished[[not (isinstance(b, list) and b) for b in finished["train.branch_at_n"]]]
        if "decayed_eval_loss" in finished:
            finished["final_eval_loss"] = finished["decayed_eval_loss"].fillna(finished["final_eval_loss"])
        finished = _shape(finished, args)
        per_run, units = fit.canonical(finished, {"loss": "final_eval_loss", **parse_columns(args.columns)}, **options)
        _check_one_corpus(finished, path)
        diverged = finished["status"].to_numpy() == RunStatus.DIVERGED.value
        per_run.loc[diverged, "loss"] = float("inf")
        if "train.total_tokens" in finished:  # a diverged run stopped early: its cell is the budget it was given
            for col in {"tokens", "D"} & set(per_run):
                per_run.loc[diverged, col] = finished.loc[diverged, "train.total_tokens"].to_numpy(float)
        points, _ = fit.canonical(load_runs(path) if all_points is None else all_points, parse_columns(args.columns),
                                  **options)
        return points[points["run"].isin(finished["run_dir"])], per_run, units, per_run.attrs.get("notes", [])
    if not path.exists():
        raise FileNotFoundError(f"{path} is neither a run directory nor a file")
    table = _shape(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path), args)
    data, units = fit.canonical(table, parse_columns(args.columns), **options)
    notes = data.attrs.get("notes", [])
    if "D" not in data and "tokens" in data:
        data["D"] = data["tokens"]
    return data, data, units, notes


CORPUS_KEYS = ("data.source", "data.path", "data.tokenizer", "data.bpe_vocab_size", "data.mixture", "corpus_manifest")


def _check_one_corpus(runs, path) -> None:
    """Runs trained on different corpora measure different things: never pooled as if they were seeds."""
    for key in CORPUS_KEYS:
        if key in runs:
            values = sorted({str(v) for v in runs[key]})
            if len(values) > 1:
                raise ConfigError(f"the runs under {path} were trained on different corpora ({key}: "
                                  f"{', '.join(values[:4])}); fit each corpus's runs separately (point fit at one "
                                  f"sweep's directory, or keep one with --where, e.g. --where \"`{key}` == '{values[0]}'\")")


def _shape(table, args):
    """--derive, then --where, then --drop-top, on the table as read (its own column names)."""
    from ..fit import columns
    for item in args.derive or []:
        name, sep, expr = item.partition("=")
        if not sep:
            raise ConfigError(f"--derive {item!r} must look like NAME=EXPR (e.g. D=C/(6*N))")
        table = columns.derive(table, name, expr)
    for expr in args.where or []:
        table = columns.where(table, expr)
    return columns.drop_top(table, args.drop_by, args.drop_top) if args.drop_top else table


def cmd_fit(args) -> int:
    from .. import fit
    points, per_run, units, notes = _fit_tables(args)
    wanted = list(LAW_NAMES.values()) if args.law == "all" else [LAW_NAMES[args.law]]
    results, errors = {}, {}
    for law in wanted:
        try:
            if law == "batch_size":
                results[law] = fit.batch_size_law(points, n_boot=args.boot, units=units)
            elif law == "isoflop":
                results[law] = fit.isoflop_law(per_run, n_boot=args.boot, units=units)
            elif law == "critical_batch":
                results[law] = fit.critical_batch_law(points, n_boot=args.boot, units=units)
            elif law == "batch_size_data":
                results[law] = fit.batch_size_data_law(per_run, n_boot=args.boot, units=units)
            elif law == "lr":
                results[law] = fit.lr_optimum(per_run, n_boot=args.boot, units=units)
            else:
                results[law] = fit.loss_law(per_run, form=args.form, n_boot=args.boot, units=units)
        except fit.NotFittable as err:
            errors[law] = str(err)
            continue
        results[law].diagnostics += notes + fit.quality(results[law])
    doc = {"source": str(args.source), "fits": {k: v.to_json() for k, v in results.items()}, "not_fittable": errors}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        for law, res in results.items():
            print(f"{law} ({res.form}, {res.n_points} points):")
            for sym, value in res.params.items():
                low, high = res.intervals.get(sym) or (None, None)
                shown = f"  [{low:.4g}, {high:.4g}]" if low is not None else ""
                loo = (res.details.get("leave_one_out") or {}).get(sym) if isinstance(res.details, dict) else None
                if loo and loo.get("point") is not None:  # the one point this exponent rests on most
                    shown += f"  leave-one-out: up to {loo['max_change']:.3g} without {loo['point']}"
                print(f"  {sym:>12} = {value:.4g}{shown}")
            _print_details(res)
            for diag in res.diagnostics:
                print(f"  ! {diag}")
        for law, msg in errors.items():
            print(f"{law}: not fittable: {msg}")
    weak = {law: fit.unidentified(res) for law, res in results.items() if fit.unidentified(res)}
    if weak and not args.allow_degenerate:
        for law, reasons in weak.items():
            print(f"windtunnel fit: the {law} law is not identified by these data ({'; '.join(reasons)}); fix the "
                  f"sweep, or pass --allow-degenerate to accept it (predict refuses it unless --force)", file=sys.stderr)
        return 3
    return 0 if results else 1


def _print_details(res) -> None:
    """The tables behind a law: the LR optimum of every cell with its interval and the transfer verdict per
    parametrization; the optimal batch size of every (size, loss level); the isoFLOP optima per budget."""
    details = res.details if isinstance(res.details, dict) else {}
    rows = details.get("optima") or []
    if res.law == "lr" and rows:
        print(f"  {'param':>6} {'N':>10} {'D':>10} {'width':>6} {'lr*':>10}  {'interval':<22} {'best lr':>9} {'loss':>7}")
        for c in rows:
            width = f"{c['width']:.0f}" if c.get("width") else "-"
            budget = f"{c['D']:.3g}" if "D" in c else "-"
            print(f"  {c['param']:>6} {c['N']:>10.3g} {budget:>10} {width:>6} {c['lr_star']:>10.4g}  "
                  f"[{c['interval'][0]:.4g}, {c['interval'][1]:.4g}]".ljust(24) +
                  f" {c['best_lr']:>9.4g} {c['best_loss']:>7.4g}" + ("  edge: left out" if c["edge"] else ""))
        for param, v in (details.get("transfer") or {}).items():
            steps = ", ".join(f"{s:+.2f}" for s in v["shift_in_grid_steps"])
            print(f"  {param}: {v['verdict']} (shift from the smallest size, in grid steps: {steps})")
    elif res.law == "batch_size" and rows:
        print(f"  {'N':>10} {'loss':>7} {'bs_opt':>10} {'runs':>5} {'censored':>8}  flag")
        for r in rows:
            bs = f"{r['bs_opt']:.4g}" if r.get("bs_opt") else "-"
            print(f"  {r['N']:>10.3g} {r['loss']:>7.4g} {bs:>10} {r['n_runs']:>5} {r.get('censored', 0):>8}  "
                  f"{r.get('flag') or ''}")
    elif rows:  # isoFLOP optima per budget, critical batch per target loss, Step Law cells: their own columns
        keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))]
        print("  " + " ".join(f"{k:>10}" for k in keys))
        for r in rows:
            print("  " + " ".join(f"{r.get(k):>10.4g}" if isinstance(r.get(k), (int, float)) and not isinstance(
                r.get(k), bool) else f"{str(r.get(k)):>10}" for k in keys))
