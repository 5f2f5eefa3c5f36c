"""The full-scale hand-off: rendered scripts against snapshots, batch splits, clear errors, and a real
two-process launch on CPU, plus a decay launched from a stable checkpoint with mixed-in data."""
import json
import os
import pathlib

import numpy as np
import pytest

from conftest import cli, free_port
from windtunnel import laws, runs
from windtunnel.config import ConfigError, to_dict
from windtunnel.config import split_batch
from windtunnel.launch import LaunchSpec, decay_trial, full_scale_trial, memory_plan, write_launch
from windtunnel.predict import predict, target_model

SNAPSHOTS = pathlib.Path(__file__).parent / "snapshots"
SPEC = LaunchSpec(nnodes=4, nproc_per_node=8, gpu_memory_gb=80, partition="gpu", account="lm", round_batch=True)


def minicpm_prediction() -> dict:
    pred = predict(target_model("2.4B"), tokens=1.1e12, target_loss=2.5,
                   batch_size=laws.REFERENCE["minicpm-batch-size"], lr=laws.REFERENCE["minicpm-lr"])
    return json.loads(json.dumps(pred.to_json()))


@pytest.mark.parametrize("name", ["launch.sh", "job.sbatch", "torchtitan.toml", "megatron_args.txt", "trial.json"])
def test_rendered_files_match_snapshots(tmp_path, name):
    write_launch(minicpm_prediction(), SPEC, tmp_path)
    got = (tmp_path / name).read_text()
    snap = SNAPSHOTS / f"minicpm-2.4b-4x8.{name}"
    if os.environ.get("WINDTUNNEL_UPDATE_SNAPSHOTS"):
        snap.write_text(got)
    assert got == snap.read_text(), f"{name} changed; rerun with WINDTUNNEL_UPDATE_SNAPSHOTS=1 if intended"


def test_full_scale_numbers():
    trial, plan = full_scale_trial(minicpm_prediction(), SPEC)
    t = trial.train
    assert t.batch_size_tokens == 960 * 4096  # 971 predicted sequences, rounded to a multiple of 32 GPUs
    assert plan["micro"] * plan["accum"] * SPEC.world * t.seq_len == t.batch_size_tokens
    assert plan["parallel"] == "fsdp"  # 2.7B parameters x 16 bytes do not fit 40% of an 80 GB GPU: shard
    assert t.device == "cuda" and t.dtype == "bf16" and t.keep_checkpoint
    assert trial.optim.lr == 0.01 and trial.model.width_mult == 9
    assert t.total_tokens == pytest.approx(1.1e12, rel=1e-3)


