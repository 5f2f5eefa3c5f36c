"""Seeds as a dimension: runs that differ only in train.seed are one configuration measured n times. `windtunnel
runs` shows one row per configuration (the final held-out loss's mean, standard deviation and n over seeds);
--by-seed shows the runs themselves. No torch; pandas when a table is made."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..config import IDENTITY_EXEMPT

if TYPE_CHECKING:
    import pandas as pd

SECTIONS = ("model.", "optim.", "schedule.", "data.", "train.")
NOT_CONFIG = ("train.seed", "train.name")  # what differs between the seeds of one configuration


def config_columns(table: pd.DataFrame) -> list[str]:
    """The columns that make a configuration: the trial's fields that change what a run computes (the runtime ones,
    config.IDENTITY_EXEMPT, aside), but its seed; and the sweep it belongs to."""
    return [c for c in table.columns if (c.startswith(SECTIONS) and c not in IDENTITY_EXEMPT and c not in NOT_CONFIG)
            or c == "sweep"]


def config_key(table: pd.DataFrame) -> pd.Series:
    """One string per row naming its configuration (its config_columns' values joined): the runs of one
    configuration, its seeds, share it."""
    import pandas as pd
    keys = config_columns(table)
    # map(str), not astype(str): pandas 3's string dtype keeps a missing value (a stable run's empty train.init_from)
    # missing through astype(str), and the join fails on it. No rows: no keys (agg over an empty frame's rows
    # returns one value per column, which --versus counted as configurations)
    if not keys or table.empty:
        return pd.Series("", index=table.index, dtype=object)
    return table[keys].map(str).agg("|".join, axis=1)


def run_loss(table: pd.DataFrame) -> pd.Series:
    """Each run's loss to compare: after a decay where it had one (decayed_eval_loss), else its final held-out loss;
    NaN for a run that has not finished."""
    import pandas as pd
    loss = table["final_eval_loss"] if "final_eval_loss" in table else pd.Series(math.nan, index=table.index)
    if "decayed_eval_loss" in table:
        loss = table["decayed_eval_loss"].fillna(loss)
    done = table["status"] == "completed" if "status" in table else True
    return loss.where(done)


def by_config(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of a run table (runs.load_results): its columns as in its first run, then n (runs),
    seeds, loss_mean, loss_std (over the completed runs' losses; NaN below 2), status (every run's, counted) and
    unstable (how many of its runs spiked: `curve.instability`; where the table says)."""
    import pandas as pd
    if table.empty:
        return table
    table = table.assign(_loss=run_loss(table), _key=config_key(table))
    rows = []
    for _, group in table.groupby("_key", sort=False):
        row = group.iloc[0].drop(["_loss", "_key"]).to_dict()
        losses = group["_loss"].dropna()
        statuses = group["status"].value_counts() if "status" in group else {}
        row.update({"n": len(group), "seeds": ",".join(str(s) for s in sorted(group.get("train.seed", [])))
                    if "train.seed" in group else "",
                    "loss_mean": losses.mean() if len(losses) else math.nan,
                    "loss_std": losses.std(ddof=1) if len(losses) > 1 else math.nan,
                    "status": next(iter(statuses.index)) if len(statuses) == 1 else
                    ", ".join(f"{v} {k}" for k, v in statuses.items())})
        if "unstable" in group:
            row["unstable"] = sum(bool(v == 1) for v in group["unstable"])  # None, NaN (not finished): not flagged
        rows.append(row)
    return pd.DataFrame(rows)
