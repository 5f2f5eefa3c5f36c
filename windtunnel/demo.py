"""`windtunnel demo`: the whole wind tunnel in one command, with its answer checked.

1. a batch-size sweep of small muP proxies (MiniCPM's method: fixed LR, batch sizes spaced 2x, cosine);
2. an LR sweep of two proxy widths, muP beside SP (each width's LR grid trained as one packed model);
3. the fits: bs = a / L^b (censored iso-loss optima) and the LR optimum under muP;
4. the prediction for a target 4x larger than the largest proxy (refused laws are reported and then used
   anyway, marked as forced: the point of the demo is to measure how good the prediction is);
5. the target trained at the predicted (LR, batch) and at LR x2, /2 and batch x2, /2, each at target_seeds seeds
   (the points of one batch size as one packed model): per point the mean final held-out loss over seeds and the
   paired-seed 95% interval of its difference from the predicted point; a neighbour is "better" only where that
   interval excludes 0, else "tied within noise" (fit/seeds.py).
Every trial is a run dir under OUT: a second call skips the finished ones. `windtunnel demo` (cli) then writes
OUT/report.html. Trials are built with compose() and trained with run_trials(), as a sweep job would be.
"""
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sizing
from .compose import compose
from .config import ModelConfig
from .predict import NotIdentified, predict
from .fit import fit_laws
from .fit.seeds import BETTER, paired_difference, resolvable
from .tables import SweepTables, load_runs
from .train import run_trial, run_trials

log = logging.getLogger("windtunnel")


@dataclass
class DemoPlan:
    """The sizes of the story. Widths share depth and head_dim, so muP transfers the LR between them."""
    device: str = "cpu"
    widths: tuple = (32, 64)  # batch-size proxies (N = 23.7k, 94.5k non-embedding)
    lr_widths: tuple = (32, 64)  # LR sweep, muP and SP
    target_width: int = 128  # N = 377k: 4x the largest proxy
    n_layers: int = 2
    head_dim: int = 16
    base_width: int = 32  # muP base width
    seq_len: int = 32
    # 1 ... 32 sequences: at 256 ... 4096 tokens (a first try) the smallest batch was best at every loss level
    batch_sizes: tuple = (32, 64, 128, 256, 512, 1024)
    bs_lr: float = 0.01  # MiniCPM's fixed LR for the batch-size sweep
    bs_tokens: int = 196608
    lrs: tuple = tuple(2.0 ** k for k in range(-9, -3))  # 2^-9 ... 2^-4
    lr_batch: int = 256
    lr_tokens: int = 65536
    target_tokens: int = 196608
    target_seeds: int = 2  # seeds per target point (paired: seed s of every point shares its init and data order)
    eval_points: int = 30
    eval_tokens: int = 8192
    final_eval_tokens: int = 131072  # 4,096 windows at the end of each run: standard error <= ~0.01 nats (README)
    extra: tuple = ()  # more overrides for every trial (e.g. data=stdlib_bpe)

    @classmethod
    def tiny(cls) -> "DemoPlan":
        """Seconds, for tests: the same story at toy sizes and budgets (its answer is not meant to be good)."""
        return cls(widths=(16, 24, 32), lr_widths=(16, 32), target_width=64, head_dim=8, batch_sizes=(64, 128, 256, 512),
                   seq_len=32, bs_tokens=8192, lrs=(2.0 ** -8, 2.0 ** -6, 2.0 ** -4), lr_batch=256,
                   lr_tokens=8192, target_tokens=8192, eval_points=10, eval_tokens=2048, final_eval_tokens=4096)

    @classmethod
    def cuda(cls) -> "DemoPlan":
        """GPU sizes: MiniCPM's deep-and-thin shape (8 layers, head_dim 64, base 256) on the site-packages corpus,
        the batch grid of sweeps/batch_size's record (where its U-curves lie), 16M tokens per proxy run: 20.6
        minutes of H200 device time in three resumed calls (sweeps/prediction_check is its record)."""
        return cls(device="cuda", widths=(128, 256), lr_widths=(128, 256), target_width=512, n_layers=8,
                   head_dim=64, base_width=256, seq_len=1024, batch_sizes=tuple(2 ** k for k in range(12, 18)),
                   bs_tokens=2 ** 24, lrs=tuple(2.0 ** k for k in range(-10, -4)), lr_batch=2 ** 15,
                   lr_tokens=2 ** 23, target_tokens=2 ** 24, eval_points=40, eval_tokens=262144,
                   final_eval_tokens=2 ** 22,
                   extra=("data=stdlib_site_bpe",))


