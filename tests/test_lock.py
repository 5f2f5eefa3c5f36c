"""One writer per run dir (runs/lock.py): a second process skips a live run, a dead writer's lock is taken over,
and a killed run reads back as interrupted, not running, until the next run resumes it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli
from windtunnel import runs
from windtunnel.runs import lock

pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


ARGS = ["train", "model=tiny32", "train=cpu", "train.total_tokens=5e5", "train.log_every=5", "train.eval_tokens=2048", "train.final_eval_tokens=0"]
TRAIN = [sys.executable, "-m", "windtunnel.cli", *ARGS]


def start(out):
    proc = subprocess.Popen([*TRAIN, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / runs.METRICS).exists() or len(runs.read_metrics(out)) < 3:  # training, past set-up
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    return proc


def steps(out) -> list[int]:
    return [m["step"] for m in runs.read_metrics(out)]


def test_a_second_process_skips_a_run_dir_that_a_live_one_trains(tmp_path):
    out = tmp_path / "run"
    first = start(out)
    assert lock.holder(out)["pid"] == first.pid
    second = cli(*ARGS, "--out", out)  # this process, beside the one training
    assert second.returncode == 1
    assert f"is being trained by pid {first.pid}" in second.stderr and "skipped it" in second.stderr
    assert first.wait(timeout=300) == 0
    logged = steps(out)
    assert logged == sorted(set(logged))  # one writer: no duplicated or out-of-order rows
    assert runs.read_result(out).status == "completed" and not (out / lock.LOCK).exists()


def test_a_killed_run_reads_as_interrupted_and_the_next_run_takes_its_lock_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = start(out)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert runs.read_result(out).status == "running"  # what the dead process left in result.json ...
    assert runs.load_results(out)["status"].tolist() == ["interrupted"]  # ... and what every table shows
    assert lock.holder(out)["pid"] == first.pid and not lock.is_live(out)
    done = cli(*ARGS, "--out", out)
    assert done.returncode == 0, done.stderr
    logged = steps(out)
    assert logged == sorted(set(logged)) and runs.read_result(out).status == "completed"
    assert runs.load_results(out)["status"].tolist() == ["completed"]


def test_a_lock_from_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_LOCK_STALE_S", "600")
    (tmp_path / lock.LOCK).write_text(json.dumps({"host": "node-that-is-not-this-one", "pid": 1}))
    with pytest.raises(runs.RunBusy, match="pid 1 on node-that-is-not-this-one"):
        lock.acquire(tmp_path)
    old = time.time() - 601
    os.utime(tmp_path / lock.LOCK, (old, old))  # no heartbeat for longer than the stale age: taken over
    lock.acquire(tmp_path)
    assert lock.holder(tmp_path)["pid"] == os.getpid() and lock.is_live(tmp_path)
    lock.release(tmp_path)
    assert not (tmp_path / lock.LOCK).exists()
