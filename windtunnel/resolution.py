"""`windtunnel resolution`: before a grid is spent, the smallest difference the tunnel can resolve. One trial is
trained at K seeds (one packed model where the trial allows it); from their final held-out losses come the seed
standard deviation, beside the eval set's standard error, and from both the smallest paired difference that n seeds
call a finding at 95% (fit/seeds.py). Written to OUT/resolution.json; every experiment's record quotes it."""
import json
import math
import os
from pathlib import Path

from .compose import compose_record
from .config import TrialConfig, override, to_dict
from .fit.seeds import resolvable, resolvable_one_seed
from .train import run_trials

SEED_COUNTS = (2, 3, 4, 6, 8)


def measure(trial: TrialConfig, out, seeds: int = 4, counts=SEED_COUNTS) -> dict:
    """Train `trial` at seeds 0..seeds-1 into OUT/seed{S} (finished ones are kept) and return the resolution record:
    per-seed losses, their mean and standard deviation, the eval standard error, and the smallest resolvable paired
    difference for each n in `counts` (on this eval set, and on the held-out distribution)."""
    if seeds < 2:
        raise ValueError(f"--seeds {seeds}: a spread needs 2 or more seeds (4 give a usable standard deviation)")
    out = Path(out)
    cfgs = [compose_record(trial, [override("train.seed", s)]) for s in range(seeds)]
    packable = not (trial.train.branch_at_n or trial.train.init_from or trial.train.save_final)
    dirs = [out / f"seed{s}" for s in range(seeds)]
    metas = [{"sweep": "resolution", "overrides": f"train.seed={s}"} for s in range(seeds)]
    results = run_trials(cfgs, dirs, metas) if packable else \
        [run_trials([c], [d], [m])[0] for c, d, m in zip(cfgs, dirs, metas)]
    losses = [math.nan if r.compared_loss is None else float(r.compared_loss) for r in results]
    if any(not math.isfinite(x) for x in losses):
        bad = [f"seed {s}: {r.status.value} {r.error or ''}".strip() for s, r in enumerate(results)
               if r.status.value != "completed"]
        raise RuntimeError(f"not every seed completed ({'; '.join(bad)}); a resolution needs every seed's final loss")
    ses = [r.final_eval_se for r in results if r.final_eval_se is not None]
    mean = sum(losses) / seeds
    sd = math.sqrt(sum((x - mean) ** 2 for x in losses) / (seeds - 1))
    se = sum(ses) / len(ses) if ses else 0.0
    record = {"trial": to_dict(trial), "seeds": list(range(seeds)), "losses": losses, "mean": mean, "sd_seed": sd,
              "eval_se": se, "packed": packable and seeds > 1, "resolvable_one_seed": resolvable_one_seed(sd, seeds),
              "resolvable": {str(n): resolvable(sd, n) for n in counts},
              "resolvable_on_distribution": {str(n): resolvable(sd, n, se) for n in counts}}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "resolution.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / "resolution.json")
    return record


def summary(record: dict) -> str:
    """The resolution as a few lines of text (what `windtunnel resolution` prints)."""
    lines = [f"final held-out loss over {len(record['losses'])} seeds: {record['mean']:.4f} "
             f"(seed sd {record['sd_seed']:.4f}; eval standard error {record['eval_se']:.4f})",
             "seeds per point | smallest paired difference called a finding (95%): on this eval set | on the "
             "held-out distribution"]
    one = record.get("resolvable_one_seed")
    if one is not None:  # resolution.json written before this line existed lacks it
        lines.append(f"{1:>15} | {one:.4f} | (two single-seed runs, as a one-seed record compares them)")
    for n, value in record["resolvable"].items():
        lines.append(f"{n:>15} | {value:.4f} | {record['resolvable_on_distribution'][n]:.4f}")
    return "\n".join(lines)
