"""Run directories, the unit of record: a Run (run.py: one directory, its layout, its life cycle), the files
and the tables read back from many of them (dirs.py), what a logged curve says (curve.py: overfit, unstable), the
one-writer lock (lock.py) and a sweep's committed record (record.py). No torch."""
from .dirs import (CHECKPOINT, CONFIG, METRICS, RESULT, RunResult, RunStatus, append_metrics, flatten, git_commit,
                   is_finished, load_points, load_results, read_json, read_metrics, read_result, rewrite_metrics,
                   run_dirs, write_file, write_json, write_result)
from .lock import RunBusy
from .record import RECORD, export_record, load_record, record_in
from .seeds import by_config, config_columns, config_key, run_loss
from .curve import instability, overfitting
from .run import Run, UnreadableCheckpoint, differences, has_weights, read_meta, weights_file

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "RESULT", "RECORD", "Run", "RunBusy", "RunResult", "RunStatus", "UnreadableCheckpoint",
           "append_metrics", "by_config", "config_columns", "config_key", "differences", "export_record", "flatten", "git_commit", "has_weights", "instability", "is_finished",
           "load_points", "load_record", "load_results", "overfitting", "read_json", "read_meta", "read_metrics",
           "read_result", "record_in", "rewrite_metrics", "run_dirs", "run_loss", "weights_file", "write_file", "write_json", "write_result"]
