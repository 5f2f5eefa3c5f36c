"""The Hydra config tree (conf/ at the top level): every file composes into a valid trial; bad overrides fail
before training."""
import pathlib

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from windtunnel import sizing
from windtunnel.compose import compose_config, to_job
from windtunnel.config import ConfigError, SweepJobConfig
from windtunnel.sweep.app import preflight

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def compose_job(overrides, hydra_node=False):
    return compose_config(overrides, hydra_node=hydra_node)


def test_the_packaged_tree_is_the_top_level_conf():
    import windtunnel.conf
    assert pathlib.Path(windtunnel.conf.__file__).resolve().parent == CONF
    assert len(SWEEPS) >= 9 and not (CONF / "model").exists()  # the model group comes from sizing.LADDER


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_file_composes_to_a_valid_trial(name):
    cfg = compose_job([f"sweep={name}"], hydra_node=True)
    params = dict(cfg.hydra.sweeper.params or {})
    assert params, f"{name} defines no sweep"
    # take the first value of each swept key: that job must be a valid trial
    first = [f"{k}={str(v).split(',')[0]}" for k, v in params.items() if "interval" not in str(v)]
    job = to_job(compose_job([f"sweep={name}", *first]))
    assert isinstance(job, SweepJobConfig) and job.sweep_name == name
    trial = sizing.resolve_tokens(job.trial()).validate()
    assert trial.total_steps >= 1


def test_sweep_grids_match_the_paper():
    with initialize_config_module(config_module="windtunnel.conf", version_base="1.3"):
        # minicpm.md 2.1: 9M {4..144} x 4096 (16.4k-590k), 30M {9..288} x 4096, 170M 2^17 ... 2^22, spaced 2x
        for name, first in (("batch_size_w9m", 2 ** 14), ("batch_size_w36m", 2 ** 15), ("batch_size_w166m", 2 ** 17)):
            grid = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True).hydra.sweeper.params
            assert [int(b) for b in grid["train.batch_size_tokens"].split(",")] == [first * 2 ** i for i in range(6)]
        cpu = compose("config", overrides=["sweep=batch_size_cpu"], return_hydra_config=True)
        sizes = [int(b) for b in cpu.hydra.sweeper.params["train.batch_size_tokens"].split(",")]
        assert len(sizes) == 6 and all(b == 2 * a for a, b in zip(sizes, sizes[1:]))  # six, spaced 2x
        assert cpu.schedule.kind == "cosine" and cpu.optim.lr == 0.01
        wsd = compose("config", overrides=["sweep=wsd_data_model"], return_hydra_config=True)
        # the paper branches at 10N ... 60N; one epoch of stdlib+site allows 2N ... 10N (conf/sweep/wsd_data_model.yaml)
        assert list(wsd.train.branch_at_n) == [2, 4, 6, 8, 10]


@pytest.mark.parametrize("name", sorted(sizing.LADDER))
def test_model_group_is_the_ladder(name):
    job = to_job(compose_job([f"model={name}", "train.seq_len=128"]))
    assert job.model == sizing.preset(name)


def test_grid_jobs_are_checked_before_any_training():
    with pytest.raises(ConfigError, match=r"sweep job \[.*train.batch_size_tokens=1000.*\]: train.batch_size_tokens"
                                          r"=1000 is not divisible"):
        preflight(["model=tiny32", "train.batch_size_tokens=4096,1000"])
    assert preflight(["model=tiny32,tiny64", "train.batch_size_tokens=2048,4096"]) == 4
    with pytest.raises(ConfigError, match=r"sweep job \[model=tiny32.*\]: train.branch_at_n: the first decay branch, "
                                          r"at 2N = 47,424 tokens for model=tiny32, starts before the warmup ends"):
        preflight(["sweep=wsd_data_model_cpu", "schedule.warmup_tokens=65536"])
    assert preflight(["sweep=batch_size_cpu"]) == 12
    assert preflight(["sweep=batch_size_cpu", "train.batch_size_tokens=512"]) == 2  # the command line narrows a swept key
    with pytest.raises(ConfigError, match=r"give the key itself: train.batch_size_tokens=\.\.\."):
        preflight(["sweep=batch_size_cpu", "hydra.sweeper.params.train.batch_size_tokens=512"])


def test_unknown_model_names_the_override():
    with pytest.raises(ConfigError, match=r"model='w9b' is not in the ladder; use one of tiny32"):
        compose_job(["model=w9b"])


def test_search_space_errors_name_the_key():
    from hydra_plugins.windtunnel_optuna_sweeper.sweeper import SearchSpaceError, distribution
    parser = OverridesParser.create()
    bad = parser.parse_override("optim.lr=tag(log,interval(0.1,0.001))")
    with pytest.raises(SearchSpaceError, match=r"optim.lr: interval\(0.1, 0.001\) has low >= high"):
        distribution("optim.lr", bad)
    good = distribution("optim.lr", parser.parse_override("optim.lr=tag(log,interval(0.001,0.1))"))
    assert (good.low, good.high, good.log) == (0.001, 0.1, True)
    ints = distribution("train.seed", parser.parse_override("train.seed=range(0,6,2)"))
    assert (ints.low, ints.high, ints.step) == (0, 4, 2)  # Hydra's stop is exclusive
    cats = distribution("model", parser.parse_override("model=choice(tiny32,tiny64)"))
    assert list(cats.choices) == ["tiny32", "tiny64"]


def test_the_8x_prediction_check_targets_8x_the_largest_proxy_under_the_proxies_protocol():
    """conf/sweep/prediction_8l.yaml (issue 28 item 4: a target at least 7x the largest proxy, one epoch or less):
    w109m is 8.0x batch_size_8l's width 384 in non-embedding parameters, trains 0.51 epochs of the proxies' corpus
    (195.5M train tokens), and shares their corpus, schedule, warmup, sequence length and held-out windows."""
    target = to_job(compose_job(["sweep=prediction_8l", "model=w109m", "optim.lr=0.00390625",
                                 "train.batch_size_tokens=24576"])).trial()
    proxy = to_job(compose_job(["sweep=batch_size_8l", "model.d_model=384", "optim.lr=0.00390625",
                                "train.batch_size_tokens=16384"])).trial()
    assert sizing.n_params(target.model) / sizing.n_params(proxy.model) == pytest.approx(8.0, abs=0.01)
    assert target.train.total_tokens / 195.5e6 == pytest.approx(0.515, abs=0.005)
    for section, fields in (("data", ("source", "tokenizer", "bpe_vocab_size")),
                            ("schedule", ("kind", "warmup_steps", "decay_kind", "decay_frac")),
                            ("train", ("seq_len", "eval_tokens", "final_eval_tokens", "eval_set"))):
        for f in fields:
            assert getattr(getattr(target, section), f) == getattr(getattr(proxy, section), f), f"{section}.{f}"
