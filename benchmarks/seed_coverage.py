"""Does a batch-size law's 95% interval hold the true exponent when the runs carry seed noise? A synthetic sweep
(tests/synthetic.py: MiniCPM's law bs = 1.21e9 / L^6.24, two sizes, six batch sizes each) in which every run needs
exp(s z) times the tokens of the law (z ~ N(0, 1) per run: a seed that is faster or slower all along its curve),
fitted R times with fresh noise. The bootstrap behind the interval, per setting:
  one seed     one seed per point; the bootstrap resamples the runs (= the configurations)
  flat         3 seeds per point; every run resampled as if it were its own configuration (what the fitter did
               before seeds were a dimension)
  seeds only   3 seeds per point; the batch sizes kept, only the seeds within each resampled
  clusters     3 seeds per point; the batch sizes resampled, each with all its seeds
  two-stage    3 seeds per point; the batch sizes resampled, then the seeds of each (fit/result.py seed_resample:
               what the fitter does)
Reported per setting: how often the interval misses b = 6.24 (with its binomial 95% interval), the median interval
width, and the seconds per fit. --config-noise adds a deviation from the law per configuration (shared by its seeds,
as the jagged U of sweeps/batch_size): the case where treating seeds as configurations under-covers. tests/test_measurements.py runs the same function.

    OPENBLAS_NUM_THREADS=1 python benchmarks/seed_coverage.py --replicates 200 --out benchmarks/results/seed_coverage_cpu.json
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import synthetic  # noqa: E402
from windtunnel.fit import batch as batch_fit  # noqa: E402
from windtunnel.fit.result import NotFittable, seed_resample  # noqa: E402

SETTINGS = {"one seed": 1, "flat": 3, "seeds only": 3, "clusters": 3, "two-stage": 3}


def _flat(cells, rng):  # every run its own configuration
    return rng.integers(0, len(cells), len(cells))


def _seeds_only(cells, rng):  # the configurations kept, the seeds within each resampled
    cells = np.asarray(cells)
    return np.concatenate([rng.choice(np.flatnonzero(cells == c), int((cells == c).sum())) for c in np.unique(cells)])


def _clusters(cells, rng):  # the configurations resampled, each with all its seeds
    cells = np.asarray(cells)
    groups = [np.flatnonzero(cells == c) for c in np.unique(cells)]
    return np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])


SCHEMES = {"one seed": seed_resample, "flat": _flat, "seeds only": _seeds_only, "clusters": _clusters,
           "two-stage": seed_resample}


def coverage(setting: str, replicates: int, seed_noise: float = 0.15, n_boot: int = 60, n_levels: int = 6,
             config_noise: float = 0.0) -> dict:
    sizes = [(n, e, budget * 3, grid) for n, e, budget, grid in synthetic.SIZES[:2]]  # every run reaches every level
    misses, refused, widths, start = 0, 0, [], time.time()
    real = batch_fit.seed_resample
    batch_fit.seed_resample = SCHEMES[setting]
    try:
        for r in range(replicates):
            runs = synthetic.batch_size_runs(seed=1000 + r, seeds=SETTINGS[setting], seed_noise=seed_noise,
                                             sizes=sizes, n_evals=20, config_noise=config_noise)
            try:
                fit = batch_fit.batch_size_law(runs, n_boot=n_boot, seed=r, levels="per-size", n_levels=n_levels)
            except NotFittable:  # the configuration noise left too few interior optima: no interval to score
                refused += 1
                continue
            low, high = fit.intervals["b"]
            misses += not (low is not None and low <= synthetic.B_BS <= high)
            widths.append(high - low if low is not None else float("inf"))
    finally:
        batch_fit.seed_resample = real
    scored = replicates - refused
    rate = misses / scored
    # Wilson's score interval (it stays honest at 0 misses, where the normal approximation collapses to a point)
    z, n = 1.96, scored
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"setting": setting, "seeds": SETTINGS[setting], "replicates": replicates, "seed_noise": seed_noise, "config_noise": config_noise,
            "n_boot": n_boot, "refused": refused, "misses": misses, "miss_rate": rate, "miss_rate_interval": [max(0.0, centre - half),
                                                                                          min(1.0, centre + half)],
            "median_width": float(np.median(widths)), "seconds_per_fit": (time.time() - start) / replicates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed-noise", type=float, default=0.15)
    parser.add_argument("--config-noise", default="0,0.1", help="comma-separated values, each a run of every setting")
    parser.add_argument("--boot", type=int, default=60)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = []
    for noise in (float(v) for v in args.config_noise.split(",")):
        for setting in args.settings.split(","):
            rows.append(coverage(setting, args.replicates, args.seed_noise, args.boot, config_noise=noise))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
