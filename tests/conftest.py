"""What every test file shares: the tokenized-corpus cache, one way to call the command line (`cli`), one tiny trial
(`tiny_trial`), and a check that no test leaves a process behind."""
import io
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

# one pytest worker per core (make test: -n auto), so one intra-op thread each, here and in every process a test
# starts (torchrun ranks, sweeps): two workers of torch's default 2 threads on 2 cores spin against each other
# (20% more CPU time on test_model + test_train, measured). Set before torch is first imported. BLAS too (numpy's
# OpenBLAS outside the fitters' own limit, torch's): `make test-fast` on 2 idle cores took 66-75 s without it and
# 58-62 s with it, back to back (135 s of CPU against 103-111 s).
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

from windtunnel.compose import compose  # noqa: E402
from windtunnel.config import TrialConfig, override  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """One tokenized-corpus cache for the whole test session (the stdlib corpus tokenizes once per worker)."""
    path = tmp_path_factory.mktemp("wtcache")
    old = os.environ.get("WINDTUNNEL_CACHE")
    os.environ["WINDTUNNEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("WINDTUNNEL_CACHE", None)
    else:
        os.environ["WINDTUNNEL_CACHE"] = old


def pytest_collection_modifyitems(items):
    """The slow tests first (stable order within each kind): the workers start on the long ones and the short ones
    fill the gaps, so no long test is left alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# ----------------------------------------------------------------------------- the command line

def cli(*args, cwd=None, env=None, process: bool = False, check: bool = False, timeout: float = 600):
    """`windtunnel ARGS` -> CompletedProcess (returncode, stdout, stderr). In this process by default: main(argv)
    with stdout, stderr and the windtunnel logger captured, the working directory and environment set for the call
    and restored after; an exception that would end the process is a traceback on stderr and exit code 1, as the
    process would print it. process=True starts `python -m windtunnel.cli` instead: for what the process boundary
    itself is (a kill, a lock held by another process, a terminal, the installed entry point)."""
    args = [str(a) for a in args]
    if process:
        done = subprocess.run([sys.executable, "-m", "windtunnel.cli", *args], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})})
    else:
        done = _in_process(args, cwd, env)
    if check and done.returncode != 0:
        raise AssertionError(f"windtunnel {' '.join(args)} -> exit {done.returncode}\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-4000:]}")
    return done


def _in_process(args: list, cwd, env) -> subprocess.CompletedProcess:
    from windtunnel.cli import main
    out, err = io.StringIO(), io.StringIO()
    root, ours = logging.getLogger(), logging.getLogger("windtunnel")
    # logging as a fresh process has it: no handlers (the CLI's basicConfig, or Hydra's job logging, adds its own)
    saved = (root.handlers[:], root.level, ours.handlers[:], ours.level, dict(os.environ), os.getcwd(), sys.argv[:])
    root.handlers, ours.handlers = [], []
    try:
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as stop:  # argparse, Hydra
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    err.write(stop.code + "\n")
            except Exception:  # noqa: BLE001 -- what the process would print before exiting 1
                err.write(traceback.format_exc())
                code = 1
    finally:
        _stop_worker_pool()  # joblib keeps its workers for reuse, with this call's directory and environment
        for handler in root.handlers + ours.handlers:  # Hydra's job log file, a handler on the captured streams
            handler.close()
        root.handlers, root_level, ours.handlers, level, environ, old_cwd, sys.argv[:] = saved
        root.setLevel(root_level)
        ours.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(old_cwd)
    return subprocess.CompletedProcess(["windtunnel", *args], code or 0, out.getvalue(), err.getvalue())


def free_port() -> int:
    """A TCP port free now (for a torchrun rendezvous that two test workers must not share)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- one tiny trial

TINY = ["name=tiny", "model=tiny64", "train=cpu", "data.max_bytes=4e6", "train.seq_len=64",
        "train.micro_batch_size=16", "train.batch_size_tokens=2048", f"train.total_tokens={2048 * 60}",
        "train.eval_tokens=4096", "train.final_eval_tokens=0", "train.eval_points=12", "train.log_every=5"]


def tiny_trial(*overrides: str, **train) -> TrialConfig:
    """A CPU trial of a few seconds: tiny64 on the embedded byte corpus (60 steps of 2,048 tokens), with more
    overrides (`"schedule.kind=wsd"`) and train.* fields as keywords (`total_tokens=4096`), all through compose()."""
    return compose([*TINY, *(override(f"train.{k}", v) for k, v in train.items()), *overrides])


# ----------------------------------------------------------------------------- one build for every worker

def shared(tmp_path_factory, name: str, build) -> Path:
    """A directory that `build(path)` fills once for the whole test session, however many pytest-xdist workers share
    it (the first to ask builds it under a file lock; the others wait, then read it). For the fixtures of runs that
    several tests read (the demo, a finished run, a one-process reference curve)."""
    from filelock import FileLock
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common parent
    path, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            build(path)
            done.touch()
    return path


# ----------------------------------------------------------------------------- no process left behind

SESSION_MARK = "WINDTUNNEL_TEST_SESSION"  # in the environment of every process this test worker starts


@pytest.fixture(scope="session", autouse=True)
def no_orphans():
    """The suite ends with no process of its own still running: a killed sweep's joblib workers, a trainer,
    torchrun's ranks, even once reparented away from this process (each inherits this worker's mark in its
    environment). joblib's pool of idle workers, kept for reuse, is shut down first, as the CLI's process exit would."""
    mark = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}"
    os.environ[SESSION_MARK] = mark
    yield
    _stop_worker_pool()
    deadline = time.time() + 10  # a process ending as the last test ends
    while (left := _marked(mark)) and time.time() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"processes left behind by the tests: {left}"


def _marked(mark: str) -> dict[int, str]:
    """Live processes, other than this one and joblib's resource tracker (it ends with this process), whose
    environment carries `mark`: pid -> command line."""
    needle = f"{SESSION_MARK}={mark}".encode()
    out = {}
    for task in Path("/proc").glob("[0-9]*"):
        pid = int(task.name)
        try:
            if pid != os.getpid() and needle in (task / "environ").read_bytes().split(b"\0") and _alive(pid):
                out[pid] = _cmdline(pid)
        except OSError:
            continue
    return {pid: cmd for pid, cmd in out.items() if "resource_tracker" not in cmd}


def _stop_worker_pool() -> None:
    """Shut joblib's reusable pool of worker processes down, as the end of a `windtunnel sweep` process would."""
    if "joblib" in sys.modules:
        from joblib.externals.loky import get_reusable_executor
        get_reusable_executor().shutdown(wait=True)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """Every live descendant of process `pid`."""
    out = []
    for task in Path("/proc").glob("[0-9]*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out += [int(task.name)] + children(int(task.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
