import os

import pytest

from windtunnel.compose import compose
from windtunnel.config import TrialConfig


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
    cfg = compose(["name=tiny", "model=tiny64", "data.max_bytes=4e6", "train.seq_len=64", "train.micro_batch_size=16",
                   "train.batch_size_tokens=2048", f"train.total_tokens={2048 * 60}", "train.eval_tokens=4096",
                   "train.eval_points=12", "train.log_every=5"])
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg
