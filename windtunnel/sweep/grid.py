"""Grids in Hydra's override grammar: expand them into jobs, and pack jobs that differ only in LR or seed.

Imported by `windtunnel sweep` (to check every job before any trains) and by the windtunnel_grid sweeper
plugin (to launch them), so both see the same jobs in the same order.
"""
import itertools
from collections import OrderedDict
from typing import List, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

from ..config import PACKABLE

PACKS_DIR = "packs"  # a packed job's own Hydra output (its .hydra/ and log), under the sweep dir


def expand(overrides: Sequence[str]) -> List[List[str]]:
    """Every job of a grid: the product of the sweep overrides' values (`a=1,2 b=x,y` -> 4 jobs), as Hydra's
    basic sweeper makes it: a key given twice (a sweep file's params, then the command line) keeps its first
    place and its last values; the last key varies fastest. Each job is a list of `key=value` overrides;
    duplicate points (optim.lr=0.01,0.01) are merged, so no two jobs train into one run dir."""
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        if override.is_sweep_override():
            axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
    jobs = [list(job) for job in itertools.product(*axes.values())]
    return [list(job) for job in dict.fromkeys(tuple(j) for j in jobs)]  # a=1,1 is one point: merged


def is_sweep(text: str) -> bool:
    """True for a sweep override (a=1,2, choice(...), range(...), interval(...))."""
    try:
        return OverridesParser.create().parse_override(text).is_sweep_override()
    except Exception:  # noqa: BLE001 -- a syntax error is reported by the composition that follows
        return False


def pack_jobs(jobs: Sequence[Sequence[str]], k: int, first_pack: int = 0) -> List[List[str]]:
    """Group jobs that differ only in PACKABLE keys into packs of up to k. A pack of two or more becomes one
    job: the shared overrides, train.pack_members=['<member overrides>', ...] and its own output subdir; a
    lone point stays as it was. Order is kept, so packs are stable across runs of the same command (a
    re-run finds the same run dirs)."""
    if k <= 1:
        return [list(job) for job in jobs]
    groups: "OrderedDict[tuple, list[str]]" = OrderedDict()
    for job in jobs:
        shared = tuple(o for o in job if o.partition("=")[0] not in PACKABLE)
        member = " ".join(o for o in job if o.partition("=")[0] in PACKABLE)
        groups.setdefault(shared, []).append(member)
    out, n = [], first_pack
    for shared, members in groups.items():
        for i in range(0, len(members), k):
            chunk = members[i:i + k]
            if len(chunk) == 1:
                out.append([*shared, *filter(None, chunk[0].split(" "))])
                continue
            quoted = ",".join(f"'{m}'" for m in chunk)
            out.append([*shared, f"train.pack_members=[{quoted}]", f"hydra.sweep.subdir={PACKS_DIR}/pack{n}"])
            n += 1
    return out
