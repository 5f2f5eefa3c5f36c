"""What a sweep tells its user while it runs and when it ends: a progress line after each job, the final table
of statuses (and the exit code it decides), and Hydra's own records with storage passwords hidden."""
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

from ..config import redact

log = logging.getLogger("windtunnel")
SWEEP_JOBS, SWEEP_START = "WINDTUNNEL_SWEEP_RUNS", "WINDTUNNEL_SWEEP_START"


def redact_files(paths) -> None:
    """Hydra's own records (.hydra/*.yaml of the job, the sweep's multirun.yaml) repeat every override, an Optuna
    storage URL with its password included: rewritten with the password hidden (the job has its config)."""
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if redact(text) != text:
            tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}")
            tmp.write_text(redact(text))
            os.replace(tmp, path)


def progress(sweep_dir: Path) -> None:
    """After each job: runs done of this sweep's total, failed and diverged, and an ETA from this session's pace. The
    sweep dir may hold other sweeps' runs (a second grid into the same folder): only the runs finished since this
    sweep began count on top of its own that were finished then (SWEEP_START: time, those, all finished then)."""
    total = int(os.environ.get(SWEEP_JOBS, "0") or 0)
    if not total or not sweep_dir.is_dir():
        return
    from ..runs import read_result
    status = [r.status.value for r in (read_result(d) for d in sweep_dir.iterdir() if d.is_dir()) if r is not None]
    ended = sum(s in ("completed", "diverged", "failed", "pruned") for s in status)
    start, done0, ended0 = (float(x) for x in os.environ.get(SWEEP_START, f"{time.time()} 0 {ended}").split())
    done = int(min(done0 + max(ended - ended0, 0), total))
    pace = (time.time() - start) / (done - done0) if done > done0 else None
    eta = f", ETA {_duration(pace * max(total - done, 0))}" if pace else ""
    log.info("sweep: %d/%d runs done (%d failed, %d diverged)%s", done, total, status.count("failed"),
             status.count("diverged"), eta)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds > 5400 else f"{seconds / 60:.0f} min" if seconds > 90 else f"{seconds:.0f} s"


def finished(run_dir: Path) -> bool:
    from ..runs import read_result
    result = read_result(run_dir) if Path(run_dir).is_dir() else None
    return result is not None and result.status.value in ("completed", "diverged", "failed", "pruned")


def summarize(sweep_dir: Path, run_dirs: Optional[list] = None) -> int:
    """The table at the end of a sweep: how many of its runs ended in each status, and the failed ones with their
    errors. Returns the number of failed runs (diverged and pruned are results, not failures)."""
    from ..runs import RunStatus, load_results
    sweep_dir = Path(sweep_dir)
    table = load_results(sweep_dir) if sweep_dir.exists() else None
    rows = [] if table is None or table.empty else table.to_dict("records")
    if run_dirs is not None:  # a grid: its own points only, and the ones that left no run dir at all
        by_dir = {str(Path(r["run_dir"]).resolve()): r for r in rows}
        rows = [by_dir.get(str(Path(d).resolve()), {"run_dir": str(d), "status": "missing"}) for d in run_dirs]
    counts: dict = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    failed = [r for r in rows if r["status"] in (RunStatus.FAILED.value, "missing")]
    print(f"\nsweep {sweep_dir}: {len(rows)} runs", file=sys.stderr)
    for status in [s.value for s in RunStatus] + ["missing"]:
        if counts.get(status):
            print(f"  {status:<12} {counts[status]:>5}", file=sys.stderr)
    for r in failed[:10]:
        print(f"  failed: {r['run_dir']}: {str(r.get('error') or 'no result written')[:300]}", file=sys.stderr)
    return len(failed)