@dataclass
class DemoResult:
    batch: SweepTables
    lr: SweepTables
    fits: dict
    errors: dict
    prediction: dict
    refused: list  # why predict would have refused (the demo goes on, marked forced)
    regret: list  # one row per target trial: point, lr, bs, loss, regret
    target: SweepTables  # the five target runs
    seconds: float = 0.0


def _overrides(plan: DemoPlan, width: int) -> list[str]:
    return [f"train={'gpu' if plan.device == 'cuda' else 'cpu'}", f"model.name=w{width}", f"model.d_model={width}",
            f"model.n_layers={plan.n_layers}", f"model.fixed_head_dim={plan.head_dim}",
            f"model.dim_model_base={plan.base_width}", f"train.seq_len={plan.seq_len}", "train.micro_batch_size=0",
            f"train.eval_points={plan.eval_points}", f"train.eval_tokens={plan.eval_tokens}",
            f"train.final_eval_tokens={plan.final_eval_tokens}", *plan.extra]


def target_model(plan: DemoPlan) -> ModelConfig:
    return compose(_overrides(plan, plan.target_width)).model


def _batch_sweep(plan: DemoPlan, out: Path) -> None:
    for width in plan.widths:
        for bs in plan.batch_sizes:
            cfg = compose(_overrides(plan, width) + ["schedule=cosine", f"optim.lr={plan.bs_lr}",
                                                     f"train.batch_size_tokens={bs}", f"train.total_tokens={plan.bs_tokens}"])
            run_trial(cfg, out / f"w{width}-bs{bs}", meta={"sweep": "demo-batch-size"})


def _lr_sweep(plan: DemoPlan, out: Path) -> None:
    for width in plan.lr_widths:
        for param in ("mup", "sp"):
            base = _overrides(plan, width) + [f"model.parametrization={param}", f"train.batch_size_tokens={plan.lr_batch}",
                                              f"train.total_tokens={plan.lr_tokens}"]
            cfgs = [compose(base + [f"optim.lr={lr}"]) for lr in plan.lrs]
            dirs = [out / f"w{width}-{param}-lr{lr:.6g}" for lr in plan.lrs]
            run_trials(cfgs, dirs, [{"sweep": "demo-lr"}] * len(cfgs))  # one packed model per LR grid


def _round_batch(tokens: float, seq_len: int) -> int:
    return max(seq_len, int(round(tokens / seq_len)) * seq_len)


