"""One writer per run directory. RUN/.lock is created exclusively (O_EXCL) before anything else is written
there; it names the writer (host, pid, and the process's start time and the host's boot id, so that a pid reused
after a restart is not mistaken for it) and its modification time is the writer's heartbeat: a thread of the
holder touches it every WINDTUNNEL_LOCK_STALE_S / 10 seconds (and every metrics row does), however rarely the run
logs. A second process finds a live lock and skips the trial; a stale lock (its process gone on this host, or,
from another host, no heartbeat for WINDTUNNEL_LOCK_STALE_S seconds; an empty or unreadable lock after
EMPTY_GRACE_S) is taken over. A run whose result says running and whose lock is not live was interrupted
(killed), and the next sweep resumes it."""
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Optional

LOCK = ".lock"
EMPTY_GRACE_S = 10.0  # a lock its writer died before filling in: stale after this long


class RunBusy(RuntimeError):
    """Another live process is training this run directory."""


def stale_after_s() -> float:
    return float(os.environ.get("WINDTUNNEL_LOCK_STALE_S", "900"))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), "" where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "boot_id": _boot_id(),
            "process_start": _process_start(os.getpid())}


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


def _holder_alive(info: dict) -> bool:
    """On this host: the named process is alive and is the one that wrote the lock (same boot, same start time)."""
    pid = int(info.get("pid", -1))
    if not _alive(pid):
        return False
    if info.get("boot_id") and _boot_id() and info["boot_id"] != _boot_id():
        return False  # written before a restart: the pid now belongs to someone else
    return not (info.get("process_start") and _process_start(pid) and info["process_start"] != _process_start(pid))


def _stale(path: Path, info: Optional[dict]) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if not info:  # empty or unreadable: its writer died between creating and filling it (or is doing so now)
        return age > EMPTY_GRACE_S
    if info.get("host") == socket.gethostname():
        return not _holder_alive(info)  # exact on this host
    return age > stale_after_s()  # another host: only the heartbeat can tell


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
                if not info:
                    raise RunBusy(f"{run_dir}: its lock {path} is empty ({age:.0f} s old; a process is taking it, or "
                                  f"died doing so: stale after {EMPTY_GRACE_S:g} s); skipped it") from None
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
        _HEARTBEAT.hold(run_dir)
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


class _Heartbeat:
    """One daemon thread per process touching every lock it holds, every stale_after_s() / 10 seconds: a lock's
    freshness never depends on how often its run logs."""

    def __init__(self) -> None:
        self.held: set = set()
        self.guard = threading.Lock()
        self.thread: Optional[threading.Thread] = None

    def hold(self, run_dir: Path) -> None:
        with self.guard:
            self.held.add(Path(run_dir))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="windtunnel-lock-heartbeat", daemon=True)
                self.thread.start()

    def drop(self, run_dir: Path) -> None:
        with self.guard:
            self.held.discard(Path(run_dir))

    def _run(self) -> None:
        last = 0.0
        while True:
            period = max(0.05, stale_after_s() / 10)  # read each turn: the stale age may be set after the start
            time.sleep(min(1.0, period))
            if time.monotonic() - last < period:
                continue
            last = time.monotonic()
            with self.guard:
                held = list(self.held)
            for run_dir in held:
                beat(run_dir)


_HEARTBEAT = _Heartbeat()


def release(run_dir: Path) -> None:
    _HEARTBEAT.drop(run_dir)
    info = holder(run_dir)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        (Path(run_dir) / LOCK).unlink(missing_ok=True)
