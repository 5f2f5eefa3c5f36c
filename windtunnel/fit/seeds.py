"""Seed statistics: the interval of a difference between two configurations measured at the same seeds, and the
smallest difference a tunnel can resolve. A difference is a finding only where its interval excludes 0."""
import math

import numpy as np
from scipy import stats

BETTER, WORSE, TIED, ONE_SEED = "better", "worse", "tied within noise", "one seed: no interval"


def t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with `dof` degrees of freedom (inf for none)."""
    return float(stats.t.ppf(0.975, dof)) if dof >= 1 else math.inf


def paired_difference(losses: dict, reference: dict) -> dict:
    """Loss minus the reference's, over the seeds both were trained at (paired: a seed fixes the init and the data
    order of both): n, the mean difference, its 95% t interval, and the verdict: "better" (lower loss) or "worse"
    only where the interval excludes 0, else "tied within noise". losses, reference: seed -> final loss."""
    common = sorted(set(losses) & set(reference))
    d = np.array([losses[s] - reference[s] for s in common], dtype=float)
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": math.nan, "interval": [math.nan, math.nan], "verdict": ONE_SEED}
    mean = float(d.mean())
    if n < 2 or not np.isfinite(d).all():
        return {"n": n, "mean": mean, "interval": [math.nan, math.nan], "verdict": ONE_SEED}
    half = t95(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = BETTER if high < 0 else WORSE if low > 0 else TIED
    return {"n": n, "mean": mean, "interval": [low, high], "verdict": verdict}


def resolvable_one_seed(sd_seed: float, seeds_measured: int) -> float:
    """The smallest difference between two single-seed runs (a record's one run per point) called a finding at 95%,
    given a seed standard deviation measured at `seeds_measured` seeds: t95(seeds - 1) x sqrt(2) x sd (the difference
    of two independent runs scatters by sqrt(2) sd; the sd itself is an estimate with seeds - 1 degrees of freedom)."""
    return t95(seeds_measured - 1) * math.sqrt(2) * sd_seed


def resolvable(sd_seed: float, n: int, eval_se: float = 0.0) -> float:
    """The smallest paired difference between two configurations that n seeds each call 'better' at 95%: the half
    width of the paired interval when each seed's difference scatters by sqrt(2) x the seed standard deviation (the
    two configurations' seed noise independent: paired seeds are usually correlated, so this is conservative). With
    eval_se (the standard error of one point's loss over the held-out windows), the difference on the held-out
    distribution rather than on this eval set: the two points' eval errors added (they do not shrink with seeds)."""
    if n < 2:
        return math.inf
    seed_part = 2 * sd_seed ** 2 / n
    return t95(n - 1) * math.sqrt(seed_part) if not eval_se else \
        math.sqrt((t95(n - 1)) ** 2 * seed_part + (1.96 * math.sqrt(2) * eval_se) ** 2)
