"""The command line: one trial end to end, then the run table."""
import json
import math
import subprocess
import sys

import pytest

from conftest import cli


def test_train_then_runs_table(tmp_path):
    overrides = ["model=tiny64", "train.seq_len=64", "train.batch_size_tokens=1024", "train.total_tokens=40960",
                 "train.eval_points=8", "train.eval_tokens=2048", "train.final_eval_tokens=0", "data.max_bytes=2000000"]
    result = json.loads(cli("train", *overrides, "optim.lr=0.02", "--out", str(tmp_path / "r" / "a"), check=True).stdout)
    assert result["status"] == "completed" and result["steps"] == 40 and result["tokens"] == 40960
    assert result["final_eval_loss"] < 0.75 * math.log(256)
    cli("train", *overrides, "optim.lr=0.005", "--out", str(tmp_path / "r" / "b"), check=True)
    table = json.loads(cli("runs", str(tmp_path / "r"), "--json", "--by-seed", check=True).stdout)
    assert [row["optim.lr"] for row in table] == [0.005, 0.02]  # sorted by the swept values, as numbers
    assert table[1]["final_eval_loss"] == result["final_eval_loss"] and table[1]["N"] == 94_528
    points = json.loads(cli("runs", str(tmp_path / "r"), "--json", "--points", check=True).stdout)
    assert len(points) > 2 * 8 and {p["status"] for p in points} == {"completed"}


def test_bad_override_exits_2_with_the_field_named(tmp_path):
    out = cli("train", "train.batch_size_tokens=1000", "--out", str(tmp_path / "x"), check=False)
    assert out.returncode == 2 and "train.batch_size_tokens=1000 is not divisible" in out.stderr
    assert not (tmp_path / "x").exists()  # nothing started
    out = cli("runs", str(tmp_path / "nowhere"), check=False)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_runs_sorts_numbers_as_numbers_and_shows_sweep_and_overrides(tmp_path):
    from windtunnel import compose, runs
    from windtunnel.config import to_dict
    for bs in (1024, 128, 2048, 256):  # dir names sort as strings: 1024, 128, 2048, 256
        cfg = compose([f"train.batch_size_tokens={bs}", "train.micro_batch_size=0"])
        (tmp_path / f"bs{bs}").mkdir()
        runs.write_json(tmp_path / f"bs{bs}" / "config.json", {"trial": to_dict(cfg), "sweep": "s", "overrides": f"bs={bs}"})
        runs.write_json(tmp_path / f"bs{bs}" / "result.json", {"status": "completed", "final_eval_loss": 3.0})
    table = json.loads(cli("runs", str(tmp_path), "--json", check=True).stdout)
    assert [r["train.batch_size_tokens"] for r in table] == [128, 256, 1024, 2048]
    assert [r["overrides"] for r in table] == ["bs=128", "bs=256", "bs=1024", "bs=2048"] and table[0]["sweep"] == "s"
    text = cli("runs", str(tmp_path), check=True).stdout.splitlines()
    assert text[0].split()[:3] == ["sweep", "name", "status"] and "overrides" in text[0]


def test_runs_aggregates_seeds_per_configuration_and_by_seed_shows_the_runs(tmp_path):
    from windtunnel import compose, runs
    from windtunnel.config import to_dict
    losses = {(0.01, 0): 3.0, (0.01, 1): 3.2, (0.01, 2): 3.1, (0.02, 0): 2.9, (0.02, 1): 2.95}
    for (lr, seed), loss in losses.items():
        cfg = compose([f"optim.lr={lr}", f"train.seed={seed}", f"train.device={'cpu' if seed else 'auto'}"])
        run = tmp_path / f"lr{lr}-s{seed}"
        run.mkdir()
        runs.write_json(run / "config.json", {"trial": to_dict(cfg), "sweep": "s", "overrides": f"lr={lr},seed={seed}"})
        runs.write_json(run / "result.json", {"status": "completed", "final_eval_loss": loss})
    running = tmp_path / "lr0.02-s2"  # a third seed still running (its process gone: interrupted), no loss yet
    running.mkdir()
    runs.write_json(running / "config.json", {"trial": to_dict(compose(["optim.lr=0.02", "train.seed=2"])), "sweep": "s"})
    runs.write_json(running / "result.json", {"status": "running", "pid": 2 ** 22 + 7})
    table = json.loads(cli("runs", str(tmp_path), "--json", check=True).stdout)
    assert [(r["optim.lr"], r["n"], r["seeds"]) for r in table] == [(0.01, 3, "0,1,2"), (0.02, 3, "0,1,2")]
    assert table[0]["loss_mean"] == pytest.approx(3.1) and table[0]["loss_std"] == pytest.approx(0.1)
    assert table[1]["loss_mean"] == pytest.approx(2.925) and table[1]["loss_std"] == pytest.approx(0.05 / 2 ** 0.5)
    assert table[0]["status"] == "completed" and table[1]["status"] == "2 completed, 1 interrupted"
    raw = json.loads(cli("runs", str(tmp_path), "--json", "--by-seed", check=True).stdout)
    assert [(r["optim.lr"], r["train.seed"]) for r in raw] == [(0.01, 0), (0.01, 1), (0.01, 2), (0.02, 0), (0.02, 1),
                                                               (0.02, 2)]
    from windtunnel.sizing import n_params
    assert raw[-1]["status"] == "interrupted" and raw[-1]["N"] == n_params(compose(["optim.lr=0.02"]).model) > 0


