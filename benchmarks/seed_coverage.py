"""Does a batch-size law's 95% interval hold the true exponent when the runs carry seed noise? A synthetic sweep
(tests/synthetic.py: MiniCPM's law bs = 1.21e9 / L^6.24, two sizes, six batch sizes each) in which every run needs
exp(s z) times the tokens of the law (z ~ N(0, 1) per run: a seed that is faster or slower all along its curve),
fitted R times with fresh noise: with one seed per point (the bootstrap resamples runs), and with 3 seeds per point
(the bootstrap resamples batch sizes, then the seeds of each: fit/result.py seed_resample). Reported per setting: how
often the interval misses b = 6.24, the median interval width, and the seconds per fit.

    python benchmarks/seed_coverage.py --replicates 200 --out benchmarks/results/seed_coverage_cpu.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import synthetic  # noqa: E402
from windtunnel.fit import batch_size_law  # noqa: E402


def coverage(seeds: int, replicates: int, seed_noise: float, n_boot: int) -> dict:
    sizes = [(n, e, budget * 3, grid) for n, e, budget, grid in synthetic.SIZES[:2]]  # every run reaches every level
    misses, widths, start = 0, [], time.time()
    for r in range(replicates):
        runs = synthetic.batch_size_runs(seed=1000 + r, seeds=seeds, seed_noise=seed_noise, sizes=sizes, n_evals=20)
        fit = batch_size_law(runs, n_boot=n_boot, seed=r, levels="per-size", n_levels=6)
        low, high = fit.intervals["b"]
        misses += not (low is not None and low <= synthetic.B_BS <= high)
        widths.append(high - low if low is not None else float("inf"))
    return {"seeds": seeds, "replicates": replicates, "seed_noise": seed_noise, "n_boot": n_boot,
            "miss_rate": misses / replicates, "median_width": float(np.median(widths)),
            "seconds_per_fit": (time.time() - start) / replicates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed-noise", type=float, default=0.15)
    parser.add_argument("--boot", type=int, default=60)
    parser.add_argument("--seeds", default="1,3")
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [coverage(int(s), args.replicates, args.seed_noise, args.boot) for s in args.seeds.split(",")]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
