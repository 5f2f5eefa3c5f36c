"""One writer per run directory. RUN/.lock is created exclusively (O_EXCL) before anything else is written
there; it names the writer (host, pid) and its modification time is the writer's heartbeat (touched with
every metrics row). A second process finds a live lock and skips the trial; a stale lock (its pid dead on this
host, or, from another host, no heartbeat for WINDTUNNEL_LOCK_STALE_S seconds) is taken over. A run whose
result says running and whose lock is not live was interrupted (killed), and the next sweep resumes it."""
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK = ".lock"


class RunBusy(RuntimeError):
    """Another live process is training this run directory."""


def stale_after_s() -> float:
    return float(os.environ.get("WINDTUNNEL_LOCK_STALE_S", "900"))


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def holder(run_dir: Path) -> Optional[dict]:
    return holder_file(Path(run_dir) / LOCK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _stale(path: Path, info: Optional[dict]) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if info and info.get("host") == socket.gethostname():
        return not _alive(int(info.get("pid", -1)))  # exact on this host
    return age > stale_after_s()  # another host (or a torn lock file): only the heartbeat can tell


def is_live(run_dir: Path) -> bool:
    """True while a process (on this host: alive; elsewhere: heartbeat younger than the stale age) holds it."""
    path = Path(run_dir) / LOCK
    return path.exists() and not _stale(path, holder(run_dir))


def acquire(run_dir: Path) -> None:
    """Take the run dir's lock, or raise RunBusy naming the live holder. Re-entrant within one process."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = holder(run_dir)
            if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                return
            if not _stale(path, info):
                age = time.time() - path.stat().st_mtime
                raise RunBusy(f"{run_dir} is being trained by pid {info.get('pid')} on {info.get('host')} (heartbeat "
                              f"{age:.0f} s ago); skipped it. Stop that process, or wait for it") from None
            # stale: move it aside (only one taker's rename succeeds), then create ours
            aside = path.with_name(f"{LOCK}.stale{os.getpid()}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if not _stale(aside, holder_file(aside)):  # a live lock made in between: put it back
                os.rename(aside, path)
                continue
            aside.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_me(), f)
        return
    raise RunBusy(f"{run_dir}: could not take its lock (another process keeps taking it); skipped it")


def holder_file(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def beat(run_dir: Path) -> None:
    """The heartbeat: touch the lock (called with every metrics row the holder writes)."""
    try:
        os.utime(Path(run_dir) / LOCK)
    except FileNotFoundError:
        pass


def release(run_dir: Path) -> None:
    info = holder(run_dir)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        (Path(run_dir) / LOCK).unlink(missing_ok=True)
