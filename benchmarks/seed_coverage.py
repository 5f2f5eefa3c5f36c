"""Does a batch-size law's 95% interval hold the true exponent when the runs carry seed noise? A synthetic sweep
(tests/synthetic.py: MiniCPM's law bs = 1.21e9 / L^6.24, two sizes, six batch sizes each) in which every run needs
exp(s z) times the tokens of the law (z ~ N(0, 1) per run: a seed that is faster or slower all along its curve),
fitted R times with fresh noise. The bootstrap behind the interval, per setting:
  one seed     one seed per point; the bootstrap resamples the runs (= the configurations)
  flat         3 seeds per point; every run resampled as if it were its own configuration (what the fitter did
               before seeds were a dimension)
  seeds only   3 seeds per point; the batch sizes kept, only the seeds within each resampled
  two-stage    3 seeds per point; the batch sizes resampled, then the seeds of each (fit/result.py seed_resample:
               what the fitter does)
Reported per setting: how often the interval misses b = 6.24 (with its binomial 95% interval), the median interval
width, and the seconds per fit. tests/test_measurements.py runs the same function.

    python benchmarks/seed_coverage.py --replicates 200 --out benchmarks/results/seed_coverage_cpu.json
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
from windtunnel.fit.result import seed_resample  # noqa: E402

SETTINGS = {"one seed": 1, "flat": 3, "seeds only": 3, "two-stage": 3}


def _flat(cells, rng):  # every run its own configuration
    return rng.integers(0, len(cells), len(cells))


def _seeds_only(cells, rng):  # the configurations kept, the seeds within each resampled
    cells = np.asarray(cells)
    return np.concatenate([rng.choice(np.flatnonzero(cells == c), int((cells == c).sum())) for c in np.unique(cells)])


SCHEMES = {"one seed": seed_resample, "flat": _flat, "seeds only": _seeds_only, "two-stage": seed_resample}


def coverage(setting: str, replicates: int, seed_noise: float = 0.15, n_boot: int = 60, n_levels: int = 6) -> dict:
    sizes = [(n, e, budget * 3, grid) for n, e, budget, grid in synthetic.SIZES[:2]]  # every run reaches every level
    misses, widths, start = 0, [], time.time()
    real = batch_fit.seed_resample
    batch_fit.seed_resample = SCHEMES[setting]
    try:
        for r in range(replicates):
            runs = synthetic.batch_size_runs(seed=1000 + r, seeds=SETTINGS[setting], seed_noise=seed_noise,
                                             sizes=sizes, n_evals=20)
            fit = batch_fit.batch_size_law(runs, n_boot=n_boot, seed=r, levels="per-size", n_levels=n_levels)
            low, high = fit.intervals["b"]
            misses += not (low is not None and low <= synthetic.B_BS <= high)
            widths.append(high - low if low is not None else float("inf"))
    finally:
        batch_fit.seed_resample = real
    rate = misses / replicates
    half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-12) / replicates)
    return {"setting": setting, "seeds": SETTINGS[setting], "replicates": replicates, "seed_noise": seed_noise,
            "n_boot": n_boot, "misses": misses, "miss_rate": rate, "miss_rate_interval": [max(0.0, rate - half),
                                                                                          min(1.0, rate + half)],
            "median_width": float(np.median(widths)), "seconds_per_fit": (time.time() - start) / replicates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed-noise", type=float, default=0.15)
    parser.add_argument("--boot", type=int, default=60)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [coverage(s, args.replicates, args.seed_noise, args.boot) for s in args.settings.split(",")]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
