"""One self-contained HTML page per sweep (`windtunnel report RUNS_DIR`): the run table (statuses, epochs,
overfitting flags), every fit with its intervals and diagnostics, every figure that the fits support (PNG
embedded as base64: the file opens anywhere, offline), and the prediction with its extrapolation warnings."""
import base64
import html
import io
from pathlib import Path

from . import plot
from .tables import SweepTables

RUN_COLUMNS = ["name", "status", "model.parametrization", "N", "model.d_model", "optim.lr", "train.batch_size_tokens",
               "train.seed", "tokens", "epochs", "overfit", "unstable", "final_eval_loss"]


FLAGS = {"overfit": "held-out loss rose as the train loss fell: left out of fits",
         "unstable": "held-out loss rose with the train loss: a spike, kept in fits"}


def figures(tables: SweepTables, fits: dict) -> dict:
    """title -> Figure, for every figure these runs and fits support."""
    out = {}
    if tables.logged is not None and len(tables.logged):
        out["Loss curves (held-out o, train faint)"] = plot.loss_curves(tables.logged)
    if "batch_size" in fits:
        out["Tokens to reach each loss level vs batch size"] = plot.batch_size_curves(fits["batch_size"])
        out["Optimal batch size vs loss"] = plot.batch_size_law(fits["batch_size"])
    if "lr" in fits and "lr" in tables.per_run:
        out["Final held-out loss vs learning rate"] = plot.lr_curves(tables.per_run, fits["lr"])
    if "loss" in fits and tables.logged is not None:
        out["Loss vs tokens with the fitted L(N, D)"] = plot.wsd_curves(tables.logged, fits["loss"])
    return out


def png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return "" if value is None else str(value)


def _fit_section(law: str, res) -> str:
    rows = [{"parameter": k, "value": v, "95% interval": "[{:.4g}, {:.4g}]".format(*res.intervals[k])
             if res.intervals.get(k) and None not in res.intervals[k] else "-"} for k, v in res.params.items()]
    diags = "".join(f"<li>{html.escape(d)}</li>" for d in res.diagnostics) or "<li>none</li>"
    return (f"<h3>{html.escape(law)} ({html.escape(res.form)}, {res.n_points} points)</h3>"
            f"{_table(rows, ['parameter', 'value', '95% interval'])}<p>Diagnostics:</p><ul>{diags}</ul>")


def render(tables: SweepTables, fits: dict, errors: dict, *, title: str, prediction: dict = None,
           extra_figures: dict = None, notes: list = (), figure_fits: dict = None, extra_tables: dict = None) -> str:
    """The report as one HTML string. figure_fits: the fits whose figures are drawn from `tables` (default all
    of `fits`; a report that shows fits of other tables, as the demo's does, passes their figures as extra).
    extra_tables: title -> rows (dicts, one key per column) shown as HTML tables after the notes."""
    parts = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, rows in (extra_tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + (_table(rows, list(rows[0])) if rows else "<p>none</p>"))
    if tables.runs is not None and len(tables.runs):
        runs = tables.runs.sort_values([c for c in ("N", "train.batch_size_tokens", "optim.lr") if c in tables.runs])
        counts = runs["status"].value_counts().to_dict()
        flag_counts = {flag: sum(bool(v == 1) for v in runs[flag]) for flag in FLAGS if flag in runs}
        flagged = [f"{n} {flag} ({FLAGS[flag]})" for flag, n in flag_counts.items() if n]
        parts.append(f"<h2>Runs</h2><p>{len(runs)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
                     "".join(f"; {f}" for f in flagged) + "</p>")
        runs = runs.assign(name=[Path(str(d)).name for d in runs["run_dir"]])
        parts.append(_table(runs.to_dict("records"), [c for c in RUN_COLUMNS if c in runs]))
    parts.append("<h2>Fits</h2>")
    parts += [_fit_section(law, res) for law, res in fits.items()]
    parts += [f"<p><b>{html.escape(law)}: not fittable</b>: {html.escape(msg)}</p>" for law, msg in errors.items()]
    if prediction:  # Prediction.to_json(): numbers with intervals, how far it extrapolates, forced warnings
        rows = [{"quantity": k, "value": v["value"], "interval": "[{:.4g}, {:.4g}]".format(*v["interval"])
                 if v.get("interval") else "-", "source": v.get("source", "")}
                for k, v in prediction.get("predictions", {}).items()]
        lines = [f"{k} = {v}" for k, v in prediction.get("extrapolation", {}).items()] + prediction.get("notes", [])
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in prediction.get("warnings", []))
        target = prediction.get("target", {})
        parts.append(f"<h2>Prediction for {html.escape(str(target.get('name', '')))} (N = {target.get('N', 0):,}), "
                     f"{prediction.get('tokens', 0):.3g} tokens</h2>" + _table(rows, ["quantity", "value", "interval",
                                                                                    "source"]) +
                     "<ul>" + "".join(f"<li>{html.escape(str(x))}</li>" for x in lines) + "</ul>" +
                     (f"<p><b>Warnings (predicted anyway, with --force):</b></p><ul>{warn}</ul>" if warn else ""))
    parts.append("<h2>Figures</h2>")
    for name, fig in {**figures(tables, fits if figure_fits is None else figure_fits), **(extra_figures or {})}.items():
        parts.append(f"<h3>{html.escape(name)}</h3><img alt=\"{html.escape(name)}\" "
                     f"src=\"data:image/png;base64,{png_base64(fig)}\">")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"


def write_report(out: Path, tables: SweepTables, fits: dict, errors: dict, **kwargs) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(tables, fits, errors, **kwargs))
    tmp.replace(out)  # atomic: a reader never sees half a report
    return out
