"""Sudden drops of a run's held-out loss: a learning transition inside the runs a law is read from.

A loss curve that follows a power law in tokens falls by a slowly changing amount per doubling of tokens. Source-code
corpora break that: 8-layer proxies on installed_code_bpe drop by ~1.3 nats between 12M and 24M tokens when they
learn to copy from their context (sweeps/loss_law_8l: the loss late in a window falls 2 nats, early in it 0.5), and
past the drop the optimal batch stops following the law fitted before it (sweeps/batch_size_8l/lr0.0039_64Mtok).
A law whose loss levels span such a drop mixes two regimes; one read above it does not carry below it. This module
finds the drops (no scipy, no torch) so the fitters can say so."""
from __future__ import annotations

import numpy as np

MIN_DROP = 0.5  # nats within one doubling of tokens: ~10 standard errors of a 128-window eval
RATIO = 2.0  # times the fall per doubling over the doubling before it (a power law's fall per doubling shrinks)


def sudden_drop(tokens: np.ndarray, loss: np.ndarray, early_frac: float = 0.1) -> dict | None:
    """The largest fall of one run's held-out loss within one doubling of tokens, after the first early_frac of its
    tokens (the initial transient), where it exceeds MIN_DROP nats and RATIO x the fall per doubling over the
    doubling before it; else None. tokens, loss: (n,) held-out evals of one run. Returns {"drop", "before", "after"
    (losses), "start", "end" (tokens), "previous" (the fall per doubling before it)}."""
    order = np.argsort(tokens)
    t, y = np.asarray(tokens, float)[order], np.asarray(loss, float)[order]
    keep = (t > 0) & np.isfinite(y)
    t, y = t[keep], y[keep]
    best = None
    for i in range(1, len(t) - 1):
        if t[i] < early_frac * t[-1]:  # a drop starts after the transient; the doubling before it may lie in it
            continue
        j = int(np.searchsorted(t, 2 * t[i], side="right")) - 1  # the last eval within one doubling after t[i]
        p = int(np.searchsorted(t, t[i] / 2, side="left"))  # the first eval within one doubling before it
        if j <= i or p >= i:
            continue
        k = i + 1 + int(np.argmin(y[i + 1:j + 1]))
        drop, previous = float(y[i] - y[k]), float((y[p] - y[i]) / np.log2(t[i] / t[p]))
        if drop >= MIN_DROP and drop >= RATIO * max(previous, 0.0) and (best is None or drop > best["drop"]):
            best = {"drop": drop, "before": float(y[i]), "after": float(y[k]), "start": float(t[i]),
                    "end": float(t[k]), "previous": previous}
    return best


def transition_notes(curves: dict, window: tuple, early_frac: float = 0.1, law: str = "batch-size") -> list[str]:
    """The diagnostic lines for the runs `curves` (run -> (tokens, loss), their held-out evals) of a fit whose loss
    levels (batch-size law) or points (loss law) lie between window[0] and window[1]: how many runs drop suddenly,
    from and to which losses, and what that means for the window (it spans the drop, lies above it or below it)."""
    drops = {r: d for r, (t, y) in curves.items() if (d := sudden_drop(t, y, early_frac))}
    if not drops:
        return []
    lows = [d["after"] for d in drops.values()]
    highs = [d["before"] for d in drops.values()]
    sizes = sorted(d["drop"] for d in drops.values())
    at = f"from L {min(highs):.3g}-{max(highs):.3g} to {min(lows):.3g}-{max(lows):.3g}"
    lo, hi = window
    what, s = ("the loss window", "s") if law == "batch-size" else ("the fitted points", "")  # (subject, verb ending)
    spans = ("levels on either side are two regimes (fit each with --levels)" if law == "batch-size" else
             "points on either side are two regimes that one smooth law cannot join")
    where = (f"{what} span{s} it: {spans}" if lo < max(highs) and hi > min(lows) else
             f"{what} lie{s} above it: the law does not carry past the drop" if lo >= max(highs) else
             f"{what} lie{s} below it")
    return [f"{len(drops)} of {len(curves)} runs drop by {sizes[0]:.2g}-{sizes[-1]:.2g} nats within one doubling of "
            f"tokens ({at}; {RATIO:g}x and more their fall over the doubling before): a learning transition (on source "
            f"code, in-context copying: sweeps/loss_law_8l); {where}"]