def run_demo(plan: DemoPlan, out: Path, *, n_boot: int = 200) -> DemoResult:
    out, start = Path(out), time.time()
    log.info("demo 1/5: batch-size sweep, widths %s x batches %s", plan.widths, plan.batch_sizes)
    _batch_sweep(plan, out / "batch_size")
    log.info("demo 2/5: LR sweep, widths %s, muP and SP, LRs %s", plan.lr_widths, [f"{x:.3g}" for x in plan.lrs])
    _lr_sweep(plan, out / "lr")
    log.info("demo 3/5: fits")
    batch, lr = load_runs(out / "batch_size"), load_runs(out / "lr")
    fits, errors = fit_laws(batch, ["batch_size"], n_boot=n_boot)
    lr_fits, lr_errors = fit_laws(lr, ["lr"], n_boot=n_boot)
    fits.update(lr_fits)
    errors.update(lr_errors)
    # The batch law is read at the loss the largest proxy reached at its best batch: the 4x larger target
    # reaches lower, so this is the edge of the fitted range rather than an extrapolation beyond it.
    largest = batch.per_run[batch.per_run["N"] == batch.per_run["N"].max()]
    target_loss = float(largest["loss"].min())
    target = target_model(plan)
    log.info("demo 4/5: prediction for width %d (N = %s), %d tokens, at loss %.4g", plan.target_width,
             f"{sizing.n_params(target):,}", plan.target_tokens, target_loss)
    kwargs = dict(tokens=plan.target_tokens, target_loss=target_loss, batch_size=fits.get("batch_size"),
                  lr=fits.get("lr"), seq_len=plan.seq_len)
    refused = []
    if "batch_size" not in fits or "lr" not in fits:
        refused = [f"{law}: not fittable: {msg}" for law, msg in errors.items()]
        # without a law there is no prediction: the grid's best proxy settings stand in (marked)
        best = largest.loc[largest["loss"].idxmin()]
        pred_bs = float(best["bs"]) if "batch_size" not in fits else float(
            fits["batch_size"].params["a"] / target_loss ** fits["batch_size"].params["b"])
        pred_lr = float(fits["lr"].params["lr_star"]) if "lr" in fits and fits["lr"].form == "constant" else plan.bs_lr
        prediction = {"predictions": {}, "warnings": refused, "tokens": plan.target_tokens,
                      "target": {"name": target.name, "N": sizing.n_params(target)}}
    else:
        try:
            pred = predict(target, **kwargs)
        except NotIdentified:
            pred = predict(target, **kwargs, force=True)
            refused = list(pred.warnings) or [n for n in pred.notes if n.startswith("WARNING")]
        prediction = pred.to_json()
        pred_bs, pred_lr = pred.numbers["batch_size_tokens"]["value"], pred.numbers["lr"]["value"]
    bs0 = _round_batch(pred_bs, plan.seq_len)
    points = {"predicted": (pred_lr, bs0), "lr x2": (2 * pred_lr, bs0), "lr /2": (pred_lr / 2, bs0),
              "batch x2": (pred_lr, 2 * bs0), "batch /2": (pred_lr, _round_batch(bs0 / 2, plan.seq_len))}
    log.info("demo 5/5: target at the predicted point (lr %.4g, batch %d tokens) and its 4 neighbours, %d seeds each",
             pred_lr, bs0, plan.target_seeds)
    rows = _target_points(plan, out / "target", points)
    return DemoResult(batch, lr, fits, errors, prediction, refused, rows, load_runs(out / "target"),
                      time.time() - start)


def _target_points(plan: DemoPlan, out: Path, points: dict) -> list[dict]:
    """Train every point at seeds 0..target_seeds-1 (the points of one batch size, all their seeds, as one packed
    model) and compare each with the predicted point, seed by seed."""
    losses: dict = {name: {} for name in points}
    statuses: dict = {name: set() for name in points}
    for bs in sorted({bs for _, bs in points.values()}):
        jobs = [(name, lr_value, seed) for name, (lr_value, b) in points.items() if b == bs
                for seed in range(plan.target_seeds)]
        cfgs = [compose(_overrides(plan, plan.target_width) + [f"optim.lr={lr_value}", f"train.batch_size_tokens={bs}",
                                                                f"train.total_tokens={plan.target_tokens}",
                                                                f"train.seed={seed}"]) for _, lr_value, seed in jobs]
        dirs = [out / f"{name.replace(' ', '').replace('/', 'div')}-lr{lr_value:.6g}-bs{bs}-s{seed}"
                for name, lr_value, seed in jobs]
        for (name, _, seed), result in zip(jobs, run_trials(cfgs, dirs, [{"sweep": "demo-target"}] * len(cfgs))):
            losses[name][seed] = math.inf if result.compared_loss is None else result.compared_loss
            statuses[name].add(str(result.status.value))
    best = min(float(np.mean(list(v.values()))) for v in losses.values())
    rows = []
    for name, (lr_value, bs) in points.items():
        mean = float(np.mean(list(losses[name].values())))
        diff = paired_difference(losses[name], losses["predicted"]) if name != "predicted" else None
        rows.append({"point": name, "lr": lr_value, "batch_size_tokens": bs, "status": ",".join(sorted(statuses[name])),
                     "losses": [losses[name][s] for s in sorted(losses[name])], "final_eval_loss": mean,
                     "regret": mean - best, **({"difference": diff} if diff else {})})
    pred = losses["predicted"]
    spread = float(np.std(list(pred.values()), ddof=1)) if len(pred) > 1 else math.nan
    rows[0]["seed_sd"] = spread
    rows[0]["resolvable"] = resolvable(spread, len(pred)) if math.isfinite(spread) else math.inf
    return rows


