"""runs.Run, the run directory as one object: its layout, its decision (skip, refuse, resume), the one list of
identity keys and the run dir names it agrees with, and the public API a newcomer imports."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_trial
from windtunnel import runs
from windtunnel.compose import compose, compose_config, compose_record, run_dir_name
from windtunnel.config import IDENTITY_EXEMPT, RUN_DIR_EXCLUDE, ConfigError, TrainConfig, to_dict
from windtunnel.runs import Run, RunResult, RunStatus


def test_a_run_owns_every_path_of_its_directory(tmp_path):
    run = Run(tmp_path / "r")
    assert run.checkpoint == tmp_path / "r" / "checkpoint" and run.final == tmp_path / "r" / "final"
    assert run.branch_point(23) == tmp_path / "r" / "checkpoints" / "step23"
    assert run.branch(0.5) == tmp_path / "r" / "decay_0.5N" and run.branch(10.0) == tmp_path / "r" / "decay_10N"
    assert run.restarted == tmp_path / "r" / "metrics.restarted.jsonl"
    # the run that wrote a checkpoint is found beside it, whatever the working directory
    for ckpt in (run.checkpoint, run.final, run.branch_point(23)):
        ckpt.mkdir(parents=True)
        (ckpt / "meta.json").write_text(json.dumps({"step": 1}))
    (tmp_path / "r" / "config.json").write_text(json.dumps({"trial": {}}))
    assert {Run.of_checkpoint(p).path for p in (run.checkpoint, run.final, run.branch_point(23))} == {run.path.resolve()}
    with pytest.raises(ConfigError, match="the config.json of the run that wrote it is not beside it"):
        Run.of_checkpoint(tmp_path)


def test_config_json_is_read_once_and_the_trial_resolved_once(tmp_path, monkeypatch):
    cfg = tiny_trial("train.tokens_per_param=2")
    run = Run(tmp_path / "r", cfg)
    assert run.trial.train.total_tokens == round(2 * 94_528 / 2048) * 2048  # 2N tokens of tiny64, whole batches
    run.path.mkdir()
    runs.write_json(run.path / "config.json", {"trial": to_dict(run.trial)})
    reads = []
    real = runs.run.read_json
    monkeypatch.setattr(runs.run, "read_json", lambda path: reads.append(path) or real(path))
    assert run.finished_result() is None and run.finished_result() is None
    run.check_corpus("anything")  # no manifest recorded: nothing to hold it to
    assert len(reads) == 1  # config.json, once


def test_skip_refuse_or_resume(tmp_path):
    cfg = tiny_trial()
    run = Run(tmp_path / "r", cfg)
    assert run.finished_result() is None and run.resume_from() is None  # a new directory: a fresh start
    run.path.mkdir()
    runs.write_json(run.path / "config.json", {"trial": to_dict(run.trial)})
    runs.write_result(run.path, RunResult(RunStatus.COMPLETED, final_eval_loss=2.0))
    assert Run(run.path, cfg).finished_result().final_eval_loss == 2.0  # finished: skipped
    assert Run(run.path, tiny_trial(skip_completed=False)).finished_result() is None  # asked to train again
    # how it runs (runtime fields) never makes it another trial; what it computes does
    assert Run(run.path, tiny_trial(threads=1, log_every=1, keep_checkpoint=True, device="cpu")).finished_result()
    with pytest.raises(ConfigError, match=r"holds a different trial \(optim.lr: 0.01 there, 0.02 now\)"):
        Run(run.path, tiny_trial("optim.lr=0.02")).finished_result()
    # an unfinished run resumes from its checkpoint when it has its weights, else starts again
    runs.write_result(run.path, RunResult(RunStatus.RUNNING))
    run.checkpoint.mkdir()
    (run.checkpoint / "meta.json").write_text(json.dumps({"step": 5, "format": "full"}))
    assert Run(run.path, cfg).resume_from() is None  # meta.json without state.pt
    (run.checkpoint / "state.pt").write_bytes(b"")
    assert Run(run.path, cfg).resume_from() == run.checkpoint


def test_one_list_of_identity_keys_from_the_split_of_the_config():
    """The fields marked runtime(...) are the keys a run dir ignores and the keys its name leaves out: one list."""
    marked = {f"train.{f.name}" for f in TrainConfig.__dataclass_fields__.values() if f.metadata.get("runtime")}
    assert marked == {k for k in IDENTITY_EXEMPT if k.startswith("train.")} and "data.cache_dir" in IDENTITY_EXEMPT
    assert {"train.device", "train.threads", "train.log_every", "train.pack", "train.keep_checkpoint"} <= marked
    assert not {"train.seed", "train.batch_size_tokens", "train.total_tokens", "train.dtype"} & marked
    assert set(IDENTITY_EXEMPT) <= set(RUN_DIR_EXCLUDE)
    hydra = compose_config(["model=tiny32"], hydra_node=True).hydra.job.config.override_dirname.exclude_keys
    assert list(hydra) == list(RUN_DIR_EXCLUDE)  # conf/config.yaml reads it, it keeps no list of its own


@pytest.mark.parametrize("overrides", [
    ["model=tiny32", "optim.lr=0.01", "train.batch_size_tokens=1024"],
    ["train.threads=1", "train.keep_checkpoint=true", "data.path=/x/y", "tuning.trial_number=3", "optim.lr=1e-3"],
    ["++train.seed=4", "schedule=cosine", "train.branch_at_n=[0.5,1]", "hydra.sweep.dir=elsewhere", "sweep=lr_transfer"],
    ["model.d_model=512", "model.parametrization=mup", "optim.lr=0.0027621358640099515", "train.seed=0"],
])
def test_run_dir_names_are_hydras_read_off_the_overrides(overrides):
    """The name preflight gives a job without composing it is the one Hydra gives it (the reference)."""
    assert run_dir_name(overrides) == compose_config(overrides, hydra_node=True).hydra.job.override_dirname


def test_the_decay_branch_is_built_from_its_record_like_any_trial(tmp_path):
    from windtunnel.train.trial import branch_config
    stable = tiny_trial("schedule.decay_frac=0.2", branch_at_n=[0.5, 1.0])
    branch = branch_config(stable, 46, tmp_path / "ckpt", 1.0)
    assert branch.name == "tiny-decay1N" and branch.train.init_from == str(tmp_path / "ckpt")
    assert branch.train.total_tokens == (46 + 12) * 2048 and branch.schedule.decay_tokens == 12 * 2048
    assert branch == compose_record(to_dict(branch))  # a record of it composes back to it


def test_the_public_api_is_five_names_and_importing_it_loads_neither_torch_nor_scipy():
    code = ("import sys, windtunnel\nassert 'torch' not in sys.modules and 'scipy' not in sys.modules\n"
            "from windtunnel import compose, run_trial, load_runs, fit, predict\n"
            "print(sorted(windtunnel.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout) == ["ConfigError", "TrialConfig", "__version__", "compose", "fit", "load_runs", "predict",
                                 "run_trial"]
    import windtunnel
    from windtunnel import fit, load_runs, predict
    assert windtunnel.compose(["model=tiny32"]) == compose(["model=tiny32"])  # the module is its function
    assert pickle.loads(pickle.dumps(windtunnel.compose)) is windtunnel.compose  # joblib and submitit pickle jobs
    assert callable(fit) and callable(predict) and fit.batch_size_law and predict.target_model
    tables = load_runs(Path(__file__).resolve().parents[1] / "sweeps" / "batch_size")
    fits, not_fittable = fit(tables, ["batch-size"], n_boot=20)
    assert not not_fittable and fits["batch_size"].params["b"] == pytest.approx(2.1001, abs=1e-3)


def _tree(root, n_runs: int, n_points: int):
    import json
    from windtunnel import compose as compose_trial
    from windtunnel import runs
    from windtunnel.config import to_dict
    trial = to_dict(compose_trial([]))
    for i in range(n_runs):
        run = root / f"r{i}"
        run.mkdir(parents=True)
        runs.write_json(run / "config.json", {"trial": trial, "sweep": "s", "overrides": f"optim.lr={i}"})
        runs.write_json(run / "result.json", {"status": "completed", "N": 1000 + i, "final_eval_loss": 3.0})
        with open(run / "metrics.jsonl", "w") as f:
            for step in range(n_points):
                f.write(json.dumps({"step": step, "tokens": step * 1024, "lr": 0.01, "train_loss": 3.0 - step / 1e3,
                                    **({"eval_loss": 3.1} if step % 10 == 0 else {})}) + "\n")


def test_load_points_is_each_runs_row_joined_to_its_points(tmp_path):
    """The vectorised table equals the one a dict per point gives ({**run, **point}), column order included."""
    import pandas as pd
    from windtunnel.runs import load_points, read_metrics, run_dirs
    from windtunnel.runs.dirs import _run_row
    _tree(tmp_path, 4, 12)
    reference = pd.DataFrame([{**_run_row(d), **m} for d in run_dirs(tmp_path) for m in read_metrics(d)])
    got = load_points(tmp_path)
    assert list(got.columns) == list(reference.columns)
    pd.testing.assert_frame_equal(got, reference, check_dtype=False)


@pytest.mark.slow
def test_load_points_holds_110k_points_in_little_memory_and_time(tmp_path):
    """1,000 runs of 110 logged points: a dict per point held 2.6 GB and took 67 s (the issue's measurement)."""
    import time
    from windtunnel.runs import load_points
    _tree(tmp_path, 1000, 110)
    start = time.time()
    table = load_points(tmp_path)
    took = time.time() - start
    assert table.shape[0] == 110_000 and took < 10
    assert table.memory_usage(deep=False).sum() < 300e6


def test_run_dirs_follow_a_symlinked_sweep_folder_once_and_survive_a_loop(tmp_path):
    from windtunnel.runs import load_results, run_dirs
    elsewhere = tmp_path / "scratch" / "sweep_a"
    _tree(elsewhere, 3, 2)
    root = tmp_path / "runs"
    _tree(root / "sweep_b", 2, 2)
    (root / "sweep_a").symlink_to(elsewhere, target_is_directory=True)  # a sweep kept on another disk
    (root / "sweep_b" / "loop").symlink_to(root, target_is_directory=True)  # points back up the tree
    found = run_dirs(root)
    assert [p.relative_to(root).as_posix() for p in found] == [
        "sweep_a/r0", "sweep_a/r1", "sweep_a/r2", "sweep_b/r0", "sweep_b/r1"]
    assert len(load_results(root)) == 5


def test_runs_where_shows_and_exports_only_the_runs_it_selects(tmp_path):
    """`windtunnel runs DIR --where EXPR` (the column language of fit): the table and --export keep the selected runs
    (sweeps/batch_size_8l splits its two LRs into two records this way); a committed record shows filtered too."""
    import json
    import pandas as pd
    from conftest import cli
    _tree(tmp_path / "sw", 4, 12)
    out = cli("runs", str(tmp_path / "sw"), "--by-seed", "--json", "--where", "N >= 1002")
    assert out.returncode == 0 and sorted(r["N"] for r in json.loads(out.stdout)) == [1002, 1003]
    done = cli("runs", str(tmp_path / "sw"), "--where", "N < 1001", "--export", str(tmp_path / "rec" / "runs.csv.gz"))
    assert done.returncode == 0 and "1 runs, 12 rows" in done.stdout
    table = pd.read_csv(tmp_path / "rec" / "runs.csv.gz")
    assert set(table["run_dir"]) == {"r0"} and len(table) == 12
    shown = cli("runs", str(tmp_path / "rec"), "--by-seed", "--json", "--where", "N > 1000")  # a record: none left
    assert shown.returncode == 1 and f"no runs under {tmp_path / 'rec'} match --where N > 1000" in shown.stderr
    shown = cli("runs", str(tmp_path / "rec"), "--by-seed", "--json", "--where", "N == 1000")
    assert shown.returncode == 0 and [r["N"] for r in json.loads(shown.stdout)] == [1000]


def test_runs_versus_gives_each_configuration_its_paired_seed_difference_from_the_reference():
    """`windtunnel runs RECORD --versus EXPR` on sweeps/batch_size_8l/lr0.0039_64Mtok: width 384's 32k batch against
    its 16k at seeds 0 and 1 is the mean of the two paired differences with a t(1) interval (12.706 x sd / sqrt 2),
    tied; a one-seed configuration has a difference and no interval; an EXPR naming several configurations is refused
    with the columns they differ in, and so is --versus with --by-seed."""
    import math
    import pandas as pd
    from conftest import cli
    record = Path(__file__).resolve().parents[1] / "sweeps" / "batch_size_8l" / "lr0.0039_64Mtok"
    done = cli("runs", str(record), "--json", "--versus", "`model.d_model` == 384 and `train.batch_size_tokens` == 16384")
    assert done.returncode == 0, done.stderr
    width = {1509504: 128, 6033664: 256, 13572480: 384}  # N -> width (the default columns)
    rows = {(width[r["N"]], r["train.batch_size_tokens"]): r for r in json.loads(done.stdout)}
    finals = pd.read_csv(record / "runs.csv.gz").groupby("run_dir").first()
    loss = {(r["model.d_model"], r["train.batch_size_tokens"], r["train.seed"]): r["final_eval_loss"]
            for _, r in finals.iterrows()}
    d = [loss[(384, 32768, s)] - loss[(384, 16384, s)] for s in (0, 1)]
    mean, half = sum(d) / 2, 12.706205 * abs(d[0] - d[1]) / math.sqrt(2) / math.sqrt(2)  # sd of 2 = |d0 - d1| / sqrt 2
    got = rows[(384, 32768)]
    assert (got["vs_n"], got["verdict"]) == (2, "tied within noise")
    assert [got["vs_mean"], got["vs_low"], got["vs_high"]] == pytest.approx([mean, mean - half, mean + half], abs=1e-6)
    assert rows[(384, 16384)]["verdict"] == "reference" and rows[(384, 16384)]["vs_mean"] == 0
    one = rows[(384, 131072)]  # seed 0 only, paired with the reference's seed 0
    assert one["vs_n"] == 1 and one["vs_low"] is None and one["verdict"] == "one seed: no interval"
    assert one["vs_mean"] == pytest.approx(loss[(384, 131072, 0)] - loss[(384, 16384, 0)], abs=1e-9)
    three = rows[(128, 16384)]  # seeds 0, 1, 2 against the reference's 0 and 1: paired over the shared two
    assert three["vs_n"] == 2
    text = cli("runs", str(record), "--versus", "`model.d_model` == 384 and `train.batch_size_tokens` == 16384")
    assert max(map(len, text.stdout.splitlines())) <= 120 and "tied within noise" in text.stdout  # a 120-column terminal
    many = cli("runs", str(record), "--versus", "`model.d_model` == 384")
    assert many.returncode != 0 and "selects 5 configurations (they differ in train.batch_size_tokens)" in many.stderr
    none = cli("runs", str(record), "--versus", "`model.d_model` == 999")  # counted 10 configurations before
    assert none.returncode != 0 and "selects 0 configurations: name exactly one" in none.stderr
    seeds = cli("runs", str(record), "--by-seed", "--versus", "`model.d_model` == 384")
    assert seeds.returncode != 0 and "leave out --points and --by-seed" in seeds.stderr


def test_every_committed_record_reads_as_a_run_table_whatever_pandas_does_with_missing_text():
    """pandas 3 keeps a missing text value missing through astype(str): sweeps/loss_law_8l (stable runs without a
    train.init_from, decay branches with one) crashed `windtunnel runs` in config_key. Each record's table is one
    row per configuration; loss_law_8l's are its 15 runs, width 384's stable run and 8N branch both at 1.915."""
    from conftest import cli
    root = Path(__file__).resolve().parents[1] / "sweeps"
    records = sorted(p.parent for p in root.rglob("runs.csv.gz"))
    assert len(records) >= 25
    for record in records:
        done = cli("runs", str(record), "--json")
        assert done.returncode == 0, f"{record}: {done.stderr[-500:]}"
        results, _ = runs.load_record(record / "runs.csv.gz")
        assert len(json.loads(done.stdout)) == runs.config_key(results).nunique(), record
    table = json.loads(cli("runs", str(root / "loss_law_8l"), "--json", check=True).stdout)
    assert len(table) == 15 and all(row["n"] == 1 for row in table)
    widest = [round(row["loss_mean"], 3) for row in table if row["N"] == 13_572_480]
    assert sorted(widest) == [1.915, 1.915, 2.107, 2.451, 3.7]
