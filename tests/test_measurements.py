"""Measurements that hold: the held-out set's standard error, eval sets that never mix, seeds as a dimension, paired
intervals on differences, the resolution of the tunnel, and the batch-size law's loss window."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli, tiny_trial
from synthetic import A_BS, B_BS, batch_size_runs
from windtunnel import runs
from windtunnel.config import ConfigError, to_dict
from windtunnel.fit import batch_size_law
from windtunnel.fit.seeds import BETTER, ONE_SEED, TIED, WORSE, paired_difference, resolvable, resolvable_one_seed, t95
from windtunnel.tables import load_runs
from windtunnel.train.core import eval_stats, heldout_sums


def test_heldout_sums_give_the_mean_and_standard_error_over_windows_whatever_the_ranks():
    rng = np.random.default_rng(0)
    windows = torch.from_numpy(rng.integers(0, 50, size=(37, 9)))  # (n, T+1)
    per_window = torch.from_numpy(rng.gamma(4.0, 0.5, size=37))  # a known loss per window (first token as its id)
    lookup = {tuple(w.tolist()): per_window[i] for i, w in enumerate(windows)}

    def loss_fn(x, y):  # (B,) the window's own loss
        return torch.stack([lookup[tuple(torch.cat([xi[:1], yi]).tolist())] for xi, yi in zip(x, y)])
    want = per_window.numpy()
    for world in (1, 3):
        sums = sum(heldout_sums(loss_fn, windows, 4, "cpu", rank, world) for rank in range(world))
        mean, bpb, se = eval_stats(sums.tolist(), windows, n_bytes=37 * 8)
        assert mean == pytest.approx(want.mean(), rel=1e-12)
        assert se == pytest.approx(want.std(ddof=1) / math.sqrt(37), rel=1e-9)
        assert bpb == pytest.approx(want.sum() * 8 / (math.log(2) * 37 * 8), rel=1e-12)


def test_every_eval_row_logs_its_standard_error_and_the_end_uses_the_final_set(tmp_path):
    from windtunnel.train import run_trial
    cfg = tiny_trial(total_tokens=16384, eval_points=4, eval_tokens=1024, final_eval_tokens=8192)
    result = run_trial(cfg, tmp_path / "r")
    rows = [m for m in runs.read_metrics(tmp_path / "r") if "eval_loss" in m]
    assert all(m["eval_se"] > 0 for m in rows)
    curve, final = rows[-2], rows[-1]
    # the final eval's set holds 8x the windows: its standard error is about sqrt(8) x smaller
    assert 1.8 < curve["eval_se"] / final["eval_se"] < 4.5, (curve["eval_se"], final["eval_se"])
    assert result.final_eval_se == final["eval_se"] and result.final_eval_loss == final["eval_loss"]


def _write(run_dir, trial: dict, loss: float):
    run_dir.mkdir(parents=True)
    runs.write_json(run_dir / "config.json", {"trial": trial, "sweep": "s"})
    runs.write_json(run_dir / "result.json", {"status": "completed", "final_eval_loss": loss, "N": 1000})
    runs.append_metrics(run_dir, {"step": 1, "tokens": 10, "eval_loss": loss})


def test_a_fit_refuses_to_pool_runs_measured_on_different_held_out_sets(tmp_path):
    for i, lr in enumerate((0.01, 0.02, 0.04)):
        _write(tmp_path / "a" / f"r{i}", to_dict(tiny_trial(f"optim.lr={lr}")), 3.0 + i / 10)
    assert len(load_runs(tmp_path / "a").per_run) == 3  # one set: fine
    legacy = to_dict(tiny_trial("optim.lr=0.08"))
    del legacy["train"]["eval_set"], legacy["train"]["final_eval_tokens"]  # a run recorded before eval sets
    _write(tmp_path / "a" / "old", legacy, 2.9)
    with pytest.raises(ConfigError, match=r"different held-out sets \(head:4096, sample:4096"):
        load_runs(tmp_path / "a")
    assert len(load_runs(tmp_path / "a", where=["`train.eval_set` == 'sample'"]).per_run) == 3  # the fix it names
    # the table says which set each run used: the old run's is the legacy head
    table = json.loads(cli("runs", str(tmp_path / "a"), "--json", "--by-seed", "--all-columns", check=True).stdout)
    assert sorted(r["train.eval_set"] for r in table) == ["head", "sample", "sample", "sample"]


def test_a_run_recorded_before_eval_sets_resumes_on_the_head_set(tmp_path):
    trial = tiny_trial()
    legacy = to_dict(trial)
    del legacy["train"]["eval_set"], legacy["train"]["final_eval_tokens"]
    (tmp_path / "r").mkdir()
    runs.write_json(tmp_path / "r" / "config.json", {"trial": legacy})
    run = runs.Run(tmp_path / "r", trial)
    assert run.finished_result() is None  # no result yet: resumed, not refused
    assert (run.trial.train.eval_set, run.trial.train.final_eval_tokens) == ("head", 0)
    assert runs.Run(tmp_path / "new", trial).trial.train.eval_set == "sample"


def test_paired_intervals_call_noise_tied_and_a_real_difference_better():
    reference = {0: 3.00, 1: 3.10, 2: 2.95, 3: 3.05}
    noise = {s: v + d for (s, v), d in zip(reference.items(), (0.03, -0.04, 0.02, -0.01))}
    assert paired_difference(noise, reference)["verdict"] == TIED
    real = {s: v - 0.2 + d for (s, v), d in zip(reference.items(), (0.01, -0.01, 0.02, 0.0))}
    diff = paired_difference(real, reference)
    assert diff["verdict"] == BETTER and diff["interval"][1] < 0 and diff["mean"] == pytest.approx(-0.195)
    assert paired_difference({s: v + 0.3 + s / 100 for s, v in reference.items()}, reference)["verdict"] == WORSE
    assert paired_difference({0: 2.0}, reference)["verdict"] == ONE_SEED
    # the interval is a 95% one: with no true difference, 'better' or 'worse' about 5% of the time
    rng = np.random.default_rng(1)
    calls = [paired_difference(dict(enumerate(rng.normal(0, 0.05, 4))), dict(enumerate(rng.normal(0, 0.05, 4))))
             ["verdict"] != TIED for _ in range(4000)]
    assert 0.04 < np.mean(calls) < 0.06


def test_resolvable_difference_is_the_paired_half_width():
    assert t95(3) == pytest.approx(3.182446, rel=1e-6)
    assert resolvable(0.05, 4) == pytest.approx(3.182446 * math.sqrt(2 * 0.05 ** 2 / 4), rel=1e-6)
    assert resolvable(0.05, 1) == math.inf
    with_eval = resolvable(0.05, 4, eval_se=0.003)
    assert with_eval == pytest.approx(math.hypot(resolvable(0.05, 4), 1.96 * math.sqrt(2) * 0.003), rel=1e-9)
    # at the resolvable difference, a paired comparison with exactly that mean and the assumed spread is on the edge
    d = resolvable(0.05, 4)
    spread = 0.05 * math.sqrt(2) * np.array([-1.5, -0.5, 0.5, 1.5]) / np.std([-1.5, -0.5, 0.5, 1.5], ddof=1)
    diff = paired_difference(dict(enumerate(-d + spread)), dict(enumerate(np.zeros(4))))
    assert diff["interval"][1] == pytest.approx(0.0, abs=1e-12)


def test_one_seed_resolvable_difference_calls_5_percent_of_null_pairs_findings():
    """Two single-seed runs of one configuration differ by more than resolvable_one_seed(sd from K seeds) in 5% of
    draws: (x1 - x2) / (sqrt(2) s) follows Student's t with K - 1 degrees of freedom."""
    assert resolvable_one_seed(0.05, 4) == pytest.approx(3.182446 * math.sqrt(2) * 0.05, rel=1e-6)
    rng = np.random.default_rng(0)
    draws = 20000
    sds = rng.normal(3.0, 0.04, (draws, 4)).std(axis=1, ddof=1)  # the resolution's K = 4 seeds
    pairs = rng.normal(3.0, 0.04, (draws, 2))  # two one-seed runs of the same configuration
    called = np.abs(pairs[:, 0] - pairs[:, 1]) > np.array([resolvable_one_seed(s, 4) for s in sds])
    assert 0.045 < called.mean() < 0.055


