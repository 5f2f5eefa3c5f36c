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


def test_an_empty_lock_is_busy_while_fresh_and_stale_after_its_grace(tmp_path):
    """A writer that died between creating the lock and filling it in: a clear RunBusy while it may still be
    writing, taken over after the grace period (and the run reads as not live)."""
    import os
    import time
    from windtunnel.runs import lock
    run = tmp_path / "run"
    run.mkdir()
    (run / lock.LOCK).write_text("")
    with pytest.raises(lock.RunBusy, match=r"its lock .*\.lock is empty \(\d+ s old; a process is taking it"):
        lock.acquire(run)
    old = time.time() - lock.EMPTY_GRACE_S - 5
    os.utime(run / lock.LOCK, (old, old))
    assert not lock.is_live(run)
    lock.acquire(run)
    assert lock.holder(run)["pid"] == os.getpid()
    lock.release(run)


def test_a_lock_naming_a_reused_pid_is_stale(tmp_path):
    """After a restart the lock's pid may belong to another live process: the start time (or boot id) it recorded
    does not match, so the lock is stale and the run is taken over (it was skipped forever)."""
    import json
    import os
    import socket
    from windtunnel.runs import lock
    run = tmp_path / "run"
    run.mkdir()
    other = os.getppid()  # alive, and not the writer
    (run / lock.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": other, "started": 0,
                                              "boot_id": lock._boot_id(), "process_start": "1"}))
    assert lock._process_start(other) not in ("", "1")
    assert not lock.is_live(run)
    (run / lock.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": other, "boot_id": "before-restart"}))
    assert not lock.is_live(run)
    (run / lock.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": other, "boot_id": lock._boot_id(),
                                              "process_start": lock._process_start(other)}))
    assert lock.is_live(run)  # the true holder, alive


def test_the_heartbeat_keeps_a_rarely_logging_run_live_for_another_host(tmp_path, monkeypatch):
    """The holder's thread touches the lock every stale/10 s whether or not the run logs: seen from another host
    (only the heartbeat tells there), the lock stays live past the stale age; released, it is not refreshed."""
    import os
    import time
    from windtunnel.runs import lock
    monkeypatch.setenv("WINDTUNNEL_LOCK_STALE_S", "1")
    run = tmp_path / "run"
    run.mkdir()
    lock.acquire(run)
    real = lock.socket.gethostname()
    try:
        monkeypatch.setattr(lock.socket, "gethostname", lambda: "another-host")
        time.sleep(2.5)  # 2.5 stale ages without a metrics row
        assert lock.is_live(run) and time.time() - (run / lock.LOCK).stat().st_mtime < 0.5
    finally:
        monkeypatch.setattr(lock.socket, "gethostname", lambda: real)
    lock.release(run)
    (run / lock.LOCK).write_text('{"host": "another-host", "pid": 1}')
    old = time.time() - 5
    os.utime(run / lock.LOCK, (old, old))
    time.sleep(0.3)
    assert time.time() - (run / lock.LOCK).stat().st_mtime > 4  # no longer beaten by us
