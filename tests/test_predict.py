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
