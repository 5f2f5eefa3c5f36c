"""What a run's logged curve says beyond its final loss: that it overfitted (held-out loss up, train loss down) or
spiked (both up). Read from metrics.jsonl rows (step, eval_loss, train_loss); no pandas, no torch."""
from __future__ import annotations

import statistics
from typing import Optional


def overfitting(metrics: list[dict], margin: float) -> Optional[float]:
    """The rise (final / best held-out loss - 1) of a run whose held-out loss ended more than `margin` above
    its best while its train loss went on falling (it memorised its data); None for any other curve."""
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    train = [(m["step"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    if len(evals) < 3 or not train:
        return None
    best_step, best = min(evals, key=lambda e: e[1])
    final = evals[-1][1]
    at_best = [loss for step, loss in train if step <= best_step] or [train[0][1]]
    return final / best - 1 if final > best * (1 + margin) and train[-1][1] < at_best[-1] else None


def instability(metrics: list[dict], margin: float) -> Optional[float]:
    """The largest rise (held-out loss / its best so far - 1) of a run whose held-out loss climbed more than `margin`
    above its best while its train loss climbed too: a loss spike that the divergence rule (a non-finite loss, or
    train.diverge_factor x the first) does not catch, e.g. an LR at the stability edge (sweeps/prediction_8l: LR x2
    rose from 3.71 to 4.45 nats). The train losses compared are medians (one batch's loss is noisy) over the two eval
    intervals that end at the held-out best and at the top of the rise: the train loss where each held-out loss was
    measured. (Not "as many rows before the best as after it": when the best comes early, those reach back into the
    first steps' high losses and hide the spike, as they hid LR 0.01's 4.43 -> 5.26 there.) None for any other curve
    (a held-out rise with the train loss falling is overfitting: `overfitting`)."""
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    train = [(m["step"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    if not evals:
        return None
    worst, best_at, top_at = 0.0, None, None  # indices into evals
    at, best = 0, evals[0][1]  # the running best
    for i, (_, loss) in enumerate(evals):
        if loss < best:
            at, best = i, loss
        elif loss / best - 1 > worst:
            worst, best_at, top_at = loss / best - 1, at, i
    if worst <= margin:
        return None

    def interval(i: int) -> list[float]:  # train losses logged in (the eval before i, eval i]
        start = evals[i - 1][0] if i > 0 else -1
        return [loss for step, loss in train if start < step <= evals[i][0]]

    before, after = interval(best_at), interval(top_at)
    if not after or not before:
        return None
    return worst if statistics.median(after) > statistics.median(before) else None