def test_split_always_multiplies_back():
    """config.split_batch, the one splitter (the trainer's and launch's): micro x accum x world x seq_len is the batch,
    the micro-batch is the largest divisor of a rank's sequences within the cap; what cannot split is refused."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        world = int(rng.choice([1, 2, 3, 4, 6, 8, 16, 64]))
        seq = int(rng.choice([64, 512, 2048, 4096]))
        seqs = world * int(rng.integers(1, 200))
        cap = int(rng.integers(1, 64))
        micro, accum = split_batch(seqs * seq, seq, world, max_micro=cap)
        assert micro * accum * world * seq == seqs * seq and 1 <= micro <= cap
        assert micro == max(d for d in range(1, min(cap, seqs // world) + 1) if (seqs // world) % d == 0)
    with pytest.raises(ConfigError, match="971 sequences cannot be split over a world size of 32; use 960 or 992"):
        split_batch(971 * 4096, 4096, 32, max_micro=8)
    with pytest.raises(ConfigError, match=r"train.batch_size_tokens=2880 is not divisible by train.seq_len x "
                                          r"train.micro_batch_size x ranks = 64 x 2 x 3 = 384; use a multiple of 384"):
        split_batch(2880, 64, 3, micro=2)
    assert split_batch(2880, 64, 3, micro=3) == (3, 5)


def test_a_model_too_big_for_one_sequence_is_refused_before_anything(tmp_path):
    big = predict(target_model("2.4B"), tokens=1e11, target_loss=2.5, batch_size=laws.REFERENCE["minicpm-batch-size"],
                  lr=laws.REFERENCE["minicpm-lr"])
    assert memory_plan(big.trial, LaunchSpec(gpu_memory_gb=8))["max_micro"] < 1
    with pytest.raises(ConfigError, match="one sequence does not fit in GPU memory"):
        write_launch(big.to_json(), LaunchSpec(gpu_memory_gb=8), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_unsplittable_prediction_is_refused_before_anything(tmp_path):
    with pytest.raises(ConfigError, match="cannot be split over a world size of 32"):
        write_launch(minicpm_prediction(), LaunchSpec(nnodes=4, nproc_per_node=8), tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_predict_then_launch_runs_two_processes_on_cpu(tmp_path):
    """predict --json > p.json && launch p.json --out full --run, for a tiny target on CPU (gloo)."""
    fits = {"fits": {"batch_size": {"law": "batch_size", "form": "power_law", "units": {}, "n_points": 3,
                                    "parameters": {"a": {"value": 1536.0, "interval": None},
                                                   "b": {"value": 1.0, "interval": None}}, "samples": []}}}
    (tmp_path / "fits.json").write_text(json.dumps(fits))
    out = cli("predict", "--fits", "fits.json", "--reference", "minicpm", "--target", "tiny64", "--tokens", "40960",
             "--target-loss", "1.5", "--seq-len", "64", "--json", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert out.returncode == 0, out.stderr
    (tmp_path / "p.json").write_text(out.stdout)
    assert json.loads(out.stdout)["predictions"]["batch_size_tokens"]["value"] == 1024  # 1536 / 1.5
    out = cli("launch", "p.json", "--out", "full", "--nproc-per-node", "2", "--device", "cpu", "--gpu-memory-gb", "4",
             "--run", cwd=tmp_path,
             env={"PYTHON": "/nonexistent/python3", "MASTER_PORT": free_port()})
    assert out.returncode == 0, out.stderr[-3000:]
    result = runs.read_result(tmp_path / "full" / "run")
    config = runs.read_json(tmp_path / "full" / "run" / "config.json")
    assert result.status == "completed" and result.steps == 40 and config["world_size"] == 2
    assert config["trial"]["train"]["batch_size_tokens"] == 1024 and config["trial"]["optim"]["lr"] == 0.01


@pytest.mark.slow
def test_decay_from_a_stable_checkpoint_with_mixed_data(tmp_path):
    from conftest import tiny_trial
    from windtunnel.train import run_trial
    stable = tiny_trial("schedule.kind=constant", log_every=1, keep_checkpoint=True, checkpoint_every=20,
                        total_tokens=40 * 2048)
    run_trial(stable, tmp_path / "stable")
    (tmp_path / "hq").mkdir()
    for i in range(40):
        (tmp_path / "hq" / f"{i}.txt").write_text("def good(x):\n    return x\n" * (50 + i))
    ckpt = tmp_path / "stable" / "checkpoint"
    assert runs.read_json(ckpt / "meta.json")["step"] == 40  # keep_checkpoint keeps the last step's (40 steps)
    trial = decay_trial(ckpt, 10 * 2048, [f"0.5:text_dir:{tmp_path / 'hq'}"])
    assert trial.train.total_tokens == 50 * 2048 and trial.schedule.decay_tokens == 10 * 2048
    assert trial.data.mixture == [f"0.5:text_dir:{tmp_path / 'hq'}"]
    # a decay that would change the model's shape is one line at launch time, not an error inside torchrun
    wrong = cli("launch", "--decay-from", str(ckpt), "--decay-tokens", str(10 * 2048), "--out", "wrong", "--device",
                "cpu", "--gpu-memory-gb", "4", "model.d_model=96", cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr[-2000:]
    assert "model.d_model=96 (the checkpoint's: 64)" in wrong.stderr and not (tmp_path / "wrong").exists()
    out = cli("launch", "--decay-from", str(ckpt), "--decay-tokens", str(10 * 2048), "--data-mixture",
             f"0.5:text_dir:{tmp_path / 'hq'}", "--out", "decay", "--device", "cpu", "--gpu-memory-gb", "4", "--run",
             cwd=tmp_path, env={"PYTHON": "/nonexistent/python3", "MASTER_PORT": free_port()})
    assert out.returncode == 0, out.stderr[-3000:]
    decayed = runs.read_metrics(tmp_path / "decay" / "run")
    base = {m["step"]: m for m in runs.read_metrics(tmp_path / "stable")}
    assert [m for m in decayed if m["step"] <= 40] == [base[m["step"]] for m in decayed if m["step"] <= 40]
    assert decayed[-1]["step"] == 50 and decayed[-1]["lr"] < 0.01 * 0.5
    result = runs.read_result(tmp_path / "decay" / "run")
    assert result.status == "completed"
    final = tmp_path / "decay" / "run" / "final"  # a launched run ends with its final weights saved
    assert runs.read_json(final / "meta.json")["step"] == 50 and (final / "state.pt").stat().st_size > 0
    assert runs.read_json(tmp_path / "decay" / "run" / "config.json")["trial"]["train"]["init_from"] == str(ckpt.resolve())


@pytest.mark.slow
def test_checkpoint_of_another_shape_is_refused(tmp_path):
    from conftest import tiny_trial
    from windtunnel.train import run_trial
    stable = tiny_trial(keep_checkpoint=True)
    run_trial(stable, tmp_path / "stable")
    other = tiny_trial("model.d_model=128", "model.n_heads=4", init_from=str(tmp_path / "stable" / "checkpoint"))
    with pytest.raises(ConfigError, match=r"different model shape \(d_model 64 there, 128 here"):
        run_trial(other, tmp_path / "other")
    assert not runs.read_metrics(tmp_path / "other")


@pytest.mark.slow
def test_final_weights_and_the_kept_checkpoint_are_the_last_step(tmp_path):
    """A 60-step run: save_final writes RUN/final at step 60 (weights equal to a resume's), keep_checkpoint keeps
    step 60, not the last one before the end; without either, nothing is left."""
    import torch
    from conftest import tiny_trial
    from windtunnel.train import run_trial
    run_trial(tiny_trial(save_final=True, keep_checkpoint=True), tmp_path / "kept")
    for name in ("final", "checkpoint"):
        assert runs.read_json(tmp_path / "kept" / name / "meta.json")["step"] == 60
    a = torch.load(tmp_path / "kept" / "final" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "kept" / "checkpoint" / "state.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run_trial(tiny_trial(), tmp_path / "plain")
    assert not (tmp_path / "plain" / "final").exists() and not (tmp_path / "plain" / "checkpoint").exists()


def test_launch_refuses_what_it_should_not_write(tmp_path):
    pred = {"trial": {"model": {"name": "2.4b$(touch${IFS}PWNED)", "d_model": 256, "n_layers": 4, "n_heads": 4}}}
    (tmp_path / "evil.json").write_text(json.dumps(pred))
    out = cli("launch", str(tmp_path / "evil.json"), "--out", "x", "--device", "cpu", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert out.returncode == 2 and "model.name='2.4b$(touch${IFS}PWNED)' must be a plain name" in out.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "PWNED").exists()
    (tmp_path / "empty.json").write_text(json.dumps({"trial": {}}))
    out = cli("launch", str(tmp_path / "empty.json"), "--out", "y", "--device", "cpu", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert out.returncode == 2 and "has no model size" in out.stderr and not (tmp_path / "y").exists()
    out = cli("launch", str(tmp_path / "evil.json"), "--out", "z", "--nproc-per-node", "0", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert out.returncode == 2 and "--nproc-per-node 0 must be a positive integer" in out.stderr
    pred["trial"]["model"]["name"] = "small"
    (tmp_path / "ok.json").write_text(json.dumps(pred))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "README.md").write_text("my notes")
    out = cli("launch", str(tmp_path / "ok.json"), "--out", "busy", "--device", "cpu", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert out.returncode == 2 and "is not empty" in out.stderr
    assert (tmp_path / "busy" / "README.md").read_text() == "my notes"
    out = cli("launch", str(tmp_path / "ok.json"), "--out", "busy", "--device", "cpu", "--force", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert out.returncode == 0 and "--rdzv_id=windtunnel-small" in (tmp_path / "busy" / "launch.sh").read_text()


def test_decay_from_reads_the_run_beside_its_checkpoint_not_the_working_directory(tmp_path, monkeypatch):
    """An old checkpoint whose meta names its run relatively ("r"): from a directory that has another r/, the
    decay still takes the config (LR) of the run that wrote the checkpoint."""
    from conftest import tiny_trial
    from windtunnel.train import run_trial
    stable = tiny_trial("schedule.kind=constant", "optim.lr=0.004", keep_checkpoint=True, total_tokens=20 * 2048)
    run_trial(stable, tmp_path / "a" / "r")
    meta = runs.read_json(tmp_path / "a" / "r" / "checkpoint" / "meta.json")
    runs.write_json(tmp_path / "a" / "r" / "checkpoint" / "meta.json", {**meta, "run_dir": "r"})
    decoy = tiny_trial("optim.lr=0.5")
    (tmp_path / "b" / "r").mkdir(parents=True)
    runs.write_json(tmp_path / "b" / "r" / "config.json", {"trial": to_dict(decoy)})
    monkeypatch.chdir(tmp_path / "b")
    trial = decay_trial(tmp_path / "a" / "r" / "checkpoint", 4 * 2048, [])
    assert trial.optim.lr == 0.004 and trial.train.save_final



def test_launch_overrides_set_the_corpus_and_the_readme_says_what_it_trains_on(tmp_path):
    """A prediction carries the default (embedded) corpus: the launch README warns; overrides on the command line
    (group choices and fields, as for train) put the proxies' corpus into trial.json and leave the rest alone."""
    p = tmp_path / "p.json"
    p.write_text(json.dumps(minicpm_prediction()))
    plain = cli("launch", "p.json", "--out", "plain", "--nnodes", "4", "--nproc-per-node", "8", "--round-batch", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert plain.returncode == 0, plain.stderr
    assert "WARNING: this is windtunnel's embedded demo corpus" in (tmp_path / "plain" / "README.md").read_text()
    assert "embedded demo corpus" in plain.stderr
    done = cli("launch", "p.json", "data=stdlib_site_bpe", "data.eval_frac=0.01", "train.seed=3", "--out", "mine",
              "--nnodes", "4", "--nproc-per-node", "8", "--round-batch", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert done.returncode == 0, done.stderr
    assert "embedded demo corpus" not in done.stderr
    mine, base = (json.loads((tmp_path / d / "trial.json").read_text()) for d in ("mine", "plain"))
    assert (mine["data"]["source"], mine["data"]["tokenizer"], mine["data"]["bpe_vocab_size"]) == ("stdlib+site", "bpe", 8192)
    assert mine["data"]["eval_frac"] == 0.01 and mine["train"]["seed"] == 3
    assert {k: v for k, v in mine.items() if k != "data"} == {**{k: v for k, v in base.items() if k != "data"},
                                                              "train": {**base["train"], "seed": 3}}
    readme = (tmp_path / "mine" / "README.md").read_text()
    assert "`data.source=stdlib+site`, tokenizer `bpe` (8192)" in readme and "WARNING" not in readme
    bad = cli("launch", "p.json", "data=nope", "--out", "bad", "--nnodes", "4", "--nproc-per-node", "8",
             "--round-batch", cwd=tmp_path, env={"PYTHON": "/nonexistent/python3"})
    assert bad.returncode == 2 and "data='nope' is not an option of the data group" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_launch_scripts_never_reparse_a_path_or_the_interpreter(tmp_path):
    """An --out folder named with a space, quotes, $(...) and backticks, and an interpreter whose path holds a space:
    job.sbatch (under stub srun/scontrol) and launch.sh reach the interpreter with the folder's own paths as single
    arguments, and run nothing else (no file created by the name's commands)."""
    import subprocess
    import dataclasses
    bin_dir, py_dir = tmp_path / "bin", tmp_path / "py dir"
    bin_dir.mkdir()
    py_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (py_dir / "python3").write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" > {calls}\n")
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho node0\n")
    for stub in (py_dir / "python3", bin_dir / "srun", bin_dir / "scontrol"):
        stub.chmod(0o755)
    out = tmp_path / "runs" / "a b'q$(touch PWNED1)`touch PWNED2`"
    write_launch(minicpm_prediction(), dataclasses.replace(SPEC, python=str(py_dir / "python3")), out)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_NNODES": "1",
           "SLURM_JOB_NODELIST": "node0", "SLURM_NODEID": "0"}
    for script in ("job.sbatch", "launch.sh"):
        calls.unlink(missing_ok=True)
        done = subprocess.run(["bash", str(out / script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        argv = calls.read_text().splitlines()
        assert argv[:2] == ["-m", "torch.distributed.run"] and argv[-7:] == [
            "-m", "windtunnel.cli", "train", "--config", str(out / "trial.json"), "--out", str(out / "run")]
    assert not list(tmp_path.rglob("PWNED*"))
