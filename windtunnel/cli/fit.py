"""`windtunnel fit`: a run directory, a sweep's record or anyone's table of runs, through the column language, into
every law's fit, printed with the tables behind it."""
import json
import sys
from pathlib import Path

from ..laws import LAW_NAMES



def _tables(args):
    from ..tables import load_runs
    return load_runs(args.source, columns=args.columns, derive=args.derive or (), where=args.where or (),
                       drop_top=args.drop_top, drop_by=args.drop_by, bs_unit=args.bs_unit, seq_len=args.seq_len,
                       n_kind=args.n_kind)


def cmd_fit(args) -> int:
    from .. import fit
    from ..fit import fit_laws
    wanted = list(LAW_NAMES.values()) if args.law == "all" else [LAW_NAMES[args.law]]
    results, errors = fit_laws(_tables(args), wanted, form=args.form, n_boot=args.boot, levels=args.levels,
                               lr_estimator=args.lr_estimator, critical_error=args.critical_error,
                               profile=args.profile)
    doc = {"source": str(args.source), "fits": {k: v.to_json() for k, v in results.items()}, "not_fittable": errors}
    if args.out:
        from ..runs import write_file
        write_file(Path(args.out), json.dumps(doc, indent=1))
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
    from ..fit.transfer import verdict_line
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
        print(f"  estimator: {details.get('estimator', 'parabola')}" + (
            " (each cell's optimum from a parabola in log LR; the law through the optima)"
            if details.get("estimator", "parabola") == "parabola" else " (Step Law's near-optimal runs)"))
        for param, v in (details.get("transfer") or {}).items():
            print(f"  {verdict_line(param, v)}")
    elif res.law == "batch_size" and rows:
        print(f"  {'N':>10} {'loss':>7} {'bs_opt':>10} {'runs':>5} {'censored':>8}  flag")
        for r in rows:
            bs = f"{r['bs_opt']:.4g}" if r.get("bs_opt") else "-"
            print(f"  {r['N']:>10.3g} {r['loss']:>7.4g} {bs:>10} {r['n_runs']:>5} {r.get('censored', 0):>8}  "
                  f"{r.get('flag') or ''}")
    elif res.law == "critical_batch":
        rows = details.get("levels", [])
        print(f"  {'N':>10} {'loss':>7} {'B_noise':>10} {'[95%]':>21} {'B_crit':>10} {'S_min':>10} {'batches':>7}  flag"
              f"   (B_crit: Zhang et al.'s 20% overhead, B_noise / 5 + 1.2 x the smallest batch)")
        for r in rows:
            lo, hi = r["B_noise_interval"]
            span = f"[{lo:.4g}, {hi:.4g}]" if lo is not None else "-"
            print(f"  {r['N']:>10.3g} {r['loss']:>7.4g} {_num(r['B_noise']):>10} {span:>21} {_num(r['B_crit']):>10} "
                  f"{_num(r['S_min']):>10} {r['n_batches']:>7}  {r.get('flag') or ''}")
        for name, law in details.get("laws", {}).items():
            lo, hi = law["e_interval"]
            span = f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "[-]"
            print(f"  {name} = {law['c']:.4g} x^{law['e']:.3f}  exponent {span} ({law['n_points']} points; "
                  f"error model: {details['error_model']})")
    elif rows:  # isoFLOP optima per budget, Step Law cells: their own columns
        keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))]
        print("  " + " ".join(f"{k:>10}" for k in keys))
        for r in rows:
            print("  " + " ".join(f"{r.get(k):>10.4g}" if isinstance(r.get(k), (int, float)) and not isinstance(
                r.get(k), bool) else f"{str(r.get(k)):>10}" for k in keys))


def _num(value) -> str:
    return f"{value:.4g}" if value is not None else "-"
