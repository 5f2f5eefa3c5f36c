"""One way to build a trial: `windtunnel train ARGS` and `windtunnel sweep ARGS` resolve the same TrialConfig
from the same overrides (lists, group choices, exponent integers included), because both go through
windtunnel.compose; the sweep's record is compared with what `train --dry-run` resolves."""
import json
import random

import pytest

from conftest import cli
from windtunnel.compose import compose, normalize
from windtunnel.config import to_dict
from windtunnel.sizing import resolve_tokens

BASE = ["train=cpu", "train.seq_len=64", "train.micro_batch_size=8", "train.batch_size_tokens=1024",
        "train.eval_points=3", "train.eval_tokens=1024", "train.final_eval_tokens=0", "data.max_bytes=1e6"]
POOL = {  # each key's alternatives; a sample picks one per key
    "model": ["model=tiny32", "model=tiny64", "model=tiny32 model.parametrization=sp"],
    "optim": ["optim.lr=0.01", "optim.lr=2e-2 optim.weight_decay=0.0", "optim.beta2=0.99"],
    "schedule": ["schedule=wsd", "schedule=cosine", "schedule=constant schedule.warmup_tokens=2048"],
    "tokens": ["train.total_tokens=8192", "train.total_tokens=1e4", "train.total_tokens=12_288"],
    "lists": ["", "train.branch_at_n=[0.5,1]"],
}


def samples(n: int, seed: int = 0) -> list[list[str]]:
    rng, out = random.Random(seed), []
    while len(out) < n:
        picks = [rng.choice(v) for v in POOL.values()]
        if "branch_at_n" in picks[-1] and not picks[2].startswith("schedule=wsd"):
            continue  # branches decay with WSD (refused otherwise, by both commands alike)
        out.append(BASE + " ".join(picks).split())
    return out


def test_normalize_turns_integral_exponents_into_ints_for_int_fields_only():
    assert normalize(["train.total_tokens=1e6", "train.batch_size_tokens=1024,2e3", "optim.lr=1e-2",
                      "train.total_tokens=1.5e0", "model=tiny32"]) == [
        "train.total_tokens=1000000", "train.batch_size_tokens=1024,2000", "optim.lr=1e-2",
        "train.total_tokens=1.5e0", "model=tiny32"]


@pytest.mark.slow
def test_train_and_sweep_resolve_the_same_trial(tmp_path):
    cases = samples(4)
    assert any("train.branch_at_n=[0.5,1]" in c for c in cases)  # the sample covers lists
    for i, overrides in enumerate(cases):
        dry = json.loads(cli("train", *overrides, "--dry-run", cwd=tmp_path, check=True).stdout)
        assert dry == json.loads(json.dumps(to_dict(resolve_tokens(compose(overrides)))))
        cli("sweep", *overrides, f"hydra.run.dir=runs/case{i}", cwd=tmp_path, check=True).stdout
        recorded = json.loads((tmp_path / "runs" / f"case{i}" / "config.json").read_text())["trial"]
        assert recorded["model"].pop("vocab_size") == 256  # filled in from the byte tokenizer when it trains
        dry["model"].pop("vocab_size")
        assert recorded == dry, overrides
