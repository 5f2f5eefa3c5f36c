import os

import pytest

from windtunnel.config import TrialConfig
from windtunnel.sizing import preset


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """One tokenized-corpus cache for the whole test session (the stdlib corpus tokenizes once)."""
    path = tmp_path_factory.mktemp("wtcache")
    old = os.environ.get("WINDTUNNEL_CACHE")
    os.environ["WINDTUNNEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("WINDTUNNEL_CACHE", None)
    else:
        os.environ["WINDTUNNEL_CACHE"] = old


def tiny_trial(**train) -> TrialConfig:
    """A CPU trial of a few seconds: tiny64 on the embedded byte corpus."""
    cfg = TrialConfig(name="tiny")
    cfg.model = preset("tiny64")
    cfg.data.max_bytes = 4_000_000
    cfg.train.seq_len = 64
    cfg.train.micro_batch_size = 16
    cfg.train.batch_size_tokens = 2048
    cfg.train.total_tokens = 2048 * 60
    cfg.train.eval_tokens = 4096
    cfg.train.eval_points = 12
    cfg.train.log_every = 5
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg
