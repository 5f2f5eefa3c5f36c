"""Validation errors name the field and the fix, before any compute; every override form Hydra accepts
builds the same trial through compose(), the one way a trial is built."""
import pytest

from windtunnel.compose import compose, compose_record
from windtunnel.config import ConfigError, TrialConfig, to_dict


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
        compose([override])


def test_override_parsing():
    cfg = compose(["model=tiny256", "train.total_tokens=2e6", "optim.lr=0.02", "train.compile=true",
                   "model.parametrization=sp"])
    assert (cfg.model.d_model, cfg.model.name, cfg.train.total_tokens, cfg.optim.lr) == (256, "tiny256", 2_000_000, 0.02)
    assert cfg.train.compile is True and cfg.model.parametrization == "sp" and cfg.name == "tiny256"
    for bad, match in [(["optim.lrr=1"], r"unknown config key 'optim.lrr': OptimConfig has no field 'lrr'; check the key's spelling.*known here: beta1"),
                       (["train.total_tokens=1.5"], r"train.total_tokens=1.5: Value .1.5. of type .float. could not be converted to Integer"),
                       (["train.compile=maybe"], r"train.compile=maybe: Value .maybe. is not a valid bool"),
                       (["model=9B"], r"model='9B' is not in the ladder; use one of tiny32"),
                       (["train=tpu"], r"train='tpu' is not an option of the train group")]:
        with pytest.raises(ConfigError, match=match):
            compose(bad)


def test_lists_and_hydra_forms_work_in_train_too():
    cfg = compose(["train.branch_at_n=[1,2]", "data.mixture=[0.3:stdlib]", "train=cpu"])
    assert cfg.train.branch_at_n == [1.0, 2.0] and cfg.data.mixture == ["0.3:stdlib"] and cfg.train.device == "cpu"
    assert compose(["train.total_tokens=1_048_576"]).train.total_tokens == 2 ** 20


def test_the_ladder_is_the_model_group():
    from windtunnel import sizing
    for name in sizing.LADDER:
        assert compose([f"model={name}", "train.seq_len=128"]).model == sizing.preset(name)


def test_record_round_trip():
    cfg = compose(["model=w9m", "train.seq_len=512", "train.micro_batch_size=4", "train.batch_size_tokens=16384"])
    assert compose_record(to_dict(cfg)) == cfg
    again = compose_record(to_dict(cfg), ["optim.lr=0.02", "train.branch_at_n=[3]"])
    assert (again.optim.lr, again.train.branch_at_n, again.model) == (0.02, [3.0], cfg.model)
    with pytest.raises(ConfigError, match="bogus"):
        compose_record({**to_dict(cfg), "optim": {**to_dict(cfg.optim), "bogus": 1}})
    assert isinstance(cfg, TrialConfig)


def test_storage_passwords_are_redacted():
    from windtunnel.config import redact
    assert redact("tuning.storage=postgresql+psycopg2://alice:s3cr%40t@db.example:5432/wt,optim.lr=0.01") == \
        "tuning.storage=postgresql+psycopg2://alice:***@db.example:5432/wt,optim.lr=0.01"
    assert redact("storage: 'mysql://u:p@h/d'") == "storage: 'mysql://u:***@h/d'"
    for plain in ("sqlite:///runs/x.db", "runs/x/optuna.journal", "https://example.org/a:b", "postgresql://u@h/d"):
        assert redact(plain) == plain


def test_the_automatic_micro_batch_takes_an_awkward_batch_in_one_pass():
    """train.micro_batch_size=0: the largest divisor of a rank's sequences up to 16, except where that divisor is
    below 8 and the batch is at most 32 sequences (31, a prime: 31 passes of one sequence before, one pass now);
    powers of two split as before, an explicit micro-batch is kept, and launch's memory cap is not stretched."""
    from windtunnel.config import TrialConfig, split_batch
    for seqs in range(1, 65):
        for world in (1, 2):
            if seqs % world:
                continue
            cfg = TrialConfig()
            cfg.train.seq_len, cfg.train.batch_size_tokens, cfg.train.micro_batch_size = 64, 64 * seqs, 0
            per_rank = seqs // world
            best = max(d for d in range(1, min(per_rank, 16) + 1) if per_rank % d == 0)
            want = (per_rank, 1) if best < 8 and per_rank <= 32 else (best, per_rank // best)
            assert cfg.split(world) == want, (seqs, world)
    cfg = TrialConfig()
    cfg.train.seq_len, cfg.train.batch_size_tokens = 1024, 31 * 1024
    cfg.train.micro_batch_size = 0
    assert (cfg.micro_batch, cfg.accum_per_rank(1)) == (31, 1)
    assert split_batch(31 * 1024, 1024) == (1, 31)  # launch's use (no whole_up_to) keeps its cap
    cfg.train.micro_batch_size = 1
    assert cfg.split(1) == (1, 31)
    cfg.train.micro_batch_size, cfg.train.batch_size_tokens = 0, 64 * 1024
    assert cfg.split(1) == (16, 4)  # a power of two as before
