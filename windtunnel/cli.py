"""The `windtunnel` command: thin argparse subcommands over the library."""
import argparse
import json
import sys
import time
from pathlib import Path

from . import sizing
from .config import ConfigError, TrialConfig, apply_override
from .runs import load_results, load_runs

RESULT_COLUMNS = ["name", "status", "model.name", "model.parametrization", "N", "optim.lr",
                  "train.batch_size_tokens", "tokens", "final_eval_loss", "best_eval_loss", "final_eval_bpb",
                  "tokens_per_s", "run_dir"]


def trial_from_overrides(overrides: list[str]) -> TrialConfig:
    """`model=NAME` picks a ladder preset (applied first); every other item is a dotted override."""
    cfg = TrialConfig()
    cfg.model = sizing.preset(cfg.model.name)
    for item in overrides:
        if item.startswith("model="):
            cfg.model = sizing.preset(item.split("=", 1)[1])
    for item in overrides:
        if not item.startswith("model="):
            apply_override(cfg, item)
    return cfg.validate()


def cmd_train(args) -> int:
    from .train import run_trial  # torch only when training
    cfg = trial_from_overrides(args.overrides)
    out = Path(args.out or f"runs/train/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.name}")
    print(f"training {cfg.model.name} ({cfg.model.parametrization}, N={sizing.n_params(cfg.model):,}) for "
          f"{cfg.train.total_tokens:,} tokens into {out}", file=sys.stderr)
    result = run_trial(cfg, out)
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=1))
    return 0 if result["status"] in ("completed", "diverged", "pruned") else 1


def cmd_runs(args) -> int:
    table = load_runs(args.dir) if args.points else load_results(args.dir)
    if table.empty:
        print(f"no runs under {args.dir}", file=sys.stderr)
        return 1
    if not args.points and not args.all_columns:
        table = table[[c for c in RESULT_COLUMNS if c in table.columns]]
    if args.json:
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        print(json.dumps(records, indent=1, default=str))  # full float precision, NaN as null
    else:
        import pandas as pd
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
            print(table.to_string(index=False))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="windtunnel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one trial: windtunnel train model=tiny128 optim.lr=0.02 ...")
    p.add_argument("overrides", nargs="*", help="model=NAME (a ladder preset) and section.field=value items")
    p.add_argument("--out", help="run directory (default runs/train/DATE-MODEL)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("runs", help="table of the runs under a directory")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.add_argument("--points", action="store_true", help="one row per logged point instead of one per run")
    p.add_argument("--all-columns", action="store_true", help="every hyperparameter column")
    p.set_defaults(func=cmd_runs)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"windtunnel {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
