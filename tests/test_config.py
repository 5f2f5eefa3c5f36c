"""Validation errors name the field and the fix, before any compute."""
import pytest

from windtunnel.config import ConfigError, TrialConfig, apply_override, from_dict, to_dict
from windtunnel.cli import trial_from_overrides


@pytest.mark.parametrize("override,match", [
    ("train.batch_size_tokens=1000", r"train.batch_size_tokens=1000 is not divisible by train.seq_len x "
                                     r"train.micro_batch_size = 128 x 16 = 2048; use a multiple of 2048"),
    ("model.n_heads=3", r"model.n_heads=3 does not divide model.d_model=128"),
    ("model.n_kv_heads=3", r"model.n_kv_heads=3 must divide the 4 query heads"),
    ("schedule.kind=step", r"schedule.kind='step' is unknown; use one of wsd, cosine, constant"),
    ("schedule.decay_kind=poly", r"schedule.decay_kind='poly' is unknown"),
    ("model.parametrization=ntk", r"model.parametrization='ntk' is unknown; use one of mup, sp"),
    ("data.source=text_dir", r"data.source='text_dir' needs data.path"),
    ("schedule.decay_frac=0.995", r"exceed train.total_tokens"),
    ("train.total_tokens=100", r"less than one batch"),
    ("optim.lr=-1", r"optim.lr=-1.0 must be a positive number"),
    ("train.seq_len=8192", r"train.seq_len=8192 exceeds model.max_seq_len=1024"),
])
def test_bad_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        trial_from_overrides([override])


def test_override_parsing():
    cfg = trial_from_overrides(["model=tiny256", "train.total_tokens=2e6", "optim.lr=0.02", "train.compile=true",
                                "model.parametrization=sp"])
    assert (cfg.model.d_model, cfg.model.name, cfg.train.total_tokens, cfg.optim.lr) == (256, "tiny256", 2_000_000, 0.02)
    assert cfg.train.compile is True and cfg.model.parametrization == "sp"
    for bad, match in [("optim.lrr=1", "unknown config key 'optim.lrr'"), ("optim=1", "optim is a section"),
                       ("train.total_tokens=1.5", "not a valid int"), ("lr", "must look like section.field=value"),
                       ("train.compile=maybe", "not a valid bool")]:
        with pytest.raises(ConfigError, match=match):
            apply_override(TrialConfig(), bad)
    with pytest.raises(ConfigError, match="model='9B' is not in the ladder"):
        trial_from_overrides(["model=9B"])


def test_dict_round_trip():
    cfg = trial_from_overrides(["model=w9m", "train.seq_len=512", "train.micro_batch_size=4", "train.batch_size_tokens=16384"])
    assert from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown keys in optim: bogus"):
        from_dict({**to_dict(cfg), "optim": {**to_dict(cfg.optim), "bogus": 1}})
