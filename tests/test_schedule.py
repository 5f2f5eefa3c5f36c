import math

import pytest

from windtunnel.config import ScheduleConfig
from windtunnel.schedule import lr_factor, plan


def factors(cfg, total=1000, tokens_per_step=1000):
    p = plan(cfg, total, tokens_per_step)
    return p, [lr_factor(s, p) for s in range(total + 5)]


def test_wsd_exp_half_life_exact():
    # 1000 steps; warmup 10 steps; decay 100 steps from step 900; half-life 20 steps (all given as fractions)
    p, f = factors(ScheduleConfig(kind="wsd", warmup_frac=0.01, decay_frac=0.1, decay_kind="exp", half_life_frac=0.02))
    assert (p.warmup, p.decay_start, p.half_life) == (10, 900, 20)
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5)
    assert f[9] == 1.0  # warmup end
    assert f[10] == 1.0 and f[500] == 1.0 and f[899] == 1.0  # stable
    assert f[900] == 1.0  # decay start
    assert f[920] == pytest.approx(0.5, rel=1e-12)  # one half-life
    assert f[940] == pytest.approx(0.25, rel=1e-12)
    assert f[1000] == pytest.approx(0.5 ** 5, rel=1e-12)  # the end: 100 steps = 5 half-lives
    assert f[1004] == pytest.approx(0.5 ** (104 / 20), rel=1e-12)


def test_lengths_in_tokens_win_over_fractions():
    # batch_size_tokens 4096: warmup 40960 tokens = 10 steps, decay 409600 = 100 steps, half-life 5000 steps
    cfg = ScheduleConfig(kind="wsd", warmup_tokens=40960, decay_tokens=409600, half_life_tokens=5000 * 4096)
    p = plan(cfg, total_steps=10_000, batch_size_tokens=4096)
    assert (p.warmup, p.decay_start, p.half_life) == (10, 9900, 5000)
    assert lr_factor(9900 + 5000, p) == pytest.approx(0.5)


def test_warmup_in_steps_is_the_same_for_every_batch_size():
    """schedule.warmup_steps wins over tokens and fractions: 20 steps at 4k and at 128k tokens per step, where 1%
    of 32M tokens would give 82 and 2.6 (rounded 3) steps; the config checks it in tokens against the run."""
    from windtunnel.compose import compose
    from windtunnel.config import ConfigError
    for bs, frac_steps in ((4096, 82), (131072, 3)):
        total = 2 ** 25 // bs
        assert plan(ScheduleConfig(kind="cosine", warmup_frac=0.01), total, bs).warmup == frac_steps
        p = plan(ScheduleConfig(kind="cosine", warmup_frac=0.01, warmup_tokens=40960, warmup_steps=20), total, bs)
        assert p.warmup == 20 and lr_factor(9, p) == pytest.approx(0.5) and lr_factor(19, p) == 1.0
    cfg = compose(["model=tiny32", "schedule.warmup_steps=7", "train.batch_size_tokens=2048", "train.total_tokens=20480"])
    assert plan(cfg.schedule, cfg.total_steps, 2048).warmup == 7
    with pytest.raises(ConfigError, match="schedule.warmup_steps=-1 must be >= 0"):
        compose(["model=tiny32", "schedule.warmup_steps=-1"])
    with pytest.raises(ConfigError, match=r"schedule warmup \(22528 tokens\)"):
        compose(["model=tiny32", "schedule.warmup_steps=11", "train.batch_size_tokens=2048", "train.total_tokens=20480"])


@pytest.mark.parametrize("kind,mid,end", [("linear", 0.5, 0.0), ("cosine", 0.5, 0.0), ("1-sqrt", 1 - math.sqrt(0.5), 0.0)])
def test_wsd_decay_shapes(kind, mid, end):
    p, f = factors(ScheduleConfig(kind="wsd", warmup_frac=0.0, decay_frac=0.2, decay_kind=kind))
    assert f[799] == 1.0 and f[800] == 1.0
    assert f[900] == pytest.approx(mid, abs=1e-12)
    assert f[1000] == pytest.approx(end, abs=1e-12)


def test_floor_blends_into_decay_and_clamps_exp():
    p, f = factors(ScheduleConfig(kind="wsd", warmup_frac=0.0, decay_frac=0.2, decay_kind="linear", min_factor=0.1))
    assert f[900] == pytest.approx(0.1 + 0.9 * 0.5) and f[1000] == pytest.approx(0.1)
    p, f = factors(ScheduleConfig(kind="wsd", warmup_frac=0.0, decay_frac=0.5, decay_kind="exp",
                                  half_life_frac=0.01, min_factor=0.05))
    assert f[510] == pytest.approx(0.5) and f[1000] == pytest.approx(0.05)


def test_cosine_baseline_has_a_0p1_floor():
    p, f = factors(ScheduleConfig(kind="cosine", warmup_frac=0.1))
    assert p.floor == 0.1
    assert f[99] == 1.0 and f[100] == 1.0
    assert f[550] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f[1000] == pytest.approx(0.1) and f[1003] == pytest.approx(0.1)


def test_constant():
    p, f = factors(ScheduleConfig(kind="constant", warmup_frac=0.02))
    assert f[0] == pytest.approx(0.05) and f[19] == 1.0 and set(f[20:]) == {1.0}


@pytest.mark.parametrize("kind, decay_frac, decays", [("wsd", 0.1, True), ("wsd", 0.0, False),
                                                       ("cosine", 0.0, True), ("constant", 0.1, False)])
def test_plan_says_whether_the_run_decays(kind, decay_frac, decays):
    p, f = factors(ScheduleConfig(kind=kind, decay_frac=decay_frac, warmup_frac=0.01))
    assert p.decays is decays
    assert (f[999] < 0.5) is decays  # the last step's LR factor: decayed, or still at the peak
