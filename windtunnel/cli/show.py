"""`windtunnel plot`, `windtunnel report` and `windtunnel demo`: what a user looks at (figures, one HTML page, the
whole wind tunnel with its regret)."""
import json
from pathlib import Path

from ..config import ConfigError
from ..laws import LAW_NAMES


PLOT_KINDS = {"curves": "loss_curves", "batch-size": "batch_size_curves", "batch-size-law": "batch_size_law",
              "lr": "lr_curves", "wsd": "wsd_curves", "coord": "coord_check"}
PLOT_LAWS = {"batch-size": "batch_size", "batch-size-law": "batch_size", "lr": "lr", "wsd": "loss"}


def _sweep_tables(args):
    from ..tables import load_runs
    return load_runs(args.source, columns=args.columns, where=args.where or ())


def cmd_plot(args) -> int:
    from .. import plot
    from ..fit import fit_laws
    if args.kind == "coord":  # trains the widths itself: no runs needed
        from ..train import coord_check
        fig = plot.coord_check(coord_check())
    else:
        if not args.source:
            raise ConfigError(f"--kind {args.kind} plots runs: give RUNS_DIR (a run directory tree or sweeps/NAME)")
        tables = _sweep_tables(args)
        law = PLOT_LAWS.get(args.kind)
        fits, errors = fit_laws(tables, [law], n_boot=args.boot) if law else ({}, {})
        if law and law not in fits and args.kind != "wsd":
            raise ValueError(f"--kind {args.kind} needs the {law} fit: not fittable: {errors[law]}")
        if args.kind == "curves":
            fig = plot.loss_curves(tables.logged)
        elif args.kind == "lr":
            fig = plot.lr_curves(tables.per_run, fits[law])
        elif args.kind == "wsd":
            fig = plot.wsd_curves(tables.logged, fits.get(law))
        else:
            fig = getattr(plot, PLOT_KINDS[args.kind])(fits[law])
    # the current folder by default (never into a committed record unless --out says so): NAME-KIND.png
    out = Path(args.out or f"{Path(args.source).resolve().name + '-' if args.source else ''}{args.kind}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    import io
    from ..runs import write_file
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=args.dpi, format=out.suffix.lstrip(".") or "png")
    write_file(out, buffer.getvalue())
    print(out)
    return 0


def cmd_report(args) -> int:
    from ..report import write_report
    from ..fit import fit_laws
    tables = _sweep_tables(args)
    wanted = list(LAW_NAMES.values()) if args.law == "all" else [LAW_NAMES[args.law]]
    fits, errors = fit_laws(tables, wanted, n_boot=args.boot)
    prediction = None
    if args.prediction:
        path = Path(args.prediction)
        prediction = json.loads((path / "prediction.json" if path.is_dir() else path).read_text())
    out = write_report(Path(args.out or Path(args.source) / "report.html"), tables, fits, errors,
                       title=f"windtunnel report: {args.source}", prediction=prediction)
    print(out)
    return 0


def cmd_demo(args) -> int:
    from .. import plot
    from ..demo import DemoPlan, fit_line, headline, regret_rows, regret_table, run_demo, write_summary
    from ..report import write_report
    plan = DemoPlan.tiny() if args.tiny else DemoPlan.cuda() if args.device == "cuda" else DemoPlan()
    out = Path(args.out)
    result = run_demo(plan, out, n_boot=args.boot)
    doc = write_summary(out, plan, result)
    extra = {"LR sweep: final held-out loss vs LR (muP beside SP)": plot.lr_curves(result.lr.per_run, result.fits["lr"])} \
        if "lr" in result.fits else {}
    extra["Target: the predicted point and its neighbours"] = plot.loss_curves(result.target.logged, title="target runs")
    notes = [headline(doc, result.seconds)]
    notes += [f"Refused by predict (the demo went on, marked forced): {r}" for r in result.refused]
    report = write_report(out / "report.html", result.batch, result.fits, result.errors, title="windtunnel demo",
                          prediction=result.prediction, extra_figures=extra,
                          figure_fits={k: v for k, v in result.fits.items() if k == "batch_size"},
                          notes=notes, extra_tables={"Regret table (mean over seeds; each neighbour's paired difference "
                                               "from the predicted point)": regret_rows(result)})
    for law, res in result.fits.items():
        print(fit_line(law, res))
    for law, msg in result.errors.items():
        print(f"fit {law}: not fittable: {msg}")
    for reason in result.refused:
        print(f"predict would refuse: {reason}")
    print(regret_table(result))
    print(notes[0])
    print(f"report: {report}  summary: {out / 'demo.json'}")
    return 0