def regret_rows(result: DemoResult) -> list[dict]:
    """The regret table as rows (what the report renders as an HTML table)."""
    rows = []
    for r in result.regret:
        d = r.get("difference")
        rows.append({"point": r["point"], "lr": r["lr"], "batch (tokens)": r["batch_size_tokens"],
                     "seeds": len(r["losses"]), "mean final held-out loss": r["final_eval_loss"],
                     "minus predicted": "" if d is None else f"{d['mean']:+.4f}",
                     "95% interval": "" if d is None or not math.isfinite(d["interval"][0]) else
                     "[{:+.4f}, {:+.4f}]".format(*d["interval"]), "verdict": "" if d is None else d["verdict"]})
    return rows


def regret_table(result: DemoResult) -> str:
    """The regret table as Markdown (what the demo prints): regret_rows, one line per point."""
    lines = ["| point | lr | batch (tokens) | seeds | mean final held-out loss | minus predicted [95% interval] | "
             "verdict |", "|---|---|---|---|---|---|---|"]
    for r in regret_rows(result):
        shown = " ".join(x for x in (r["minus predicted"], r["95% interval"]) if x)
        lines.append(f"| {r['point']} | {r['lr']:.4g} | {r['batch (tokens)']} | {r['seeds']} | "
                     f"{r['mean final held-out loss']:.4f} | {shown} | {r['verdict']} |")
    return "\n".join(lines)


def fit_line(law: str, res) -> str:
    """One fitted law as the demo prints it: `fit lr (constant): lr_star = 0.01136 [0.007813, 0.01563]`."""
    shown = ", ".join(f"{k} = {v:.4g}" + (" [{:.4g}, {:.4g}]".format(*res.intervals[k]) if res.intervals.get(k)
                                          and None not in res.intervals[k] else "") for k, v in res.params.items())
    return f"fit {law} ({res.form}): {shown}"


def headline(doc: dict, seconds: float) -> str:
    """The demo's last line, from its summary (demo.json) and this call's time: the demo's real time, the regret of
    the prediction, and the verdict."""
    took = f"Demo in {doc['demo_seconds']:.0f} s" + (
        f" (this call {seconds:.0f} s: the runs of an earlier call were kept)" if seconds < doc["demo_seconds"] - 1 else "")
    return (f"{took}. Regret of the prediction: {doc['prediction_regret']:+.4f} nats "
            f"({100 * doc['prediction_regret_relative']:.2f}% of the best point's mean loss); {doc['verdict']}.")


def verdict(result: DemoResult) -> str:
    """One line: whether any neighbour beat the predicted point beyond the seed noise."""
    better = [r["point"] for r in result.regret if r.get("difference", {}).get("verdict") == BETTER]
    pred = result.regret[0]
    noise = f"(seed sd {pred['seed_sd']:.4f} at the predicted point; {len(pred['losses'])} seeds resolve a paired " \
            f"difference of {pred['resolvable']:.4f})"
    if better:
        return f"{', '.join(better)} beat the prediction beyond the seed noise {noise}"
    return f"no neighbour beats the prediction beyond the seed noise {noise}"


def summary(plan: DemoPlan, result: DemoResult) -> dict:
    """What the demo writes to OUT/demo.json: the plan, the fitted laws, the prediction, the regret table."""
    pred = result.regret[0]
    return {"verdict": verdict(result), "plan": dataclasses.asdict(plan), "seconds": result.seconds,
            "fits": {k: v.to_json() for k, v in result.fits.items()}, "not_fittable": result.errors,
            "prediction": result.prediction, "refused": result.refused, "regret": result.regret,
            "prediction_regret": pred["regret"],
            "prediction_regret_relative": pred["regret"] / min(r["final_eval_loss"] for r in result.regret)}


def write_summary(out: Path, plan: DemoPlan, result: DemoResult) -> dict:
    """OUT/demo.json. `demo_seconds` is the demo's real time: the longest call that wrote this file (a second call,
    which trains nothing, takes seconds; it keeps the first call's time and adds its own as `seconds`)."""
    doc = summary(plan, result)
    try:
        earlier = json.loads((Path(out) / "demo.json").read_text()).get("demo_seconds", 0.0)
    except (OSError, ValueError, AttributeError):
        earlier = 0.0
    doc["demo_seconds"] = max(float(earlier or 0.0), result.seconds)
    tmp = Path(out) / "demo.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(Path(out) / "demo.json")
    return doc