def test_resolution_command_trains_packed_seeds_and_reports_the_spread(tmp_path):
    args = ["model=tiny64", "train.total_tokens=16384", "train.eval_points=4", "train.eval_tokens=1024",
            "train.final_eval_tokens=4096", "train.device=cpu", "data.max_bytes=2000000"]
    done = cli("resolution", *args, "--seeds", "3", "--out", str(tmp_path / "res"), check=True)
    record = json.loads((tmp_path / "res" / "resolution.json").read_text())
    finals = [json.loads((tmp_path / "res" / f"seed{s}" / "result.json").read_text()) for s in range(3)]
    assert record["losses"] == [f["final_eval_loss"] for f in finals] and all(f["pack"] == 3 for f in finals)
    assert record["sd_seed"] == pytest.approx(np.std(record["losses"], ddof=1), rel=1e-12)
    assert record["eval_se"] == pytest.approx(np.mean([f["final_eval_se"] for f in finals]), rel=1e-12)
    assert record["resolvable"]["4"] == pytest.approx(resolvable(record["sd_seed"], 4), rel=1e-12)
    assert f"{record['resolvable']['4']:.4f}" in done.stdout
    assert record["resolvable_one_seed"] == pytest.approx(t95(2) * math.sqrt(2) * record["sd_seed"], rel=1e-12)


