"""Synthetic logged runs with known laws, shaped like real wind-tunnel runs (for the fit tests)."""
import math

import numpy as np
import pandas as pd

A_BS, B_BS = 1.21e9, 6.24  # MiniCPM: bs_opt(L) = 1.21e9 / L^6.24 tokens

# (N, loss floor E, token budget, batch grid in tokens): MiniCPM's three sizes and grids (minicpm.md 2.1)
SIZES = [
    (9e6, 3.9, 1.5e9, [4, 9, 18, 36, 72, 144]),
    (36e6, 3.3, 6e9, [9, 18, 36, 72, 144, 288]),
    (166e6, 2.8, 2.4e10, [32, 64, 128, 256, 512, 1024]),
]


def tokens_needed(bs, L, E, A=250.0, beta=0.3, k=0.1):
    """Tokens a run at batch bs needs to reach loss L: the optimal-batch curve D*(L) = (A / (L - E))^(1/beta),
    inflated by exp(k ln^2(bs / bs_opt(L))), a parabola in log-log with its minimum at bs_opt(L)."""
    d_star = (A / (L - E)) ** (1 / beta)
    return d_star * np.exp(k * np.log(bs / (A_BS / L ** B_BS)) ** 2)


def batch_size_runs(noise=0.002, seed=0, n_evals=30, l_init=10.0, steps=None, first_eval=None, seeds=1,
                    seed_noise=0.0, sizes=SIZES, config_noise=0.0) -> pd.DataFrame:
    """One row per held-out eval of 18 runs (3 sizes x 6 batch sizes) x `seeds`, canonical columns. Each run trains
    its size's token budget, or `steps` optimizer steps (then a larger batch sees more tokens) if given; evals
    are log-spaced from one step, or from `first_eval` of the run's tokens (a sparse eval schedule). Seed noise:
    each run needs exp(seed_noise z) times the tokens (z ~ N(0, 1) per run: a seed is faster or slower all along
    its curve, as a real one is), beside the independent eval noise of each point. Configuration noise: each
    (size, batch) needs exp(config_noise u) times the tokens, u ~ N(0, 1) shared by its seeds (a configuration off
    the law in a way more seeds do not average away, as the jagged U of sweeps/batch_size)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, E, budget, grid in sizes:
        levels = np.linspace(E + 1e-3, l_init, 20000)  # ascending loss
        offsets = {m: math.exp(config_noise * rng.standard_normal()) if config_noise else 1.0 for m in grid}
        for mult, s in ((m, s) for m in grid for s in range(seeds)):
            bs = mult * 4096
            # tokens to first reach each loss: a run passes every higher loss first, so the need of a loss is
            # the largest need of any loss above it (non-increasing in the loss)
            reach = np.maximum.accumulate(tokens_needed(bs, levels, E)[::-1])[::-1] * offsets[mult]
            if seed_noise:
                reach = reach * math.exp(seed_noise * rng.standard_normal())
            total = budget if steps is None else steps * bs
            run = f"N{n:.0e}-bs{bs}" + (f"-s{s}" if seeds > 1 else "")
            rows.append({"run": run, "N": n, "bs": bs, "seed": s, "tokens": 0.0, "loss": l_init})
            for t in np.geomspace(bs if first_eval is None else first_eval * total, total, n_evals):
                # the lowest loss reached by t tokens (levels above the grid: still at the initial loss)
                i = np.searchsorted(-reach, -t)
                loss = float(levels[i]) if i < len(levels) else l_init
                rows.append({"run": run, "N": n, "bs": bs, "seed": s, "tokens": t,
                             "loss": loss * math.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)
