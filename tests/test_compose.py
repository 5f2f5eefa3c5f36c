"""One way to build a trial: `windtunnel train ARGS` and `windtunnel sweep ARGS` resolve the same TrialConfig
from the same overrides (lists, group choices, exponent integers included), because both go through
windtunnel.compose; the sweep's record is compared with what `train --dry-run` resolves."""
import json
import random
import re

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


def test_value_overrides_on_a_cached_base_compose_as_hydra_does():
    """compose() applies plain value overrides (optim.lr=0.01) on a copy of the rest composed once: the same tree as
    Hydra's own composition of every override (sweep files, group choices, lists, exponent integers, a value set
    by a sweep file and again on the command line), every bad value refused with Hydra's own message, and twelve
    trials of one shape reuse one base."""
    from omegaconf import OmegaConf

    from windtunnel import compose as compose_module
    from windtunnel.config import ConfigError
    cases = samples(12, seed=5) + [
        ["sweep=batch_size_cpu", "train.batch_size_tokens=2048", "model.d_model=48"],
        ["sweep=lr_search_cpu", "optim.lr=0.003", "train.branch_at_n=[1.0]"],
        ["model=w9m", "train=gpu", "data=stdlib_site_bpe", "train.tokens_per_param=20", "schedule.decay_frac=0.2"],
        ["model=tiny32", "optim.lr=1e-2", "train.seed=7", "train.device=cpu", "train.compile=false"]]
    for overrides in cases:
        fast = compose_module._compose_on_a_base(normalize(overrides))
        slow = compose_module._compose("config", normalize(overrides))
        assert fast is not None, overrides
        assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(slow, resolve=True), overrides
    compose_module._BASES.clear()
    trials = [compose(["model=tiny32", f"optim.lr={0.001 * k}", f"train.seed={k}"]) for k in range(1, 13)]
    assert len(compose_module._BASES) == 1 and [t.train.seed for t in trials] == list(range(1, 13))
    assert trials[4].optim.lr == 0.005 and trials[4].model.name == "tiny32"
    for bad, says in [("train.total_tokens=1.5", "train.total_tokens=1.5: Value '1.5' of type 'float' could not be "
                       "converted to Integer"), ("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
                      ("train.compile=maybe", "train.compile=maybe")]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            compose(["model=tiny32", bad])
