"""Predictions from reference and fitted laws."""
import json
import subprocess
import sys

import pytest

from synthetic import batch_size_runs
from test_fit import chinchilla_runs, lr_sweep
from windtunnel import laws
from windtunnel.config import ConfigError
from windtunnel.fit import batch_size_law, loss_law, lr_optimum
from windtunnel.predict import predict, target_model
from windtunnel.sizing import n_params


def test_minicpm_2p4b_at_loss_2p5_with_reference_laws():
    pred = predict(target_model("2.4B"), tokens=1.1e12, target_loss=2.5,
                   batch_size=laws.REFERENCE["minicpm-batch-size"], lr=laws.REFERENCE["minicpm-lr"])
    p = pred.numbers
    assert p["batch_size_tokens"]["value"] == pytest.approx(3.93e6, rel=0.02)  # the paper's 3.93M tokens
    assert p["batch_size_sequences"]["value"] == 971  # 3.98M / 4096 (the paper trained 960 x 4096)
    assert p["lr_embedding"]["value"] == 0.01 and p["lr_hidden"]["value"] == pytest.approx(0.01 / 9)
    trial = pred.trial
    assert trial.train.batch_size_tokens == 971 * 4096 and trial.optim.lr == 0.01
    assert trial.train.total_tokens == p["steps"]["value"] * 971 * 4096
    assert trial.train.total_tokens == pytest.approx(1.1e12, rel=1e-5)
    assert trial.schedule.decay_tokens == pytest.approx(0.1 * trial.train.total_tokens, rel=1e-6)
    assert trial.model.d_model == 2304 and n_params(trial.model) == 2_442_057_984


def test_fitted_laws_chain_with_intervals():
    bs = batch_size_law(batch_size_runs(), n_boot=100)
    lr = lr_optimum(lr_sweep())
    loss = loss_law(chinchilla_runs(1.82, 482.0, 2085.0, 0.348, 0.366), n_boot=50)
    target = target_model("w499m")
    pred = predict(target, tokens=20 * n_params(target), batch_size=bs, lr=lr, loss=loss, seq_len=2048)
    p = pred.numbers
    L = 1.82 + 482.0 * n_params(target) ** -0.348 + 2085.0 * (20 * n_params(target)) ** -0.366
    assert p["loss"]["value"] == pytest.approx(L, rel=0.01)
    lo, hi = p["loss"]["interval"]
    assert lo <= p["loss"]["value"] <= hi
    want_bs = bs.params["a"] / p["loss"]["value"] ** bs.params["b"]
    assert p["batch_size_tokens"]["value"] == pytest.approx(want_bs)
    assert p["batch_size_tokens"]["interval"][0] < want_bs < p["batch_size_tokens"]["interval"][1]
    assert p["lr"]["value"] == pytest.approx(0.01, rel=0.05) and p["lr_hidden"]["value"] == pytest.approx(
        p["lr"]["value"] / 5.25)
    md = pred.to_markdown()
    assert "| batch_size_tokens |" in md and "w499m" in md


def test_compute_budget_and_missing_inputs():
    target = target_model("2.4B")
    pred = predict(target, compute=6 * 2_442_057_984 * 1e11, target_loss=2.5,
                   batch_size=laws.REFERENCE["minicpm-batch-size"], lr=laws.REFERENCE["minicpm-lr"])
    assert pred.tokens == pytest.approx(1e11, rel=1e-4)
    with pytest.raises(ConfigError, match="needs the loss the target will reach"):
        predict(target, tokens=1e11, batch_size=laws.REFERENCE["minicpm-batch-size"], lr=laws.REFERENCE["minicpm-lr"])
    with pytest.raises(ConfigError, match="token budget"):
        predict(target, target_loss=2.5)


def test_cli_fit_file_then_predict(tmp_path):
    data = batch_size_runs()
    data.rename(columns={"loss": "val_loss", "bs": "batch"}).to_csv(tmp_path / "runs.csv", index=False)
    fits = tmp_path / "fits.json"
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", "fit", str(tmp_path / "runs.csv"), "--law",
                          "batch-size", "--columns", "loss=val_loss,bs=batch", "--boot", "50", "--out", str(fits),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(fits.read_text())
    params = doc["fits"]["batch_size"]["parameters"]
    assert params["b"]["value"] == pytest.approx(6.24, rel=0.06) and len(params["a"]["interval"]) == 2
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", "predict", "--fits", str(fits), "--reference",
                          "minicpm", "--target", "2.4B", "--tokens", "1.1e12", "--target-loss", "2.5", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pred = json.loads(out.stdout)["predictions"]
    want = params["a"]["value"] / 2.5 ** params["b"]["value"]
    assert pred["batch_size_tokens"]["value"] == pytest.approx(want)
    assert pred["lr"]["value"] == 0.01 and "reference minicpm-lr" in pred["lr"]["source"]


def test_cli_fits_the_loss_law_from_decay_branch_run_dirs(tmp_path):
    """A WSD data/model sweep's run tree: stable runs (left out) and their decay branches (the points)."""
    from windtunnel import runs as run_files
    from windtunnel.config import TrialConfig, to_dict
    truth = dict(E=1.5, A=300.0, B=900.0, alpha=0.34, beta=0.3)
    for n in (1e6, 4e6, 1.6e7, 6.4e7):
        trunk = tmp_path / f"N{n:g}"
        cfg = TrialConfig()
        cfg.train.branch_at_n = [10.0, 20.0, 40.0]
        branch_dirs = []
        for k in cfg.train.branch_at_n:
            d = n * k / 0.9
            loss = truth["E"] + truth["A"] * n ** -truth["alpha"] + truth["B"] * d ** -truth["beta"]
            branch = TrialConfig()
            branch_dirs.append((trunk / f"decay_{k:g}N", branch, {"N": n, "tokens": d, "final_eval_loss": loss}))
        branch_dirs.append((trunk, cfg, {"N": n, "tokens": n * 40, "final_eval_loss": 9.9, "decayed_eval_loss": 9.9}))
        for path, trial, result in branch_dirs:
            path.mkdir(parents=True, exist_ok=True)
            run_files.write_json(path / "config.json", {"trial": to_dict(trial), "N": n})
            run_files.write_json(path / "result.json", {"status": "completed", **result})
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", "fit", str(tmp_path), "--law", "loss", "--boot", "20",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    fit = json.loads(out.stdout)["fits"]["loss"]
    assert fit["n_points"] == 12  # 4 sizes x 3 branches; the stable runs (loss 9.9) are not points
    got = {k: v["value"] for k, v in fit["parameters"].items()}
    assert got == pytest.approx(truth, rel=0.02)
