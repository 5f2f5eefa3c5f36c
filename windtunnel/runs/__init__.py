"""Run directories (the unit of record; dirs.py), their one-writer lock (lock.py) and a sweep's committed record
(record.py). No torch."""
from .dirs import (CHECKPOINT, CONFIG, METRICS, RESULT, RunResult, RunStatus, append_metrics, flatten, git_commit,
                   is_finished, load_results, load_runs, read_json, read_metrics, read_result, rewrite_metrics,
                   run_dirs, write_json, write_result)
from .lock import RunBusy
from .record import RECORD, export_record, load_record, record_in

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "RESULT", "RECORD", "RunBusy", "RunResult", "RunStatus", "append_metrics",
           "export_record", "flatten", "git_commit", "is_finished", "load_record", "record_in", "load_results", "load_runs",
           "read_json", "read_metrics", "read_result", "rewrite_metrics", "run_dirs", "write_json", "write_result"]
