"""The Optuna side of a sweep, shared by the windtunnel_optuna sweeper plugin and the jobs it launches:
storages from one string, and the job's pruning callback. Public Optuna APIs only."""
import json
import math
import os
import random
import re
import shutil
import sys
import time

from ..config import ConfigError, TuningConfig, storage_url


def make_storage(spec: str, heartbeat_s: int = 0):
    """`sqlite:///x.db`, `postgresql+psycopg2://user@host/db`, `mysql+pymysql://...` -> RDBStorage (SQLite for
    one process, a server for many workers); anything else is a journal file, safe for many processes on
    one machine or a shared file system. With heartbeat_s > 0 an RDB storage keeps trial heartbeats: a trial
    whose worker stopped beating for 2 x heartbeat_s is failed by fail_stale_trials and retried with the same
    parameters (so the same run dir, resumed). Optuna's journal storage has no heartbeats. `env:NAME`: the URL
    is the environment variable NAME's value (config.storage_url)."""
    import optuna
    spec = storage_url(spec)
    if re.match(r"^[a-z][a-z0-9+]*://", spec):
        beats = dict(heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                     heartbeat_stale_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3)) if heartbeat_s else {}
        for attempt in range(5):  # workers starting together race to create the schema: retry
            try:
                return optuna.storages.RDBStorage(spec, **beats)
            except Exception:  # noqa: BLE001 -- sqlalchemy's error types vary by driver
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
    lock = JournalFileSymlinkLock(spec)
    if os.path.exists(spec):
        lock.acquire()  # Optuna's own lock: no worker appends while the log is read (a torn tail is a real one)
        try:
            check_journal(spec)
        finally:
            lock.release()
    return optuna.storages.JournalStorage(JournalFileBackend(spec, lock_obj=lock))


def check_journal(path: str) -> None:
    """A journal whose last line was cut by a crash (no newline, not JSON) is repaired as a database recovers its
    log: a backup of the file is kept beside it and the torn tail is cut off (the operation it began never
    happened), with one line on stderr. A bad line anywhere else is refused with the file and the line: the
    study's history after it cannot be trusted."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    torn = lines[-1]  # the bytes after the last newline: empty in a whole log
    for number, line in enumerate(lines[:-1], start=1):
        try:
            json.loads(line)
        except ValueError:
            raise ConfigError(f"{path} line {number} is not a journal record ({line[:60]!r}): the study's log is "
                              f"damaged mid-file; restore it from a backup, or delete the line (and the trials "
                              f"after it) by hand") from None
    if torn.strip():
        try:
            json.loads(torn)
            complete = True  # a last record whose newline was lost: keep it, add the newline
        except ValueError:
            complete = False
        backup = f"{path}.torn-{int(time.time())}"
        shutil.copyfile(path, backup)
        with open(path, "r+b") as f:
            if complete:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                f.truncate(len(data) - len(torn))
            f.flush()
            os.fsync(f.fileno())
        print(f"windtunnel: {path} line {len(lines)} was " + ("missing its newline (added)" if complete else
              f"torn by a crash ({len(torn)} bytes, cut off)") + f"; the file as it was is kept at {backup}",
              file=sys.stderr)


def fail_interrupted(study, sweep_dir) -> list[int]:
    """For storages without heartbeats (Optuna's journal): a RUNNING trial whose run dir under sweep_dir says
    running but whose writer is gone (its lock is not live: runs/lock.py) was killed with its worker. It is
    told FAIL and its parameters are queued again, so the next ask trains them into the same run dir, which
    resumes from its checkpoint. Returns the failed trial numbers."""
    import optuna
    from pathlib import Path

    from ..runs import Run
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    failed = []
    for path in sorted(Path(sweep_dir).iterdir()) if running and Path(sweep_dir).is_dir() else []:
        run = Run(path)
        result = run.result() if path.is_dir() else None
        if result is None or result.status.value != "running" or run.is_live:
            continue
        trial = running.get(run.optuna_trial)
        if trial is not None:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
            failed.append(trial.number)
    return failed


def keep_alive(tuning: TuningConfig):
    """In a job: a daemon thread recording the trial's heartbeat every tuning.heartbeat_s (RDB storages), so the
    trial is failed and retried only when this process is gone. Returns a stop function."""
    import threading
    if tuning.trial_number < 0 or tuning.heartbeat_s <= 0 or not re.match(r"^[a-z][a-z0-9+]*://",
                                                                                      storage_url(tuning.storage)):
        return lambda: None
    storage = make_storage(tuning.storage, tuning.heartbeat_s)
    study_id = storage.get_study_id_from_name(tuning.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, tuning.trial_number)
    done = threading.Event()

    def beat() -> None:
        while not done.is_set():
            storage.record_heartbeat(trial_id)
            done.wait(tuning.heartbeat_s)
    threading.Thread(target=beat, daemon=True, name="optuna-heartbeat").start()
    return done.set


def open_trial(tuning: TuningConfig):
    """The Optuna trial a sweep job runs (the sweeper asked for it in another process), to report to."""
    import optuna
    storage = make_storage(tuning.storage)
    study_id = storage.get_study_id_from_name(tuning.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, tuning.trial_number)
    return optuna.Trial(optuna.load_study(study_name=tuning.study_name, storage=storage), trial_id)


def pruning_callback(tuning: TuningConfig, stop: type):
    """The job-side half of pruning: an eval callback (it receives the trainer's EvalReport objects) that
    raises `stop` (the trainer's StopTrial) to end the trial. "decayed" reports only post-decay losses at
    equal tokens to the study's pruner; "divergence" stops a trial whose held-out loss turns NaN or rises
    above max_loss_ratio x its initial loss. None when the job is not an Optuna trial or does not prune."""
    if tuning.trial_number < 0 or tuning.prune == "none":
        return None
    trial = open_trial(tuning)
    initial = []

    def callback(report) -> None:
        if tuning.prune == "divergence":
            initial.append(report.loss) if not initial else None
            if not math.isfinite(report.loss) or report.loss > tuning.max_loss_ratio * initial[0]:
                raise stop(f"divergence pruning: loss {report.loss:.4g} at {report.tokens} tokens "
                           f"(initial {initial[0]:.4g} x {tuning.max_loss_ratio})")
        elif report.decayed:
            trial.report(report.loss, step=report.tokens)
            if trial.should_prune():
                raise stop(f"pruned by the study's pruner at {report.tokens} tokens after decay "
                           f"(loss {report.loss:.4g})")
    return callback
