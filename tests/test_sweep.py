"""Sweeps end to end: a Hydra grid through the CLI, resumption, the Optuna sweeper with pruning and
shared storages, and the joblib / submitit launchers."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import children, cli
from windtunnel import runs

TINY = ["model=tiny32", "train.seq_len=64", "train.total_tokens=32768", "train.eval_points=6", "train.eval_tokens=2048",
        "train.final_eval_tokens=0"]


@pytest.mark.slow
def test_batch_size_grid_through_the_cli_then_resume(tmp_path):
    grid = ["-m", "sweep=batch_size_cpu", *TINY, "train.batch_size_tokens=512,1024,2048"]
    cli("sweep", *grid, cwd=tmp_path, check=True)
    root = tmp_path / "runs" / "batch_size_cpu"
    dirs = runs.run_dirs(root)
    assert len(dirs) == 3
    table = runs.load_results(root).sort_values("train.batch_size_tokens")
    assert list(table["train.batch_size_tokens"]) == [512, 1024, 2048] and set(table["status"]) == {"completed"}
    assert set(table["model.name"]) == {"tiny32"} and set(table["schedule.kind"]) == {"cosine"}
    assert set(table["sweep"]) == {"batch_size_cpu"}
    assert all(f"train.batch_size_tokens={bs}" in o for bs, o in zip(table["train.batch_size_tokens"], table["overrides"]))
    assert list(table["tokens"]) == [32768] * 3
    stamps = {d: (d / runs.RESULT).stat().st_mtime_ns for d in dirs}
    out = cli("sweep", *grid, cwd=tmp_path, check=True)  # the same command again: every run is finished, nothing trains
    assert {d: (d / runs.RESULT).stat().st_mtime_ns for d in dirs} == stamps
    assert (out.stdout + out.stderr).count("completed final_eval_loss") == 3  # logged (Hydra's console: stdout)
    assert "windtunnel sweep: 3 of 3 runs already finished under runs/batch_size_cpu: skipped" in out.stderr
    listed = json.loads(cli("runs", str(root), "--json", cwd=tmp_path, check=True).stdout)
    assert sorted(r["train.batch_size_tokens"] for r in listed) == [512, 1024, 2048]


def test_a_torn_journal_tail_is_repaired_with_a_backup_and_a_bad_middle_line_is_named(tmp_path):
    import contextlib
    import io
    import optuna
    optuna.logging.get_verbosity()  # Optuna's handler made on the session's stderr, never on a stream this test closes
    from windtunnel.config import ConfigError
    from windtunnel.sweep.study import check_journal, make_storage
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=make_storage(str(path)))
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 4)})
        study.tell(trial, trial.params["x"] ** 2)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker_id": "ab')  # a worker killed mid-append
    with contextlib.redirect_stderr(io.StringIO()) as captured:
        storage = make_storage(str(path))
    loaded = optuna.load_study(study_name="s", storage=storage)
    assert [t.value for t in loaded.trials] == [1.0, 4.0, 9.0] and path.read_bytes() == whole
    backups = list(tmp_path.glob("optuna.journal.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == whole + b'{"op_code": 4, "worker_id": "ab'
    err = captured.getvalue()
    n_lines = whole.count(b"\n") + 1
    assert f"{path} line {n_lines} was torn by a crash (31 bytes, cut off)" in err
    lines = whole.split(b"\n")
    path.write_bytes(b"\n".join(lines[:2] + [b"garbage"] + lines[2:]))
    with pytest.raises(ConfigError, match=rf"{path} line 3 is not a journal record \(b'garbage'\)"):
        check_journal(str(path))


def test_sweep_info_prints_each_line_once(tmp_path):
    out = cli("sweep", "--info", cwd=tmp_path, check=True)
    text = out.stdout + out.stderr
    assert text.count("Installed Hydra Plugins") == 1 and text.count("BashCompletion") == 1 and "[windtunnel]" not in text


@pytest.mark.slow
def test_a_grid_of_many_overrides_gets_run_dir_names_that_fit_and_resume(tmp_path):
    """15 overrides name a run dir of 290 bytes, past the 255 a file name may hold ('File name too long'): it
    becomes a readable prefix of whole overrides plus a hash of all of them, the same in the preflight and in Hydra,
    and the same command again finds the runs finished."""
    from windtunnel.config import NAME_MAX, run_dir_name_of
    grid = ["-m", *TINY, "train.total_tokens=4096", "train.eval_points=2", "train.batch_size_tokens=1024",
            "train.micro_batch_size=16", "schedule.warmup_tokens=1024", "schedule.decay_frac=0.2",
            "optim.weight_decay=0.1", "optim.beta2=0.95", "data.max_bytes=2000000", "train.eval_set=sample",
            "optim.lr=0.003,0.006"]
    cli("sweep", *grid, cwd=tmp_path, check=True)
    dirs = runs.run_dirs(tmp_path / "runs" / "adhoc")
    assert len(dirs) == 2 and len({d.name for d in dirs}) == 2
    for d in dirs:
        lr = runs.read_json(d / runs.CONFIG)["trial"]["optim"]["lr"]
        full = ",".join(sorted(w for w in [*grid[1:-1], f"optim.lr={lr:g}"] if "total_tokens=32768" not in w
                               and "eval_points=6" not in w))
        assert len(full.encode()) > NAME_MAX and d.name == run_dir_name_of(full)
        assert len(d.name.encode()) <= NAME_MAX and d.name.startswith("data.max_bytes=2000000,model=tiny32,optim.beta2")
        assert re.fullmatch(r".*,train\.[a-z_]+=[^,]+--[0-9a-f]{12}", d.name), d.name
    stamps = {d: (d / runs.RESULT).stat().st_mtime_ns for d in dirs}
    out = cli("sweep", *grid, cwd=tmp_path, check=True)
    assert {d: (d / runs.RESULT).stat().st_mtime_ns for d in dirs} == stamps
    assert (out.stdout + out.stderr).count("completed final_eval_loss") == 2
    assert run_dir_name_of("a=1,b=2") == "a=1,b=2"  # a name that fits is left as it was (old sweeps resume)


@pytest.mark.slow
def test_a_grid_with_decay_branches_runs_again_without_retraining(tmp_path):
    """A run dir records its trial with the tokens resolved (the last decay branch sets train.total_tokens); the
    sweep's check of existing run dirs compared the unresolved trial and refused every run dir of a finished
    or killed sweep with branches as 'a different trial' (train.total_tokens: 24,576 there, 32,768 now)."""
    grid = ["-m", *TINY, "schedule=wsd", "schedule.warmup_frac=0", "schedule.warmup_tokens=2048",
            "train.branch_at_n=[0.5,1.0]", "train.batch_size_tokens=2048", "optim.lr=0.01,0.02"]
    cli("sweep", *grid, cwd=tmp_path, check=True)
    trunks = [d for d in runs.run_dirs(tmp_path / "runs" / "adhoc") if "decay_" not in d.name]
    assert len(trunks) == 2
    assert [runs.read_json(d / runs.CONFIG)["trial"]["train"]["total_tokens"] for d in trunks] == [12 * 2048] * 2
    stamps = {d: (d / runs.RESULT).stat().st_mtime_ns for d in runs.run_dirs(tmp_path / "runs" / "adhoc")}
    out = cli("sweep", *grid, cwd=tmp_path, check=False)
    assert out.returncode == 0 and "holds a different trial" not in out.stderr, out.stderr[-2000:]
    assert {d: (d / runs.RESULT).stat().st_mtime_ns for d in runs.run_dirs(tmp_path / "runs" / "adhoc")} == stamps


@pytest.mark.slow
def test_a_sweep_with_failed_jobs_exits_nonzero_after_its_summary(tmp_path):
    out = cli("sweep", "-m", *TINY, "optim.lr=0.01,0.02", "train.init_from=/nonexistent/x.pt", cwd=tmp_path, check=False)
    assert out.returncode == 1
    summary = out.stderr[out.stderr.index("\nsweep "):]
    assert "2 runs" in summary and "failed           2" in summary
    assert summary.count("failed: ") == 2 and "is not a windtunnel checkpoint" in summary
    assert "Traceback" not in out.stderr
    again = cli("sweep", "-m", *TINY, "optim.lr=0.01,0.02", cwd=tmp_path, check=False)  # their dirs hold other trials
    assert again.returncode == 2 and "holds a different trial (train.init_from" in again.stderr
    assert "Launching" not in again.stdout  # refused before any job ran
    ok = cli("sweep", "-m", *TINY, "optim.lr=0.01,0.01,0.02", "sweep_name=ok", cwd=tmp_path, check=True)  # a duplicate merged
    assert "Launching 2 jobs" in ok.stdout + ok.stderr and "completed        2" in ok.stderr[ok.stderr.index("\nsweep "):]
    assert "sweep: 2/2 runs done (2 failed, 0 diverged)" in out.stdout  # the progress line after each job
    assert "sweep: 1/2 runs done (0 failed, 0 diverged), ETA" in ok.stdout and "sweep: 2/2 runs done" in ok.stdout
    logs = sorted((tmp_path / "runs").glob("*/*/app.log"))  # Hydra's per-job logs fill
    assert len(logs) == 4 and all("windtunnel" in p.read_text() for p in logs)
    assert len(runs.run_dirs(tmp_path / "runs" / "ok")) == 2  # the duplicate point trained once
    more = cli("sweep", "-m", *TINY, "optim.lr=0.03", "sweep_name=ok", cwd=tmp_path, check=True)  # a 2nd grid, same dir
    assert "sweep: 1/1 runs done" in more.stdout, more.stdout[-1500:]  # its own run, not the folder's 3 of 1


def test_two_trials_that_would_share_a_run_dir_are_refused_before_training(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "t.txt").write_text(f"text of corpus {name} " * 2000)
    out = cli("sweep", "-m", *TINY, "data=text_dir", f"data.path={tmp_path / 'a'},{tmp_path / 'b'}", "data.bpe_vocab_size=300",
             cwd=tmp_path, check=False)
    assert out.returncode == 2 and "would train different trials into one run directory" in out.stderr
    assert not list(tmp_path.rglob("metrics.jsonl"))


def test_bad_grid_point_fails_before_any_training(tmp_path):
    out = cli("sweep", "-m", *TINY, "train.batch_size_tokens=2048,1000", cwd=tmp_path, check=False)
    assert out.returncode == 2
    assert "train.batch_size_tokens=1000 is not divisible by train.seq_len" in out.stderr
    assert not (tmp_path / "runs").exists()
    out = cli("sweep", "-m", "model=w9b", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "model='w9b' is not in the ladder; use one of tiny32" in out.stderr
    out = cli("sweep", "-m", *TINY, "optim.lr=tag(log,interval(0.1,0.001))", cwd=tmp_path, check=False)
    assert out.returncode != 0 and "optim.lr: interval(0.1, 0.001) has low >= high" in out.stderr + out.stdout
    assert not list((tmp_path / "runs").rglob("metrics.jsonl")) if (tmp_path / "runs").exists() else True


def load_study(storage, name):
    import optuna
    from windtunnel.sweep.study import make_storage
    return optuna.load_study(study_name=name, storage=make_storage(storage))


# the sweep's own trials, shortened (a quarter of its tokens, the final evals on eval_tokens): 8 trials, 2-3 pruned
SEARCH = ["-m", "sweep=lr_search_cpu", "hydra.sweeper.n_trials=8", "train.total_tokens=65536", "train.eval_tokens=2048",
          "train.final_eval_tokens=0"]


@pytest.mark.slow
def test_optuna_sweeper_prunes_and_shares_its_study(tmp_path):
    import optuna
    first = cli("sweep", *SEARCH, cwd=tmp_path, check=True)
    sweep_dir = tmp_path / "runs" / "lr_search_cpu"
    journal = str(sweep_dir / "optuna.journal")
    study = load_study(journal, "lr_search_cpu")
    from optuna.storages import JournalStorage  # the README's way to open the study in Python
    from optuna.storages.journal import JournalFileBackend
    readme_way = optuna.load_study(study_name="lr_search_cpu", storage=JournalStorage(JournalFileBackend(journal)))
    assert [t.value for t in readme_way.trials] == [t.value for t in study.trials]
    states = [t.state for t in study.trials]
    assert len(states) == 8
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1, states
    # a pruned trial is said as pruned, not as Hydra's "Error executing job"
    printed = first.stdout + first.stderr
    assert "Error executing job" not in printed
    assert len(re.findall(r"trial \d+: pruned", printed)) == states.count(optuna.trial.TrialState.PRUNED)
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3, states
    # every trial's value is its run's post-decay loss (the last decay branch's final held-out loss)
    table = runs.load_results(sweep_dir)
    trunks = table[table["branch_of"].isna()] if "branch_of" in table else table
    by_lr = {round(lr, 12): row for lr, row in zip(trunks["optim.lr"], trunks.to_dict("records"))}
    for t in study.trials:
        row = by_lr[round(t.params["optim.lr"], 12)]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert row["status"] == "completed" and t.value == row["decayed_eval_loss"]
            last = max(float(k) for k in t.intermediate_values)
            assert t.value == pytest.approx(t.intermediate_values[last])
        elif t.state == optuna.trial.TrialState.PRUNED:
            assert row["status"] == "pruned" and len(t.intermediate_values) >= 1
    # a second process on the same journal adds trials to the same study: none lost, none duplicated
    cli("sweep", *SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweeper.seed=1", cwd=tmp_path, check=True)  # its own seed
    numbers = [t.number for t in load_study(journal, "lr_search_cpu").trials]
    assert sorted(numbers) == list(range(11))
    assert len([d for d in runs.run_dirs(sweep_dir) if "decay_" not in d.name]) == 11
    # the same command again, same seed: the study continues with new proposals, no replay of its first draws
    again = cli("sweep", *SEARCH, "hydra.sweeper.n_trials=3", cwd=tmp_path, check=True)
    assert "has 11 trials; continuing it (sampler seed from seed 0 and those 11 trials:" in again.stdout + again.stderr
    lrs = [t.params["optim.lr"] for t in load_study(journal, "lr_search_cpu").trials]
    assert len(lrs) == 14 and len({round(lr, 12) for lr in lrs}) == 14
    results = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value" in results and "PRUNED" in results


def _concurrent_workers(tmp_path, storage, n_workers=2, n_trials=2, spec=None, env=None):
    """n_workers sweeps sharing one study in `storage`; the sweeps are given `spec` (default: the storage itself;
    env:NAME with env={NAME: storage} keeps a URL out of the command line). Returns the workers' (stdout, stderr)."""
    args = [sys.executable, "-m", "windtunnel.cli", "sweep", "-m", "sweep=lr_search_cpu", "train.branch_at_n=[1.0]",
            "train.total_tokens=65536", "train.eval_tokens=2048", "train.final_eval_tokens=0",
            f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.pruner=none",
            f"hydra.sweeper.storage='{spec or storage}'", "hydra.sweeper.study_name=shared"]
    import optuna
    from windtunnel.sweep.study import make_storage
    # the study exists before the workers start (as `optuna create-study` would make it), so that their
    # first connections do not race to create the schema
    optuna.create_study(study_name="shared", storage=make_storage(storage), load_if_exists=True)
    # each worker its own sampler seed: workers with one seed would propose the same points
    procs = [subprocess.Popen([*args, f"hydra.sweep.dir=w{i}", f"hydra.sweeper.seed={i}"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
             for i in range(n_workers)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    study = load_study(storage, "shared")
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(n_workers * n_trials)), (numbers, [o[1][-1500:] for o in outs])
    assert len({t.params["optim.lr"] for t in study.trials}) == n_workers * n_trials
    assert all(t.value is not None for t in study.trials)
    return outs


@pytest.mark.slow
def test_two_workers_share_a_journal_study(tmp_path):
    _concurrent_workers(tmp_path, str(tmp_path / "shared.journal"))


def _postgres_url() -> str:
    url = os.environ.get("WINDTUNNEL_TEST_POSTGRES", "postgresql+psycopg2://windtunnel:windtunnel@127.0.0.1:5432/windtunnel")
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432 (.ci/run installs and starts one)")
    pytest.importorskip("psycopg2", reason="psycopg2 is needed for the PostgreSQL storage")
    return url


def _leaks(root, outs, secret: str) -> list:
    """Where `secret` shows: the workers' console output, or any file under root (pickles included)."""
    console = [f"worker {i} {stream}" for i, out in enumerate(outs) for stream, text in zip(("stdout", "stderr"), out)
               if secret in text]
    return console + [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_two_workers_share_a_postgres_study(tmp_path):
    import sqlalchemy
    url = _postgres_url()
    with sqlalchemy.create_engine(url).begin() as conn:  # a fresh schema for this test
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
    outs = _concurrent_workers(tmp_path, url, spec="env:WT_TEST_STORAGE", env={"WT_TEST_STORAGE": url})
    secret = url.split("://", 1)[1].split("@", 1)[0]  # user:password
    assert not _leaks(tmp_path, outs, secret)  # the sweeps and jobs carry env:WT_TEST_STORAGE, never the URL


def test_a_storage_password_written_out_is_refused_before_anything_runs(tmp_path):
    out = cli("sweep", "-m", *TINY, "optim.lr=tag(log,interval(1e-3,1e-1))", "hydra.sweeper.n_trials=1",
              "hydra.sweeper.storage=postgresql://alice:s3cret@db.example/wt", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "s3cret" not in out.stdout + out.stderr
    assert ("hydra.sweeper.storage holds a password (postgresql://alice:***@db.example/wt)" in out.stderr
            and "hydra.sweeper.storage=env:WT_STORAGE" in out.stderr), out.stderr[-800:]
    assert not (tmp_path / "runs").exists()
    out = cli("sweep", "-m", *TINY, "optim.lr=tag(log,interval(1e-3,1e-1))", "hydra.sweeper.storage=env:WT_NOT_SET",
              cwd=tmp_path, check=False, env={"WT_NOT_SET": ""})
    assert out.returncode == 2 and "the environment variable WT_NOT_SET is not set" in out.stderr, out.stderr[-800:]


@pytest.mark.slow
def test_a_storage_named_by_env_reaches_no_console_line_and_no_file_pickles_included(tmp_path):
    """submitit pickles each job's launcher config and overrides: with env:NAME they hold the name alone. An SQLite
    URL stands in for a server's (its path carries the 'secret'); the PostgreSQL test above does the same with a
    real password."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    db = tmp_path / "db"
    db.mkdir()
    url = f"sqlite:///{db}/Xs3cretX.db"
    out = cli("sweep", "-m", *TINY, "optim.lr=tag(log,interval(1e-3,1e-1))", "hydra.sweeper.n_trials=1",
              "hydra.sweeper.storage=env:WT_TEST_STORAGE", "launcher=submitit_local", cwd=tmp_path, check=True,
              env={"WT_TEST_STORAGE": url})
    root = tmp_path / "runs" / "adhoc"
    assert list(root.rglob("*.pkl")) and len(runs.load_results(root)) == 1  # the pickles exist; the trial ran
    import optuna
    trials = optuna.load_study(study_name="adhoc", storage=url).trials
    assert len(trials) == 1 and trials[0].value is not None
    leaks = _leaks(root, [(out.stdout, out.stderr)], "Xs3cretX")
    assert not leaks, leaks


@pytest.mark.slow
def test_joblib_launcher_runs_trials_in_parallel(tmp_path):
    cli("sweep", "-m", *TINY, "train.batch_size_tokens=1024,2048", "launcher=joblib", cwd=tmp_path, check=True)
    table = runs.load_results(tmp_path / "runs" / "adhoc")
    assert sorted(table["train.batch_size_tokens"]) == [1024, 2048] and set(table["status"]) == {"completed"}
    assert set(table["train.threads"]) == {1}
    log = (tmp_path / "runs" / "adhoc" / "multirun.yaml").read_text()
    assert "joblib" in log


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cli("sweep", "-m", *TINY, "train.batch_size_tokens=1024,2048", "launcher=submitit_local", cwd=tmp_path, check=True)
    root = tmp_path / "runs" / "adhoc"
    table = runs.load_results(root)
    assert sorted(table["train.batch_size_tokens"]) == [1024, 2048] and set(table["status"]) == {"completed"}
    assert (root / ".submitit").is_dir()


def test_names_that_would_leave_the_sweep_dir_are_refused(tmp_path):
    out = cli("sweep", "-m", *TINY, "name=x/../../../ESCAPED", "optim.lr=0.01,0.02", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "must be a plain name" in out.stderr
    out = cli("sweep", *TINY, "sweep_name=../../ESCAPED", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "sweep_name='../../ESCAPED' must be a plain name" in out.stderr
    out = cli("sweep", "-m", *TINY, "train.init_from=/a/b,/c/d", cwd=tmp_path, check=False)  # not in dir names
    assert out.returncode == 2 and "would train different trials into one run directory" in out.stderr
    assert not list(tmp_path.rglob("ESCAPED")) and not list(tmp_path.parent.rglob("ESCAPED"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_killed_optuna_worker_s_trial_is_failed_retried_and_its_run_dir_resumed(tmp_path, kind):
    """kill -9 the worker mid-trial; the next worker fails the dead trial (SQLite: its heartbeat, 1 s, stopped;
    the journal has no heartbeats: its run dir says running and its lock's pid is dead), asks its retry (the same
    parameters, so the same run dir) and resumes that run from its checkpoint."""
    import signal
    import time
    import optuna
    from windtunnel.sweep.study import make_storage
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.journal")
    cmd = [sys.executable, "-m", "windtunnel.cli", "sweep", "-m", "model=tiny32", "train=cpu", "train.total_tokens=5e5",
           "train.log_every=5", "train.eval_tokens=2048", "train.final_eval_tokens=0", "optim.lr=tag(log,interval(0.001,0.01))",
           "hydra/sweeper=windtunnel_optuna",
           "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage='{storage}'", "hydra.sweeper.heartbeat_interval=1",
           "hydra.sweeper.study_name=s", "hydra.sweep.dir=sw"]
    worker = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 180
    while not list((tmp_path / "sw").glob("*/checkpoint/meta.json")):
        assert worker.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    (run_dir,) = [d for d in runs.run_dirs(tmp_path / "sw")]
    killed_at = runs.read_metrics(run_dir)[-1]["step"]
    study = optuna.load_study(study_name="s", storage=make_storage(storage))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]  # what a dead worker leaves
    time.sleep(3)  # past the grace period (2 x the heartbeat)
    cli(*cmd[3:], cwd=tmp_path, check=True)
    trials = optuna.load_study(study_name="s", storage=make_storage(storage)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert trials[1].params == trials[0].params
    assert runs.run_dirs(tmp_path / "sw") == [run_dir] and runs.read_result(run_dir).status == "completed"
    steps = [m["step"] for m in runs.read_metrics(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 61 and 0 < killed_at < 61  # resumed, not restarted


@pytest.mark.slow
def test_a_killed_joblib_sweep_rerun_at_once_never_has_two_writers(tmp_path):
    """kill -9 of a joblib sweep's parent leaves its workers training; the same command again finds their run
    dirs locked and skips them (no duplicated or out-of-order rows), and the orphans finish their runs."""
    import signal
    import time
    cmd = ["sweep", "-m", "model=tiny32", "train=cpu", "train.total_tokens=1e6", "train.log_every=5", "train.eval_tokens=2048", "train.final_eval_tokens=0",
           "optim.lr=0.01,0.02", "launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sw"]
    parent = subprocess.Popen([sys.executable, "-m", "windtunnel.cli", *cmd], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len([d for d in (tmp_path / "sw").glob("*") if (d / runs.METRICS).exists() and runs.read_metrics(d)]) < 2:
        assert parent.poll() is None and time.time() < deadline
        time.sleep(0.2)
    workers = children(parent.pid)
    parent.send_signal(signal.SIGKILL)  # the parent only: joblib's workers go on
    parent.wait()
    again = cli(*cmd, cwd=tmp_path, process=True)  # a process: its joblib workers' logs reach its stderr
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("is being trained by pid") == 2  # skipped, not trained twice
    dirs = runs.run_dirs(tmp_path / "sw")
    while any(runs.read_result(d).status == "running" for d in dirs):  # the orphans finish their runs
        assert time.time() < deadline + 120
        time.sleep(0.5)
    for d in dirs:
        steps = [m["step"] for m in runs.read_metrics(d)]
        assert steps == sorted(set(steps)) and steps[-1] == 122 and runs.read_result(d).status == "completed"
    for pid in workers:  # their runs done, the orphaned pool would idle on: a user's kill -9 of the rest
        os.kill(pid, signal.SIGKILL)


def test_the_samplers_random_start_up_is_a_setting():
    """TPE's default 10 random trials are most of a 16-trial LR search (sweeps/lr_search); the sweeper passes
    sampler_startup_trials to the samplers that have such a start-up, and refuses it (naming the field) elsewhere."""
    from hydra_plugins.windtunnel_optuna_sweeper.sweeper import SearchSpaceError, WindtunnelOptunaSweeper

    def sweeper(sampler, startup):
        return WindtunnelOptunaSweeper(sampler, 0, "minimize", None, None, 4, 1, "none", 2, 2, 1.0, {},
                                       sampler_startup_trials=startup)
    assert sweeper("tpe", None)._sampler({})[0]._n_startup_trials == 10  # Optuna's default, unchanged
    assert sweeper("tpe", 4)._sampler({})[0]._n_startup_trials == 4
    assert sweeper("gp", 3)._sampler({})[0]._n_startup_trials == 3
    with pytest.raises(SearchSpaceError, match=r"sampler_startup_trials=3: a count >= 1, for the samplers that start "
                                               r"with random trials \(tpe, gp, cmaes; this sweep's is random\)"):
        sweeper("random", 3)
    with pytest.raises(SearchSpaceError, match="sampler_startup_trials=0"):
        sweeper("tpe", 0)


def test_a_python_tag_in_a_users_config_dir_is_one_line_and_runs_nothing(tmp_path):
    """A `!!python/object/apply` tag in a file under --config-dir (or hydra.searchpath): Hydra's loader refuses it with
    a 30-line traceback; windtunnel names the file and line in one line, before Hydra reads it, and nothing runs.
    A plain file beside it in another folder passes the same check."""
    from windtunnel.sweep.app import _check_user_yaml
    mark = tmp_path / "ran"
    evil = tmp_path / "evil"
    (evil / "sweep").mkdir(parents=True)
    (evil / "sweep" / "x.yaml").write_text(f'# @package _global_\noptim:\n  lr: !!python/object/apply:os.system ["touch {mark}"]\n')
    for args in (["--config-dir", str(evil), "sweep=x", "--info"], ["-m", f"hydra.searchpath=[file://{evil}]", "sweep=x"]):
        done = cli("sweep", *args, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
        assert f"{evil / 'sweep' / 'x.yaml'}:3:" in done.stderr and "remove the tag" in done.stderr
    assert not mark.exists()
    good = tmp_path / "good"
    (good / "sweep").mkdir(parents=True)
    (good / "sweep" / "y.yaml").write_text("# @package _global_\noptim:\n  lr: 3e-3\ntrain:\n  seq_len: ${train.seq_len}\n")
    _check_user_yaml(["--config-dir", str(good)])
    _check_user_yaml([f"--config-dir={good}", "hydra.searchpath=[pkg://windtunnel.conf]"])


def test_a_sweep_dir_that_cannot_be_written_is_one_line_before_any_job(tmp_path):
    """A read-only run root (here: under a file, and under /proc, which refuse even root) was a traceback from inside
    Hydra's launcher; the preflight names hydra.sweep.dir and the fix, and no job starts."""
    (tmp_path / "a_file").write_text("")
    for where in (tmp_path / "a_file" / "sweep", Path("/proc") / f"wt-{os.getpid()}"):
        done = cli("sweep", "-m", "model=tiny32", "train.total_tokens=16384", f"hydra.sweep.dir={where}", cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip() == done.stderr.strip().splitlines()[0]
        assert f"hydra.sweep.dir={where}: cannot write there" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
