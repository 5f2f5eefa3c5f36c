"""The proxies' loss law past the in-context-copying cliff: its points, from two committed records.

Why: the loss law of the branches (sweeps/loss_law_8l) is not identified because the cliff (-1.3 nats within a
doubling of tokens) sits inside it; the prediction check's target trains far past it. Every WSD end of the loss
law's protocol (lr 2^-8, a 16,384-token batch, a 10% exponential decay) that ended past the cliff is a point of the
post-cliff law: the decay branches of sweeps/loss_law_8l and the 16k runs of sweeps/batch_size_8l/lr0.0039_64Mtok
(67.1M tokens, 2-3 seeds) whose held-out loss ends below 3.0 nats (every end before the cliff is above 3.69, every
one after it below 2.52). Usage, from the repo root:
    python sweeps/loss_law_8l/post_cliff/points.py > sweeps/loss_law_8l/post_cliff/points.csv
    windtunnel fit sweeps/loss_law_8l/post_cliff/points.csv --law loss --allow-degenerate \
        --out sweeps/loss_law_8l/post_cliff/fits.json
"""
import sys
from pathlib import Path

import pandas as pd

from windtunnel.runs import load_record, record_in

SWEEPS = Path(__file__).resolve().parents[2]
PAST_THE_CLIFF = 3.0  # nats: the gap between the ends before the cliff (>= 3.70) and after it (<= 2.52)


def points() -> pd.DataFrame:
    """One row per run end past the cliff: N (non-embedding), D (tokens trained, the branch's own), loss (held-out,
    2,048 windows), seed, and the record and run it comes from. loss_law_8l's stable runs end undecayed (their
    branches are the points); the 64M-token runs are WSD runs decayed at their end."""
    rows = []
    for record, batch in (("loss_law_8l", None), ("batch_size_8l/lr0.0039_64Mtok", 16384)):
        runs, _ = load_record(record_in(SWEEPS / record))  # one row per run
        if batch is None:
            runs = runs[runs["branch_of"].notna()]
        else:
            runs = runs[runs["train.batch_size_tokens"] == batch]
        for _, end in runs[runs["final_eval_loss"] < PAST_THE_CLIFF].iterrows():
            rows.append(dict(N=int(end["N"]), D=int(end["tokens"]), loss=round(end["final_eval_loss"], 6),
                             seed=int(end["train.seed"]), record=record, run=end["run_dir"]))
    return pd.DataFrame(rows).sort_values(["N", "D", "seed"]).reset_index(drop=True)


if __name__ == "__main__":
    points().to_csv(sys.stdout, index=False)