def curved_runs(curvature: float, seed: int = 0):
    """batch_size_runs with bs_opt(L) = A / L^b x exp(curvature (ln L - ln 3.5)^2) (b drifts across the losses), each
    size on a 12-point grid spaced 2x (the optima stay inside it)."""
    import synthetic
    original = synthetic.tokens_needed

    def bent(bs, L, E, A=250.0, beta=0.3, k=0.1):
        d_star = (A / (L - E)) ** (1 / beta)
        bs_opt = A_BS / L ** B_BS * np.exp(curvature * (np.log(L) - np.log(3.5)) ** 2)
        return d_star * np.exp(k * np.log(bs / bs_opt) ** 2)
    synthetic.tokens_needed = bent
    try:
        return batch_size_runs(seed=seed, sizes=[(n, e, b, [2 ** k for k in range(12)]) for n, e, b, _ in synthetic.SIZES])
    finally:
        synthetic.tokens_needed = original


def test_the_form_diagnostic_fires_on_a_curved_law_and_not_on_a_straight_one():
    straight = batch_size_law(curved_runs(0.0), n_boot=60)
    bent = batch_size_law(curved_runs(10.0), n_boot=60)
    assert not straight.details["halves"]["disagree"]
    assert not any("depends on the loss window" in d for d in straight.diagnostics)
    assert bent.details["halves"]["disagree"], bent.details["halves"]
    assert any("b depends on the loss window" in d for d in bent.diagnostics)


def test_the_loss_window_starts_after_the_transient_and_can_be_set():
    runs_ = batch_size_runs()
    auto = batch_size_law(runs_, n_boot=10)
    assert auto.details["window"]["mode"] == "per-size"  # MiniCPM's sizes: disjoint loss ranges, staggered windows
    assert any("do not overlap" in d for d in auto.diagnostics)
    two = runs_[runs_["N"] < 1e8]
    window = batch_size_law(two, n_boot=10, levels="4.40:4.80")
    assert window.details["window"] == {"mode": "window", "levels": [4.40, 4.80]}
    assert {round(o["loss"], 6) for o in window.details["optima"]} >= {4.4, 4.8}
    with pytest.raises(Exception, match="LO:HI"):
        batch_size_law(two, n_boot=10, levels="5:4")


def test_seed_resample_resamples_configurations_then_their_seeds():
    from windtunnel.fit.result import seed_resample
    one = np.array(["a", "b", "c", "d"])  # one seed per configuration: the plain resampling of runs, draw for draw
    assert np.array_equal(seed_resample(one, np.random.default_rng(5)), np.random.default_rng(5).integers(0, 4, 4))
    cells = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c"])
    rng = np.random.default_rng(0)
    draws = [seed_resample(cells, rng) for _ in range(2000)]
    for d in draws:  # whole configurations, each with as many seeds as it has, all drawn from that configuration
        assert len(d) == 9 and all(len(set(cells[d[i:i + 3]])) == 1 for i in (0, 3, 6))
    picked = np.array([[cells[d[i]] for i in (0, 3, 6)] for d in draws])
    assert 0.6 < np.mean([len(set(p)) < 3 for p in picked]) < 0.85  # configurations repeat (1 - 3!/27 = 0.78)
    within = np.array([len(set(d[:3])) for d in draws])
    assert 0.6 < np.mean(within < 3) < 0.85  # and so do seeds within one


def test_the_one_seed_note_is_in_a_fit_on_one_seed_and_not_on_three():
    one = batch_size_law(batch_size_runs(), n_boot=10)
    three = batch_size_law(batch_size_runs(seeds=3, seed_noise=0.1), n_boot=10)
    assert any(d.startswith("one seed per batch size") for d in one.diagnostics)
    assert not any("one seed" in d for d in three.diagnostics)


@pytest.mark.slow  # 80 bootstrapped fits: in `make test`, out of the daily `make test-fast` loop
def test_the_fitter_s_seed_bootstrap_covers_where_resampling_seeds_alone_does_not():
    """benchmarks/seed_coverage.py at 40 replicates: synthetic batch-size sweeps (MiniCPM's b = 6.24, 3 seeds per point,
    seed noise 0.15 and a per-configuration deviation of 0.1 in log tokens). The fitter's two-stage bootstrap
    (configurations, then seeds) misses b at most 5% of the time; the negative control, resampling only the seeds
    within fixed configurations, misses it far more often (25% at 200 replicates, benchmarks/results)."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_coverage.py"
    spec = importlib.util.spec_from_file_location("seed_coverage", path)
    coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coverage)
    fitted = coverage.coverage("two-stage", 40, n_boot=40, config_noise=0.1)
    control = coverage.coverage("seeds only", 40, n_boot=40, config_noise=0.1)
    assert fitted["refused"] == 0 and fitted["misses"] <= 2, fitted
    assert control["misses"] >= 5, control
    assert control["median_width"] < fitted["median_width"]