def test_runs_fits_120_columns_by_default_and_wide_shows_everything():
    from pathlib import Path
    record = Path(__file__).resolve().parents[1] / "sweeps" / "lr_transfer"  # 160 runs, long override lines
    for extra in ([], ["--by-seed"]):
        text = cli("runs", str(record), *extra, check=True).stdout.splitlines()
        assert len(text) == 1 + (160 if extra else 80) and max(map(len, text)) <= 120
        assert text[0].split()[:4] == ["status", "param", "N", "lr"]
        # the overrides column shows what differs between runs (every run shares sweep=lr_transfer)
        assert "sweep=lr_transfer" not in text[1] and "optim.lr=" in text[1]
    wide = cli("runs", str(record), "--wide", check=True).stdout.splitlines()
    assert max(map(len, wide)) > 120 and "model.parametrization" in wide[0] and "sweep=lr_transfer" in wide[1]


def test_unknown_keys_and_missing_options_are_one_line_errors(tmp_path):
    out = cli("train", "+optim.foo=1", "--dry-run", check=False)
    assert out.returncode == 2 and "unknown config key 'optim.foo': OptimConfig has no field 'foo'" in out.stderr
    out = cli("sweep", "-m", "+optim.foo=1", "model=tiny32,tiny64", check=False)
    assert out.returncode == 2 and "unknown config key 'optim.foo'" in out.stderr and "Traceback" not in out.stderr
    out = cli("sweep", "-m", "model=tiny33", check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "not in the ladder" in out.stderr
    out = cli("sweep", "-m", "hydra/launcher=submitit_nowhere", "model=tiny32", check=False)  # a typo: the options
    assert out.returncode == 2 and "is not an option of the hydra group" in out.stderr
    # a setting of one sweeper under another: Hydra's first line ends in ':' and the reason is on the next
    out = cli("sweep", "-m", "sweep=lr_search", "hydra/sweeper=windtunnel_grid", "optim.lr=0.001,0.002", check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and out.stderr.strip().endswith(
        "while composing config: Key 'sampler' not in 'WindtunnelGridSweeperConf' (full_key: hydra.sweeper.sampler)")
    out = cli("sweep", "-m", "model=tiny32,tiny64", "--cfg", "job", check=False)  # Hydra: a bare ValueError
    assert out.returncode == 2 and "Traceback" not in out.stderr and "-m and --cfg do not go together" in out.stderr
    import shutil
    if shutil.which("srun") is None:
        out = cli("sweep", "-m", "launcher=slurm", "model=tiny32", check=False)
        assert out.returncode == 2 and "no srun on PATH" in out.stderr and "launcher=submitit_local" in out.stderr


def test_version_module_entry_and_tab_completion():
    import os
    from windtunnel import __version__
    out = subprocess.run([sys.executable, "-m", "windtunnel", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"windtunnel {__version__}"
    env = {**os.environ, "COMP_LINE": "windtunnel sweep model=tin", "COMP_POINT": "26"}
    out = subprocess.run([sys.executable, "-m", "windtunnel", "-sc", "query=bash"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0 and set(out.stdout.split()) == {f"model=tiny{w}" for w in (32, 64, 96, 128, 256, 384)}
    out = subprocess.run([sys.executable, "-m", "windtunnel", "-sc", "install=bash"], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip().endswith("complete -o nospace -o default -F hydra_bash_completion windtunnel")


@pytest.mark.parametrize("line, expected", [
    ("windtunnel ", {"train", "resolution", "runs", "fit", "plot", "report", "demo", "predict", "launch", "sweep",
                     "--help", "--version", "--quiet", "--verbose"}),
    ("windtunnel f", {"fit"}),
    ("windtunnel -q fit runs/x --la", {"--law"}),
    ("windtunnel fit runs/x --law ", {"all", "batch-size", "batch-size-data", "lr", "loss", "isoflop", "critical-batch"}),
    ("windtunnel plot --kind batch-size-", {"batch-size-law"}),
    ("windtunnel predict --reference ", {"none", "minicpm"}),
    ("windtunnel sweep --mu", {"--multirun"}),
    ("windtunnel train model=tiny12", {"model=tiny128"}),  # the overrides of train and resolution are Hydra's
    ("windtunnel resolution optim.l", {"optim.lr="}),
    ("windtunnel -v sweep -m model=tiny3", {"model=tiny32", "model=tiny384"}),
    ("windtunnel runs ", set()),  # a path: nothing printed leaves the shell's file completion
])
def test_tab_completion_of_every_subcommand_its_options_and_choices(line, expected):
    out = cli("-sc", "query=bash", env={"COMP_LINE": line + " --ignored-after-the-cursor", "COMP_POINT": str(len(line))})
    assert out.returncode == 0 and set(out.stdout.split()) == expected, out.stdout + out.stderr


def test_a_launcher_whose_extra_is_missing_names_the_pip_install(monkeypatch):
    """Without hydra-submitit-launcher (the cluster extra) Hydra cannot find launcher=slurm's submitit_slurm."""
    from windtunnel import compose
    from windtunnel.config import ConfigError
    monkeypatch.setattr(compose, "installed", lambda module: False)
    with pytest.raises(ConfigError, match=r"the submitit_nowhere launcher is not installed: pip install 'windtunnel\[cluster\]'"):
        compose.compose_config(["hydra/launcher=submitit_nowhere"], hydra_node=True)


@pytest.mark.slow
def test_a_trial_shows_a_live_progress_bar_on_a_terminal_and_nothing_with_quiet(tmp_path):
    """On a terminal (a pty here): tqdm's line with tokens, tokens/s, ETA and the loss; a log line per eval.
    With -q: neither. Not a terminal (captured): the eval log lines only, no bar."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    args = [sys.executable, "-m", "windtunnel", "train", "model=tiny32", "train=cpu", "train.total_tokens=65536",
            "train.eval_tokens=4096", "train.final_eval_tokens=0"]

    def on_a_terminal(*extra):
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
        proc = subprocess.Popen([*args, *extra], stdin=follower, stdout=follower, stderr=follower, close_fds=True)
        os.close(follower)
        chunks = []
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            try:
                chunk = os.read(leader, 65536) if ready else b""
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=120)
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    shown = on_a_terminal("--out", str(tmp_path / "a"))
    assert "tok/s" in shown and "loss=" in shown and "65.5k" in shown  # tqdm: done/total tokens, rate, loss
    assert "held-out loss" in shown
    quiet = on_a_terminal("--out", str(tmp_path / "b"), "-q")
    assert "tok/s" not in quiet and "held-out loss" not in quiet and '"status": "completed"' in quiet
    piped = cli(*args[3:], "--out", str(tmp_path / "c"), check=True)
    assert "tok/s" not in piped.stderr and piped.stderr.count("held-out loss") >= 5


def test_the_cmaes_sampler_without_its_package_is_one_line_naming_the_extra(monkeypatch):
    from windtunnel import compose
    from windtunnel.config import ConfigError
    from windtunnel.sweep import app
    monkeypatch.setattr(compose, "installed", lambda module: module != "cmaes")
    with pytest.raises(ConfigError, match=r"sampler=cmaes needs the cmaes package: pip install 'windtunnel\[cmaes\]'"):
        app.preflight(["hydra/sweeper=windtunnel_optuna", "hydra.sweeper.sampler=cmaes", "model=tiny32",
                       "optim.lr=tag(log,interval(0.001,0.1))"])


REFUSED = [("model.norm_eps=-1", "model.norm_eps=-1.0 must be in (0, 1)"),
           ("model.rope_theta=0", "model.rope_theta=0.0 must be > 1"),
           ("train.seed=-1", "train.seed=-1 must be a non-negative integer"),
           ("optim.eps=-1", "optim.eps=-1.0 must be in (0, 1)"),
           ("train.total_tokens=1e30", "is beyond any run"),
           ("train.eval_points=1e9", "exceeds the run's 64 steps"),
           ("model.vocab_size=1e9", "model.vocab_size=1000000000 is beyond any tokenizer"),
           ("model=minicpm-2.4b", "needs about 4"),  # 42 GiB of states and activations: more than a CI machine has
           ("train.micro_batch_size=100000", "is not divisible by train.seq_len x train.micro_batch_size")]


def test_bad_numbers_are_refused_before_any_compute(tmp_path):
    import torch
    for override, message in REFUSED + ([] if torch.cuda.is_available() else
                                        [("train.device=cuda", "CUDA is not available here")]):
        out = cli("train", "model=tiny32", "train=cpu", override, "--out", str(tmp_path / "x"), check=False)
        assert out.returncode == 2 and message in out.stderr, (override, out.stderr[-500:])
        assert "Traceback" not in out.stderr and not (tmp_path / "x").exists(), override


def test_a_recorded_trial_of_wrong_types_and_a_law_with_a_null_parameter_are_one_line_errors(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"trial": {"train": {"total_tokens": "lots"}}}))
    out = cli("train", "--config", str(tmp_path / "bad.json"), "--dry-run", check=False)
    assert out.returncode == 2 and "Value 'lots' of type 'str' could not be converted to Integer" in out.stderr
    law = {"law": "batch_size", "form": "power_law", "units": {}, "n_points": 3,
           "parameters": {"a": {"value": None, "interval": None}, "b": {"value": 2.0, "interval": [1.5, 2.5]}}}
    (tmp_path / "fits.json").write_text(json.dumps({"fits": {"batch_size": law}}))
    out = cli("predict", "--fits", str(tmp_path / "fits.json"), "--target", "w36m", "--tokens", "1e9",
             "--target-loss", "3", check=False)
    assert out.returncode == 2 and "batch_size law: a = None is not a finite number" in out.stderr
    assert "Traceback" not in out.stderr


def test_fit_out_under_a_file_size_limit_keeps_the_previous_fits(tmp_path):
    """`fit --out` writes atomically: under a file-size limit too small for the new fits.json, the previous one is
    intact and the error is one line naming the file."""
    from pathlib import Path
    record = Path(__file__).resolve().parents[1] / "sweeps" / "lr_transfer"
    out = tmp_path / "fits.json"
    out.write_text('{"previous": true}')
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)); from windtunnel.cli import main; "
              f"sys.exit(main(['fit', {str(record)!r}, '--law', 'lr', '--boot', '20', '--out', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"windtunnel fit: error: could not write {out}: File too large; " \
                                                   f"the previous file is unchanged"
    assert out.read_text() == '{"previous": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["fits.json"]


def test_a_missing_data_folder_and_a_dangling_out_symlink_are_one_line(tmp_path):
    out = cli("sweep", "-m", "data=text_dir", "data.path=/nonexistent", "model=tiny32", "train.total_tokens=16384",
              cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "windtunnel sweep: error: data.path='/nonexistent' is not a folder of text files; give an existing folder "
        "(data.path=/path/to/texts), or another data source (data=stdlib_bpe)"]
    (tmp_path / "dangle").symlink_to(tmp_path / "nowhere" / "dir")
    out = cli("train", "model=tiny32", "train.total_tokens=16384", "data.max_bytes=2000000", "--out",
              str(tmp_path / "dangle"), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        f"windtunnel train: error: {tmp_path / 'dangle'} is a symlink to {tmp_path / 'nowhere' / 'dir'}, which does "
        f"not exist: create that folder, or give another run directory")


def test_ctrl_c_ends_with_one_line_and_the_command_that_resumes(monkeypatch):
    import windtunnel.cli as cli_module
    from windtunnel.sweep import app

    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(app, "main", interrupted)
    out = cli("sweep", "-m", "model=tiny32,tiny64", "optim.lr=0.01")
    assert out.returncode == 130 and out.stderr.strip().splitlines() == [
        "windtunnel sweep: interrupted. Finished runs are kept and unfinished ones resume from their last checkpoint: "
        "run the same command again (windtunnel sweep -m model=tiny32,tiny64 optim.lr=0.01)"]
    monkeypatch.setattr(cli_module, "cmd_train", interrupted)
    out = cli("train", "model=tiny32", "--out", "/tmp/x y")
    assert out.returncode == 130 and out.stderr.strip().endswith("(windtunnel train model=tiny32 --out '/tmp/x y')")
