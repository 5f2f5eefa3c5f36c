"""Predictions from reference and fitted laws."""
import json

import numpy as np

import pytest

from conftest import cli
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


def test_a_batch_that_leaves_a_few_optimizer_steps_is_warned_about():
    """MiniCPM's published batch law read at a loss of another corpus (1.915 nats of source code at BPE 8192, the
    8-layer proxies' lowest): 1.21e9 / 1.915^6.24 = 2.1e7 tokens, 5 steps of a 100.7M-token run, and the note says
    so; the paper's own 2.4B run (the test above: 276k steps) gets no such note."""
    pred = predict(target_model("109M"), tokens=100663296, target_loss=1.915,
                   batch_size=laws.REFERENCE["minicpm-batch-size"], lr=laws.REFERENCE["minicpm-lr"], seq_len=1024)
    assert pred.numbers["batch_size_tokens"]["value"] == pytest.approx(1.21e9 / 1.915 ** 6.24, rel=1e-3)
    assert pred.numbers["steps"]["value"] == 5
    assert any(n.startswith("WARNING: only 5 optimizer steps") for n in pred.notes), pred.notes
    paper = predict(target_model("2.4B"), tokens=1.1e12, target_loss=2.5,
                    batch_size=laws.REFERENCE["minicpm-batch-size"], lr=laws.REFERENCE["minicpm-lr"])
    assert not any("optimizer steps" in n for n in paper.notes)


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
    # the LR came from 2x grids (muP's cells): the prediction carries the fit's half-a-step caveat, once
    assert [n for n in pred.notes if n.startswith("LR: ")] == [
        "LR: " + d for d in lr.diagnostics if d.startswith("mup: LR grid steps of 2x")]
    assert len([n for n in pred.notes if n.startswith("LR: ")]) == 1 and "LR: mup: LR grid steps of 2x" in md


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
    out = cli("fit", str(tmp_path / "runs.csv"), "--law",
              "batch-size", "--columns", "loss=val_loss,bs=batch", "--boot", "50", "--out", str(fits),
              "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(fits.read_text())
    params = doc["fits"]["batch_size"]["parameters"]
    assert params["b"]["value"] == pytest.approx(6.24, rel=0.06) and len(params["a"]["interval"]) == 2
    out = cli("predict", "--fits", str(fits), "--reference",
              "minicpm", "--target", "2.4B", "--tokens", "1.1e12", "--target-loss", "2.5", "--json")
    assert out.returncode == 0, out.stderr
    pred = json.loads(out.stdout)["predictions"]
    want = params["a"]["value"] / 2.5 ** params["b"]["value"]
    assert pred["batch_size_tokens"]["value"] == pytest.approx(want)
    assert pred["lr"]["value"] == 0.01 and "reference minicpm-lr" in pred["lr"]["source"]


def test_cli_fits_the_loss_law_from_decay_branch_run_dirs(tmp_path):
    """A WSD data/model sweep's run tree: stable runs (left out) and their decay branches (the points)."""
    from windtunnel import runs as run_files
    from windtunnel.compose import compose
    from windtunnel.config import TrialConfig, to_dict
    truth = dict(E=1.5, A=300.0, B=900.0, alpha=0.34, beta=0.3)
    for n in (1e6, 4e6, 1.6e7, 6.4e7):
        trunk = tmp_path / f"N{n:g}"
        cfg = compose(["train.branch_at_n=[10.0,20.0,40.0]"])
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
    out = cli("fit", str(tmp_path), "--law", "loss", "--boot", "20", "--json")
    assert out.returncode == 0, out.stderr
    fit = json.loads(out.stdout)["fits"]["loss"]
    assert fit["n_points"] == 12  # 4 sizes x 3 branches; the stable runs (loss 9.9) are not points
    got = {k: v["value"] for k, v in fit["parameters"].items()}
    assert got == pytest.approx(truth, rel=0.02)


def _demo_law():
    """The CPU demo's batch-size fit: a = 751, b = 0.77 with b's interval [-0.59, 2.33] (b not identified)."""
    from windtunnel.fit import FitResult
    return FitResult(law="batch_size", form="power_law", params={"a": 751.0, "b": 0.77},
                     intervals={"a": [300.0, 1700.0], "b": [-0.59, 2.33]}, units={}, n_points=9, diagnostics=[],
                     details={"optima": [{"loss": 1.4 + 0.1 * i, "bs_opt": 400.0, "flag": None, "N": 23712.0}
                                         for i in range(9)]},
                     samples=[{"a": 751.0 * (1 + 0.01 * i), "b": 0.77 + 0.1 * (i - 5)} for i in range(10)])


def test_predict_refuses_an_unidentified_law_and_force_records_why(tmp_path):
    from windtunnel.predict import NotIdentified
    target = target_model("2.4B")
    with pytest.raises(NotIdentified, match=r"b = 0.77 has the interval \[-0.59, 2.33\], which includes 0"):
        predict(target, tokens=1.1e12, target_loss=1.5, batch_size=_demo_law(), lr=laws.REFERENCE["minicpm-lr"])
    pred = predict(target, tokens=1.1e12, target_loss=1.5, batch_size=_demo_law(), lr=laws.REFERENCE["minicpm-lr"],
                   force=True)
    assert any("includes 0" in w for w in pred.warnings) and any(n.startswith("WARNING (--force)") for n in pred.notes)
    assert "WARNING (--force)" in pred.to_markdown() and pred.to_json()["warnings"] == pred.warnings
    # through the CLI: exit 2 with the reason; --force writes the warning into prediction.json and the launch README
    fits = tmp_path / "fits.json"
    fits.write_text(json.dumps({"fits": {"batch_size": _demo_law().to_json()}}))
    args = ["predict", "--fits", str(fits), "--reference", "minicpm",
            "--target", "2.4B", "--tokens", "1.1e12", "--target-loss", "1.5"]
    out = cli(*args)
    assert out.returncode == 2 and "includes 0" in out.stderr and "--force" in out.stderr
    out = cli(*args, "--force", "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    assert any("includes 0" in w for w in json.loads((tmp_path / "p" / "prediction.json").read_text())["warnings"])
    out = cli("launch", str(tmp_path / "p"), "--out",
              str(tmp_path / "l"), "--nnodes", "4", "--nproc-per-node", "8", "--round-batch")
    assert out.returncode == 0, out.stderr
    assert "includes 0" in (tmp_path / "l" / "README.md").read_text()


def test_predict_refuses_a_target_far_outside_the_data():
    from windtunnel.predict import NotIdentified
    lr = lr_optimum(lr_sweep().query("param == 'sp'"))  # lr* = c N^e_N fitted on N up to 5e7
    big = target_model(shape={"d_model": 4096, "n_layers": 40, "n_heads": 32})  # N = 7.7e9: 153x the largest proxy
    with pytest.raises(NotIdentified, match=r"lr law: the target's N = 7.7\de\+09 is 153x the largest fitted size"):
        predict(big, tokens=1e11, target_loss=2.5, batch_size=laws.REFERENCE["minicpm-batch-size"], lr=lr)
    pred = predict(target_model("w166m"), tokens=1e10, target_loss=2.5,
                   batch_size=laws.REFERENCE["minicpm-batch-size"], lr=lr)
    assert pred.extrapolation["lr_size_ratio"] == pytest.approx(166216064 / (48 * 1024 ** 2), rel=1e-6)


def test_a_diverged_run_keeps_its_cell_in_an_lr_sweep(tmp_path):
    """One token budget, 4 widths, the optimum at 2^-8 everywhere; the largest LR of the widest model diverged
    after 1/10 of its tokens (as on the H200 muTransfer sweep). The cell is the budget it was given: before, its
    short `tokens` made a second D, and the fit reported a Step Law D exponent from one budget."""
    from windtunnel import runs as run_files
    from windtunnel.compose import compose
    from windtunnel.config import override, to_dict
    budget = 10485760
    for width in (128, 256, 512, 1024):
        for i, lr in enumerate(2.0 ** np.arange(-11, -4)):
            cfg = compose([f"model.d_model={width}", override("optim.lr", float(lr)),
                           f"train.total_tokens={budget}"])
            diverged = width == 1024 and i == 6
            result = {"status": "diverged" if diverged else "completed", "N": 12 * width ** 2,
                      "tokens": budget // 10 if diverged else budget,
                      "final_eval_loss": 40.0 if diverged else 4 + 0.05 * np.log2(lr / 2 ** -8) ** 2}
            path = tmp_path / f"w{width}_lr{i}"
            path.mkdir()
            run_files.write_json(path / "config.json", {"trial": to_dict(cfg), "N": 12 * width ** 2})
            run_files.write_json(path / "result.json", result)
    out = cli("fit", str(tmp_path), "--law", "lr", "--boot", "20", "--json")
    assert out.returncode == 0, out.stderr
    fit = json.loads(out.stdout)["fits"]["lr"]
    assert fit["form"] == "constant" and "e_D" not in fit["parameters"]
    assert fit["parameters"]["lr_star"]["value"] == pytest.approx(2 ** -8, rel=0.02)
    assert {c["D"] if "D" in c else budget for c in fit["details"]["optima"]} == {budget}


def test_predict_refuses_a_batch_size_law_far_below_the_target():
    """The batch-size law gets the size gate of the others: fitted on N <= 3.6e7, a 7.7e9 target (214x) is refused;
    with force the warning is in the prediction (and from there in its Markdown and the launch README)."""
    import synthetic
    from windtunnel.predict import NotIdentified
    sizes = [(n, e, budget * 3, grid) for n, e, budget, grid in synthetic.SIZES[:2]]
    bs = batch_size_law(batch_size_runs(sizes=sizes), n_boot=50, levels="per-size")
    big = target_model(shape={"d_model": 4096, "n_layers": 40, "n_heads": 32})
    ratio = n_params(big) / 36e6
    with pytest.raises(NotIdentified, match=rf"batch_size law: the target's N = 7.7\de\+09 is {ratio:.0f}x the largest "
                                            r"fitted size \(3.6e\+07\)"):
        predict(big, tokens=1e11, target_loss=2.5, batch_size=bs, lr=laws.REFERENCE["minicpm-lr"])
    pred = predict(big, tokens=1e11, target_loss=2.5, batch_size=bs, lr=laws.REFERENCE["minicpm-lr"], force=True)
    assert pred.extrapolation["batch_size_size_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert any(w.startswith("batch_size law: the target's N") for w in pred.warnings)
    assert "WARNING (--force): batch_size law: the target's N" in pred.to_markdown()


def test_predict_warns_when_the_target_s_base_width_or_depth_is_not_the_proxies(tmp_path):
    """Proxies 2 layers deep at base width 256 (run dirs of an LR grid at 3 widths, the optimum at 2^-8): a 40-layer
    target, or a target at base width 128, is warned about (in the prediction's notes and Markdown); a 2-layer
    base-256 one is not."""
    from windtunnel import runs
    from windtunnel.compose import compose
    from windtunnel.config import to_dict
    from windtunnel.fit import fit_laws
    from windtunnel.tables import load_runs
    for width in (128, 256, 512):
        for lr in 2.0 ** np.arange(-11, -4):
            cfg = compose([f"model.d_model={width}", "model.n_layers=2", "model.dim_model_base=256", f"optim.lr={lr}"])
            run = tmp_path / f"w{width}-lr{lr:.6f}"
            run.mkdir()
            runs.write_json(run / "config.json", {"trial": to_dict(cfg), "sweep": "s"})
            runs.write_json(run / "result.json", {"status": "completed", "N": n_params(cfg.model), "tokens": 1e6,
                                                  "final_eval_loss": 3.0 + 0.05 * np.log(lr / 2 ** -8) ** 2})
    lr = fit_laws(load_runs(tmp_path), ["lr"], n_boot=20)[0]["lr"]
    assert lr.details["proxy_shape"] == {"dim_model_base": [256], "n_layers": [2]}
    ref = laws.REFERENCE["minicpm-batch-size"]
    deep = predict(target_model(shape={"d_model": 2048, "n_layers": 40, "n_heads": 16}), tokens=1e10,
                   target_loss=2.5, batch_size=ref, lr=lr, force=True)
    assert [n for n in deep.notes if n.startswith("WARNING: the LR law")] == [
        "WARNING: the LR law was fitted on proxies of depth 2; the target's is 40: muP transfers the LR across width, "
        "not depth; MiniCPM keeps the proxies' depth rule (scale_depth / sqrt(n_layers)), so check it with proxies "
        "of the target's depth"]
    based = predict(target_model(shape={"d_model": 2048, "n_layers": 2, "n_heads": 16, "dim_model_base": 128}),
                    tokens=1e10, target_loss=2.5, batch_size=ref, lr=lr, force=True)
    assert any(n.startswith("WARNING: the LR law was fitted on proxies of muP base width 256; the target's is 128")
               for n in based.notes) and "muP base width 256" in based.to_markdown()
    same = predict(target_model(shape={"d_model": 2048, "n_layers": 2, "n_heads": 16}), tokens=1e10, target_loss=2.5,
                   batch_size=ref, lr=lr, force=True)
    assert not any(n.startswith("WARNING: the LR law") for n in same.notes)


@pytest.mark.parametrize("args, message", [
    (["--target-loss", "1e9"], "--target-loss 1e+09 is outside what minicpm-batch-size can say: it was measured at "
                               "losses 3.3-5.35"),
    (["--target-loss", "1.0"], "--target-loss 1 is outside what minicpm-batch-size can say"),
    (["--tokens", "1"], "--tokens 1 is less than one sequence of --seq-len 4096: not a training run"),
    (["--seq-len", "100000000"], "the predicted batch (3.98e+06 tokens) is less than half a sequence of --seq-len "
                                 "100000000"),
    (["--tokens", "inf"], "--tokens inf: must be a finite, positive number"),
    (["--seq-len", "0"], "--seq-len 0: must be a whole number of tokens >= 1"),
    (["--shape", "d_model=0"], "--shape d_model=0: must be a positive number"),
    (["--tokens", "-5"], "--tokens -5.0: must be a finite, positive number"),
])
def test_predict_refuses_inputs_that_cannot_be_in_one_line(args, message):
    given = {"--tokens": "1.1e12", "--target-loss": "2.5", **dict(zip(args[::2], args[1::2]))}
    out = cli("predict", "--reference", "minicpm", "--target", "2.4B", *[x for kv in given.items() for x in kv])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


def test_predict_refuses_a_target_loss_at_or_below_the_loss_law_floor():
    loss = loss_law(chinchilla_runs(1.82, 482.0, 2085.0, 0.348, 0.366), n_boot=20)
    with pytest.raises(ConfigError, match=r"--target-loss 1.8 is at or below the loss law's floor E = 1.8\d*: no model "
                                          r"reaches it"):
        predict(target_model("w499m"), tokens=1e10, target_loss=1.8, batch_size=laws.REFERENCE["minicpm-batch-size"],
                lr=laws.REFERENCE["minicpm-lr"], loss=loss, force=True)


def test_predict_takes_a_given_lr_over_any_lr_law():
    """--lr gives the muP base LR (a transferred optimum whose LR law does not move with N, sweeps/lr_transfer_8l):
    it replaces the reference's 0.01, muP divides it by the width multiplier for hidden matrices, and a
    non-positive LR is refused with the option named."""
    out = cli("predict", "--reference", "minicpm", "--lr", "0.00390625", "--target", "w109m", "--tokens", "1e8",
              "--target-loss", "2.5", "--seq-len", "1024", "--json")
    assert out.returncode == 0, out.stderr
    numbers = json.loads(out.stdout)["predictions"]
    assert numbers["lr"]["value"] == 0.00390625 and "--lr" in numbers["lr"]["source"]
    assert numbers["lr_hidden"]["value"] == pytest.approx(0.00390625 / 3)  # m = 768 / 256
    assert numbers["batch_size_tokens"]["value"] == pytest.approx(1.21e9 / 2.5 ** 6.24, rel=1e-3)  # still MiniCPM's
    bad = cli("predict", "--reference", "minicpm", "--lr", "0", "--target", "w109m", "--tokens", "1e8",
              "--target-loss", "2.5")
    assert bad.returncode != 0 and "--lr 0.0 must be a positive learning rate" in bad.stderr
