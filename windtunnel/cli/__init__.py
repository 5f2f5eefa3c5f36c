"""The `windtunnel` command: thin argparse subcommands over the library."""
import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .. import __version__
from ..config import ConfigError
from ..laws import LAW_NAMES
from ..tables import parse_columns
from . import complete
from .fit import cmd_fit
from .show import PLOT_KINDS, cmd_demo, cmd_plot, cmd_report
from .table import WIDTH, cmd_runs


def cmd_train(args) -> int:
    from .. import sizing
    from ..compose import compose, compose_record
    from ..config import to_dict
    if args.config:
        record = json.loads(Path(args.config).read_text())
        cfg = compose_record(record.get("trial", record), args.overrides)  # a config.json or a bare trial
    else:
        cfg = compose(args.overrides)
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=1))
        return 0
    from ..train import run_trial  # torch only when training
    out = Path(args.out or f"runs/train/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.name}")
    logging.getLogger("windtunnel").info("training %s (%s, N=%s) for %s tokens into %s", cfg.model.name,
                                         cfg.model.parametrization, f"{sizing.n_params(cfg.model):,}",
                                         f"{cfg.train.total_tokens:,}", out)
    result = run_trial(cfg, out)
    if result.status == "running":  # another live process holds the run dir: nothing was trained here
        print(f"windtunnel train: {result.error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in result.to_json().items() if k != "traceback"}, indent=1))
    return 0 if result.status in ("completed", "diverged", "pruned") else 1


def cmd_resolution(args) -> int:
    from ..compose import compose, compose_record
    if args.config:
        record = json.loads(Path(args.config).read_text())
        cfg = compose_record(record.get("trial", record), args.overrides)
    else:
        cfg = compose(args.overrides)
    from .. import resolution  # torch only when training
    record = resolution.measure(cfg, Path(args.out), seeds=args.seeds)
    print(resolution.summary(record))
    print(f"-> {Path(args.out) / 'resolution.json'}")
    return 0


def cmd_predict(args) -> int:
    from .. import laws
    from ..config import ModelConfig
    from ..fit import FitResult
    from ..predict import predict, target_model
    fits = {}
    for path in args.fits or []:
        doc = json.loads(Path(path).read_text())
        fits.update({law: FitResult.from_json(f) for law, f in doc.get("fits", {}).items()})
    if args.lr is not None:  # a given base LR (a muP optimum that does not move with N) wins over any LR law
        if not args.lr > 0:
            raise ConfigError(f"--lr {args.lr} must be a positive learning rate (the muP base LR, e.g. 0.0039)")
        fits["lr"] = laws.ReferenceLaw("given", "constant", {"value": args.lr}, {"y": "muP base Adam LR"},
                                       "--lr: given on the command line")
    if args.reference == "minicpm":
        fits.setdefault("batch_size", laws.REFERENCE["minicpm-batch-size"])
        fits.setdefault("lr", laws.REFERENCE["minicpm-lr"])
    target = target_model(args.target, parse_columns(args.shape) and {
        k: type(getattr(ModelConfig(), k))(float(v)) for k, v in parse_columns(args.shape).items()})
    pred = predict(target, tokens=args.tokens, compute=args.compute, target_loss=args.target_loss,
                   batch_size=fits.get("batch_size"), lr=fits.get("lr"), loss=fits.get("loss"), seq_len=args.seq_len,
                   force=args.force)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        from ..runs import write_file
        write_file(out / "prediction.json", json.dumps(pred.to_json(), indent=1))
        write_file(out / "prediction.md", pred.to_markdown())
    print(json.dumps(pred.to_json(), indent=1) if args.json else pred.to_markdown())
    return 0


def cmd_launch(args) -> int:
    from ..launch import LaunchSpec, data_note, decay_trial, on_demo_corpus, write_launch
    spec = LaunchSpec(nnodes=args.nnodes, nproc_per_node=args.nproc_per_node, gpu_memory_gb=args.gpu_memory_gb,
                      device=args.device, parallel=args.parallel, partition=args.partition, account=args.account,
                      time_limit=args.time, round_batch=args.round_batch, python=sys.executable)
    prediction, trial, overrides = {}, None, list(args.overrides or [])
    if args.decay_from and args.prediction and "=" in args.prediction:  # no prediction: the first word is an override
        overrides, args.prediction = [args.prediction] + overrides, None
    if args.decay_from:
        if args.decay_tokens <= 0:
            raise ConfigError("--decay-from needs --decay-tokens (the length of the decay, in tokens)")
        trial = decay_trial(Path(args.decay_from), int(args.decay_tokens), args.data_mixture or [])
    elif args.prediction:
        path = Path(args.prediction)
        prediction = json.loads((path / "prediction.json" if path.is_dir() else path).read_text())
        if "trial" not in prediction:
            raise ConfigError(f"{path} is not a prediction (no 'trial'); make one with windtunnel predict --json")
        shape = (prediction["trial"] or {}).get("model") or {}
        if not all(shape.get(k) for k in ("d_model", "n_layers")):
            raise ConfigError(f"{path}: its trial has no model size (model.d_model and model.n_layers); a launch "
                              f"never falls back to a default model. Make it with windtunnel predict --target NAME")
    else:
        raise ConfigError("give PREDICTION.json (from windtunnel predict --json) or --decay-from CHECKPOINT")
    done = write_launch(prediction, spec, Path(args.out), trial=trial, force=args.force, overrides=tuple(overrides))
    plan = done["plan"]
    print(f"wrote {', '.join(done['files'])} into {args.out}: {plan['micro']} x {plan['accum']} x {spec.world} "
          f"sequences per step, {plan['parallel']}", file=sys.stderr)
    if on_demo_corpus(done["trial"]):
        print(f"data: {data_note(done['trial'])}", file=sys.stderr)
    if not args.run:
        print(done["command"])
        return 0
    script = ["sbatch", str(Path(args.out) / "job.sbatch")] if args.scheduler == "slurm" else \
        ["bash", str(Path(args.out) / "launch.sh")]
    return subprocess.call(script)


VERBOSITY = {"-q": logging.WARNING, "--quiet": logging.WARNING, "-v": logging.DEBUG, "--verbose": logging.DEBUG}


def _set_verbosity(argv: list[str]) -> list[str]:
    """-q/--quiet (warnings only, no progress bars) and -v/--verbose (debug), anywhere on the line of any
    subcommand; passed on to sweep jobs and torchrun ranks through WINDTUNNEL_LOG_LEVEL."""
    level = logging.getLevelName(os.environ.get("WINDTUNNEL_LOG_LEVEL", "INFO"))
    for flag in [a for a in argv if a in VERBOSITY]:
        level = VERBOSITY[flag]
    os.environ["WINDTUNNEL_LOG_LEVEL"] = logging.getLevelName(level)
    logging.getLogger("windtunnel").setLevel(level)
    if not logging.getLogger().handlers:  # Hydra sets up its own in sweep jobs
        logging.basicConfig(format="[windtunnel] %(message)s", stream=sys.stderr)
        for handler in logging.getLogger().handlers:
            handler.set_name("windtunnel")  # `windtunnel sweep` takes it off while Hydra's own is on (no line twice)
    return [a for a in argv if a not in VERBOSITY]


def _interrupted(argv: list) -> int:
    """Ctrl-C: one line and how to go on, not a traceback (exit 130, as a shell reports SIGINT)."""
    again = " ".join(shlex.quote(a) for a in ["windtunnel", *argv])
    print(f"\nwindtunnel {argv[0] if argv else ''}: interrupted. Finished runs are kept and unfinished ones resume "
          f"from their last checkpoint: run the same command again ({again})", file=sys.stderr)
    return 130


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="windtunnel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"windtunnel {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars (any subcommand)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages (any subcommand)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one trial: windtunnel train model=tiny128 optim.lr=0.02 ...")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for windtunnel sweep: model=NAME (a ladder "
                                                 "entry), train=cpu|gpu, section.field=value, lists as key=[a,b]")
    p.add_argument("--out", help="run directory (default runs/train/DATE-MODEL)")
    p.add_argument("--config", help="a recorded trial as JSON (a run's config.json, or trial.json from windtunnel "
                                    "launch); overrides apply on top")
    p.add_argument("--dry-run", action="store_true", help="print the resolved trial as JSON and exit")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("resolution", help="the smallest difference the tunnel resolves: one trial at K seeds (packed)")
    p.add_argument("overrides", nargs="*", help="the trial, as for windtunnel train (train.seed is set per seed)")
    p.add_argument("--seeds", type=int, default=4, help="seeds to train (default 4)")
    p.add_argument("--config", help="a run's config.json (or a bare trial JSON) to measure; overrides apply on top")
    p.add_argument("--out", required=True, help="directory for the seeds' run dirs and resolution.json")
    p.set_defaults(func=cmd_resolution)
    p = sub.add_parser("runs", help="table of the runs under a directory")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.add_argument("--points", action="store_true", help="one row per logged point instead of one per run")
    p.add_argument("--all-columns", action="store_true", help="every hyperparameter column")
    p.add_argument("--wide", action="store_true", help=f"every column under its full name (default: within {WIDTH} "
                                                         f"characters, short headers)")
    p.add_argument("--by-seed", action="store_true", help="one row per run; by default runs that differ only in "
                                                          "train.seed are one row: the loss's mean, std and n over seeds")
    p.add_argument("--where", action="append", help="only the runs where EXPR holds, e.g. '`optim.lr` == 0.01' (the "
                                                    "column language of windtunnel fit; repeatable)")
    p.add_argument("--versus", metavar="EXPR", help="each configuration's paired-seed difference from the one where "
                                                    "EXPR holds (e.g. '`optim.lr` == 0.0039 and `train.batch_size_tokens` "
                                                    "== 16384'): mean, 95%% interval and verdict, better or worse only "
                                                    "where the interval excludes 0")
    p.add_argument("--export", metavar="PATH", help="write the runs as a sweep record (every logged point and status, "
                                                    "gzipped CSV, e.g. sweeps/NAME/runs.csv.gz) that fit reads back")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("fit", help="fit the scaling laws from a run directory or a CSV/Parquet file of runs")
    p.add_argument("source", help="a windtunnel run directory tree, or a .csv/.parquet table of runs")
    p.add_argument("--law", choices=["all", *LAW_NAMES], default="all")
    p.add_argument("--form", choices=["chinchilla", "minicpm"], default="chinchilla", help="loss-law form")
    p.add_argument("--columns", default="", help="canonical=yours, e.g. N=params,D=tokens,loss=val_loss,lr=peak_lr,"
                                                 "bs=batch_tokens,run=run_id,param=parametrization")
    p.add_argument("--bs-unit", choices=["tokens", "sequences"], default="tokens")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sequence when --bs-unit sequences")
    p.add_argument("--n-kind", choices=["non-embedding", "total"], default="non-embedding",
                   help="what N counts; with 'total' a mapped N_emb column is subtracted")
    p.add_argument("--derive", action="append", help="a column from others, NAME=EXPR (e.g. D=C/(6*N); numbers, "
                                                     "columns, + - * / **, log exp sqrt; `odd names` in backticks)")
    p.add_argument("--where", action="append", help="keep the rows where EXPR holds (e.g. 'D > 1e9 and N < 1e10')")
    p.add_argument("--drop-top", type=int, default=0, help="drop the K rows of highest --drop-by (Epoch drops the "
                                                           "5 highest-loss Chinchilla points)")
    p.add_argument("--allow-degenerate", action="store_true", help="exit 0 even when a law is not identified "
                                                                   "(an exponent's interval spans 0, a parameter at its "
                                                                   "bound, an ill-conditioned optimum)")
    p.add_argument("--drop-by", default="loss", help="the column --drop-top ranks (as named in the table)")
    p.add_argument("--boot", type=int, default=200, help="bootstrap resamples for the intervals")
    p.add_argument("--levels", default="", help="the batch-size law's loss window: LO:HI (losses as logged), "
                                                "'per-size' (each size its own, as MiniCPM staggered them); default: "
                                                "the levels every size measures after its warmup and 10%% of its steps")
    p.add_argument("--lr-estimator", choices=["parabola", "band"], default="parabola",
                   help="the LR law from each cell's parabola optimum (default), or Step Law's least squares through "
                        "every run within 0.25%% of its cell's best loss")
    p.add_argument("--profile", choices=["full", "local", "akima"], default="full",
                   help="an isoFLOP budget's optimum: a parabola through its whole profile (Hoffmann, default), "
                        "through the best model and 2 neighbours each side, or Akima's interpolation (Porian)")
    p.add_argument("--critical-error", choices=["log", "linear"], default="log",
                   help="the critical batch's error model: steps fitted in log space (default) or in steps")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="write the fits as JSON here (input of windtunnel predict --fits)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("plot", help="a figure of a sweep: loss curves, iso-loss batch-size curves, the batch-size law, "
                                    "LR U-curves (muP beside SP), WSD branches, the muP coordinate check")
    p.add_argument("source", nargs="?", help="a run directory tree or a record (sweeps/NAME); not for --kind coord")
    p.add_argument("--kind", choices=list(PLOT_KINDS), default="curves")
    p.add_argument("--out", help="PNG (or PDF, SVG) to write; default ./NAME-KIND.png (NAME: the runs folder's name)")
    p.add_argument("--columns", default="", help="as for windtunnel fit")
    p.add_argument("--where", action="append", help="as for windtunnel fit")
    p.add_argument("--boot", type=int, default=200)
    p.add_argument("--dpi", type=int, default=110)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="one self-contained HTML page: runs, fits with intervals, figures, prediction")
    p.add_argument("source", help="a run directory tree or a record (sweeps/NAME)")
    p.add_argument("--out", help="HTML file (default RUNS_DIR/report.html)")
    p.add_argument("--law", choices=["all", *LAW_NAMES], default="all")
    p.add_argument("--prediction", help="prediction.json (or its folder) from windtunnel predict --out")
    p.add_argument("--columns", default="", help="as for windtunnel fit")
    p.add_argument("--where", action="append", help="as for windtunnel fit")
    p.add_argument("--boot", type=int, default=200)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the wind tunnel end to end on this machine: sweeps, fits, a prediction for a 4x "
                                    "larger model, and its regret against LR x2, /2 and batch x2, /2")
    p.add_argument("--out", default="runs/demo", help="where the runs, demo.json and report.html go (re-runs skip "
                                                      "finished trials)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the same story at GPU sizes")
    p.add_argument("--tiny", action="store_true", help="toy sizes: seconds (for tests)")
    p.add_argument("--boot", type=int, default=200)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("predict", help="hyperparameters of a target model from fitted or reference laws")
    p.add_argument("--fits", action="append", help="FITS.json from windtunnel fit --out (repeatable)")
    p.add_argument("--lr", type=float, help="the base LR, given instead of an LR law (e.g. a muP optimum whose LR law "
                                            "does not move with N); any LR law in --fits or --reference is ignored")
    p.add_argument("--reference", choices=["none", "minicpm"], default="none",
                   help="fill missing laws with MiniCPM's published ones (bs = 1.21e9 / L^6.24, lr 0.01)")
    p.add_argument("--target", default="", help="ladder name, e.g. 2.4B, w499m")
    p.add_argument("--shape", default="", help="ModelConfig fields, e.g. d_model=2048,n_layers=24,n_heads=32")
    p.add_argument("--tokens", type=float, default=0)
    p.add_argument("--compute", type=float, default=0, help="FLOP budget C = 6 N D (N non-embedding)")
    p.add_argument("--target-loss", type=float, default=0, help="the loss the batch size is chosen for")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--force", action="store_true", help="predict from laws the data do not identify (or too far "
                                                        "outside them), recording why in the prediction")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="write prediction.json and prediction.md into this folder")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("launch", help="write (and --run) the full-scale run of a prediction: torchrun, sbatch, exports")
    p.add_argument("prediction", nargs="?", help="prediction.json from windtunnel predict (or its --out folder)")
    p.add_argument("overrides", nargs="*", help="overrides of the launched trial, as for train: data=hf "
                                                "data.path=ORG/NAME (the corpus the proxies were measured on), ...")
    p.add_argument("--out", required=True, help="folder for trial.json, launch.sh, job.sbatch, exports, README.md")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--nproc-per-node", type=int, default=1, help="GPUs (processes) per node")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU, sizes the micro-batch")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu rehearses the launch with gloo")
    p.add_argument("--parallel", choices=["auto", "ddp", "fsdp"], default="auto")
    p.add_argument("--scheduler", choices=["local", "slurm"], default="local", help="what --run starts")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--time", default="72:00:00", help="SLURM wall time")
    p.add_argument("--round-batch", action="store_true", help="round the batch to a multiple of the world size")
    p.add_argument("--decay-from", help="a stable-phase checkpoint directory: launch a WSD decay from it instead")
    p.add_argument("--decay-tokens", type=float, default=0, help="length of that decay in tokens")
    p.add_argument("--data-mixture", action="append", help="WEIGHT:SOURCE[:PATH] mixed into the decay's data")
    p.add_argument("--run", action="store_true", help="start it: bash launch.sh, or sbatch job.sbatch")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out (overwrites its launch files)")
    p.set_defaults(func=cmd_launch)
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = _set_verbosity(argv)
    if argv[:1] in (["-sc"], ["--shell-completion"]):  # Hydra's completion script asks `windtunnel -sc query=bash`
        hydra_options = sub.add_parser("sweep")  # its options, for completion (`windtunnel sweep` itself is Hydra's)
        for option in ("--multirun", "--info"):
            hydra_options.add_argument(option, action="store_true")
        hydra_options.add_argument("--cfg", choices=["job", "hydra", "all"])
        words = complete.answer(parser, argv[1:])
        if words is not None:
            print("\n".join(words))
            return 0
        argv = ["sweep", *argv]  # install scripts, and the overrides of sweep / train / resolution: Hydra's
    if argv[:1] == ["sweep"]:  # Hydra parses its own arguments (full override grammar)
        from ..sweep import app
        try:
            return app.main(argv[1:])
        except ConfigError as err:
            print(f"windtunnel sweep: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return _interrupted(argv)
    sub.add_parser("sweep", help="Hydra multirun sweeps: windtunnel sweep -m sweep=batch_size_cpu (see conf/); "
                                 "windtunnel sweep --help for Hydra's help")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"windtunnel {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(argv)
    except OSError as err:  # a write that failed (full disk, file-size limit, read-only folder): one line, no traceback
        print(f"windtunnel {args.command}: error: {err.strerror or err}", file=sys.stderr)
        return 1
