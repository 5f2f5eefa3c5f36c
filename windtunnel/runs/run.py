"""A Run: one run directory, the unit of record, as one object. It resolves its trial once, reads config.json
once, decides whether the directory is to be skipped, refused or resumed, owns every path in it, holds its lock
and writes its result. The trainer (train/trainer.py) trains Runs; nothing else knows the layout:

  RUN/config.json               the resolved trial and its provenance (git commit, device, N, corpus manifest)
  RUN/metrics.jsonl             one JSON object per logged step (runs/dirs.py reads and appends them)
  RUN/metrics.restarted.jsonl   the points of an attempt whose checkpoint had lost its weights
  RUN/result.json               RunResult: status, final and best held-out loss, tokens, N, FLOPs, wall time
  RUN/.lock                     the one process writing it (runs/lock.py)
  RUN/checkpoint/               the latest checkpoint while the run is unfinished (meta.json + weights)
  RUN/checkpoints/stepS/        the stable run's checkpoint at a decay branch's start step S
  RUN/decay_{K}N/               the decay branch from K x N tokens, a run directory of its own
  RUN/final/                    the completed run's weights and optimizer (train.save_final)

A checkpoint directory holds meta.json (readable without torch) and either state.pt (the whole state) or
distributed-checkpoint shards (FSDP2, indexed by .metadata); train/dist.py writes and reads the weights.
No torch here.
"""
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from .. import sizing
from ..config import IDENTITY_EXEMPT, LEGACY, ConfigError, TrialConfig, to_dict
from . import lock
from .curve import instability, overfitting
from .dirs import (CHECKPOINT, CONFIG, METRICS, RunResult, RunStatus, append_metrics, read_json, read_metrics,
                   read_result, rewrite_metrics, write_json, write_result)

CHECKPOINTS, FINAL, RESTARTED, META = "checkpoints", "final", "metrics.restarted.jsonl", "meta.json"
log = logging.getLogger("windtunnel")


class UnreadableCheckpoint(ConfigError):
    """A checkpoint's weights file cannot be read (truncated by a full disk or a kill, or corrupt)."""


class Run:
    """The run directory `path`, for `trial` (None: only to read what is there). `meta` (the sweep's name, the
    override string) goes into config.json beside the trial."""

    def __init__(self, path, trial: Optional[TrialConfig] = None, meta: Optional[dict] = None):
        self.path = Path(path)
        self.trial = sizing.resolve_tokens(trial) if trial is not None else None  # tokens_per_param, branches
        self.meta = dict(meta or {})
        self._recorded: Optional[dict] = None
        self._read = False

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------------------- paths

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoint(self) -> Path:
        """The latest checkpoint of an unfinished run (removed when it finishes unless train.keep_checkpoint)."""
        return self.path / CHECKPOINT

    def branch_point(self, step: int) -> Path:
        """The stable run's checkpoint at step `step`, where a decay branch starts."""
        return self.path / CHECKPOINTS / f"step{step}"

    def branch(self, multiple: float) -> Path:
        """The run directory of the decay branch from multiple x N tokens."""
        return self.path / f"decay_{multiple:g}N"

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def restarted(self) -> Path:
        return self.path / RESTARTED

    @classmethod
    def of_checkpoint(cls, checkpoint) -> "Run":
        """The run that wrote a checkpoint (RUN/checkpoint, RUN/final or RUN/checkpoints/stepS), found beside it,
        never relative to wherever the command runs. ConfigError when no config.json is there."""
        here = Path(checkpoint).resolve()
        recorded = Path(read_meta(here).get("run_dir", "")) if (here / META).exists() else Path()
        for owner in (here.parent, here.parent.parent, *([recorded] if recorded.is_absolute() else [])):
            if (owner / CONFIG).exists():
                return cls(owner)
        raise ConfigError(f"{checkpoint}: the config.json of the run that wrote it is not beside it (looked in "
                          f"{here.parent} and {here.parent.parent})")

    # ------------------------------------------------------------------------- what is there

    @property
    def recorded(self) -> Optional[dict]:
        """config.json as written when the run began (read once), or None for a new directory."""
        if not self._read:
            self._recorded = read_json(self.path / CONFIG) if (self.path / CONFIG).exists() else None
            self._read = True
        return self._recorded

    def result(self) -> Optional[RunResult]:
        return read_result(self.path)

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    @property
    def is_finished(self) -> bool:
        result = self.result()
        return result is not None and result.finished

    @property
    def is_live(self) -> bool:
        """Whether a live process holds this run dir (runs/lock.py)."""
        return lock.is_live(self.path)

    @property
    def optuna_trial(self) -> Optional[int]:
        """The Optuna trial number this run dir was trained for (sweep jobs record it), else None."""
        recorded = self.recorded or {}
        if recorded.get("optuna_trial") is not None:
            return int(recorded["optuna_trial"])
        for item in str(recorded.get("overrides", "")).split(","):  # run dirs written before it was recorded
            key, _, value = item.partition("=")
            if key == "tuning.trial_number" and value.lstrip("-").isdigit():
                return int(value)
        return None

    # ------------------------------------------------------------------------- skip, refuse or resume

    def finished_result(self) -> Optional[RunResult]:
        """The decision a trainer makes first: the result to return as it is when this dir holds this trial,
        finished (and train.skip_completed); None when it is to be trained (fresh, or resumed from its checkpoint).
        Raises ConfigError when the dir holds a different trial: logged runs are never overwritten."""
        if self.recorded and "trial" in self.recorded:
            self._adopt_legacy(self.recorded["trial"])
            diff = differences(self.recorded["trial"], to_dict(self.trial))
            if diff:
                raise ConfigError(f"run directory {self.path} holds a different trial ({'; '.join(diff[:3])}); "
                                  f"use another directory: logged runs are never overwritten")
        if self.trial.train.skip_completed and self.is_finished:
            return self.result()
        return None

    def _adopt_legacy(self, recorded: dict) -> None:
        """A run recorded before a field existed continues as it began: the trial takes config.LEGACY's value for each
        key its config.json lacks (a run measured on the val split's head goes on being measured there)."""
        for key, value in LEGACY.items():
            section, name = key.split(".")
            if name not in recorded.get(section, {}) and getattr(getattr(self.trial, section), name) != value:
                log.info("%s was recorded before %s existed: it continues with %s=%r", self.path, key, key, value)
                self.trial = dataclasses.replace(self.trial, **{section: dataclasses.replace(
                    getattr(self.trial, section), **{name: value})})

    def check_corpus(self, manifest: str) -> None:
        """An unfinished run continues only on the corpus it began on (its files' manifest)."""
        recorded = (self.recorded or {}).get("corpus_manifest")
        if recorded and recorded != manifest:
            raise ConfigError(f"run directory {self.path} began on another corpus (manifest {recorded} there, "
                              f"{manifest} now: files were added, removed or changed); restore the corpus, or train "
                              f"into another directory")

    def resume_from(self, write: bool = True) -> Optional[Path]:
        """Where training starts: this run's own checkpoint, else train.init_from (a decay branch), else None (a
        fresh start). A checkpoint that lost its weights (a run dir copied back without *.pt) is trained again from
        the start, its earlier curve kept in RUN/metrics.restarted.jsonl (moved there when `write`: the writer)."""
        if write:
            self.recover_checkpoint()
        if (self.checkpoint / META).exists():
            if has_weights(self.checkpoint):
                return self.checkpoint
            if not write:
                return Path(self.trial.train.init_from) if self.trial.train.init_from else None
            log.warning("%s: checkpoint without weights; training from the start (its "
                                                    "earlier points kept in %s)", self.path, RESTARTED)
            if (self.path / METRICS).exists():
                rewrite_metrics(self.path, self.metrics(), name=RESTARTED)  # atomic, like every write
        return Path(self.trial.train.init_from) if self.trial.train.init_from else None

    def recover_checkpoint(self) -> Optional[Path]:
        """A save renames the checkpoint to .checkpoint.old, then its complete new copy .checkpoint.tmp into place; a
        crash between the two renames leaves no checkpoint but two complete ones beside it. The newer (.tmp: its
        meta.json is written last, so it is there only when the save finished) or else the older becomes the
        checkpoint again, with a warning; without this the run would restart from step 0 and the next save would
        delete both."""
        if (self.checkpoint / META).exists():
            return None
        for candidate in (self.path / f".{CHECKPOINT}.tmp", self.path / f".{CHECKPOINT}.old"):
            if (candidate / META).exists() and has_weights(candidate):
                if self.checkpoint.exists():
                    shutil.rmtree(self.checkpoint)
                os.rename(candidate, self.checkpoint)
                log.warning("%s: a save was interrupted between its renames; resuming from "
                                                        "%s (step %s)", self.path, candidate.name,
                                                        read_meta(self.checkpoint).get("step"))
                return self.checkpoint
        return None

    def set_aside(self, reason: str) -> Path:
        """Move an unreadable checkpoint out of the way (kept, renamed) and keep the earlier curve in
        RUN/metrics.restarted.jsonl: the run then trains from the start."""
        aside = self.path / f".{CHECKPOINT}.unreadable-{int(time.time())}"
        os.rename(self.checkpoint, aside)
        log.warning("%s; training %s from the start (the checkpoint kept as %s)", reason,
                                                self.path, aside.name)
        if (self.path / METRICS).exists():
            rewrite_metrics(self.path, self.metrics(), name=RESTARTED)
        return aside

    # ------------------------------------------------------------------------- writing

    def acquire(self) -> None:
        """Make the directory and take its lock before anything is written there (RunBusy when a live process
        holds it)."""
        if self.path.is_symlink() and not self.path.exists():
            raise ConfigError(f"{self.path} is a symlink to {os.readlink(self.path)}, which does not exist: create "
                              f"that folder, or give another run directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the run directory {self.path}: {err.strerror or err}; give a "
                              f"writable folder (--out, hydra.sweep.dir)") from None
        lock.acquire(self.path)

    def release(self) -> None:
        lock.release(self.path)

    def start(self, pid: int) -> None:
        write_result(self.path, RunResult(RunStatus.RUNNING, pid=pid))

    def write_config(self, trial: TrialConfig, provenance: dict) -> None:
        """config.json: the trial as trained (vocabulary filled in), the caller's meta and the provenance."""
        self._recorded = {"trial": to_dict(trial), **self.meta, **provenance}
        self._read = True
        write_json(self.path / CONFIG, self._recorded)

    def append(self, row: dict) -> None:
        append_metrics(self.path, row)

    def keep_metrics(self, rows: list[dict]) -> None:
        """Replace the metrics with `rows` (a resumed run drops the points logged after its checkpoint)."""
        rewrite_metrics(self.path, rows)

    def fail(self, error: str, traceback: Optional[str] = None) -> RunResult:
        return write_result(self.path, RunResult(RunStatus.FAILED, error=error, traceback=traceback))

    def finish(self, result: RunResult, write: bool = True) -> RunResult:
        """The loop's outcome plus the summary of the logged metrics, written to result.json (when `write`: rank 0);
        the checkpoints of a finished run are dropped unless train.keep_checkpoint."""
        cfg, metrics = self.trial, self.metrics()
        evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
        config = self.recorded or {}
        flops_per_token = config.get("flops_per_token") or sizing.flops_per_token(cfg.model, cfg.train.seq_len)
        last = metrics[-1] if metrics else {}
        train_s, tokens = last.get("train_s") or 0.0, last.get("tokens", 0)
        planned = config.get("planned_epochs")
        result = dataclasses.replace(
            result, final_eval_loss=evals[-1] if evals else None, best_eval_loss=min(evals) if evals else None,
            final_eval_bpb=next((m["eval_bpb"] for m in reversed(metrics) if m.get("eval_bpb") is not None), None),
            final_eval_se=next((m.get("eval_se") for m in reversed(metrics) if m.get("eval_loss") is not None), None),
            steps=last.get("step", 0), tokens=tokens, N=sizing.n_params(cfg.model), flops=flops_per_token * tokens,
            train_s=train_s, tokens_per_s=tokens / train_s if train_s else None, pid=None,
            # the planned epochs (every source at its share, data.epochs) scaled to the tokens this run trained
            epochs=planned * tokens / sizing.tokens_trained(cfg) if planned else None,
            overfit_rise=overfitting(metrics, cfg.train.overfit_margin),
            unstable_rise=instability(metrics, cfg.train.overfit_margin))
        result = dataclasses.replace(result, overfit=result.overfit_rise is not None,
                                     unstable=result.unstable_rise is not None)
        if not write:
            return result
        result = write_result(self.path, result)
        if result.finished and not cfg.train.keep_checkpoint:
            shutil.rmtree(self.checkpoint, ignore_errors=True)
            shutil.rmtree(self.path / CHECKPOINTS, ignore_errors=True)  # branch points; every branch has finished
        return result


def differences(old: dict, new: dict, prefix: str = "", defaults: Optional[dict] = None) -> list[str]:
    """Fields that differ between two recorded trials, the runtime ones (config.IDENTITY_EXEMPT) aside. A field the
    old record lacks (added to config.py since it was written) counts only when the new trial sets it away from what
    the record meant by it (config.LEGACY's value, else its default), so an upgrade keeps resuming and skipping the
    runs it finds."""
    defaults = to_dict(TrialConfig()) if defaults is None else defaults
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{name}.", defaults.get(key) or {})
        elif key not in old and key in defaults and b == LEGACY.get(name, defaults[key]):
            continue
        elif a != b and name not in IDENTITY_EXEMPT and not (name == "model.vocab_size" and b == 0):
            out.append(f"{name}: {a!r} there, {b!r} now")
    return out


# ----------------------------------------------------------------------------- checkpoint directories

def read_meta(path) -> dict:
    """A checkpoint's meta.json (step, tokens, model shape, format)."""
    file = Path(path) / META
    if not file.exists():
        raise ConfigError(f"{path} is not a windtunnel checkpoint (no {META}); give a run's checkpoint directory, "
                          f"e.g. RUN/checkpoint or RUN/checkpoints/stepN")
    return json.loads(file.read_text())


def weights_file(meta: dict) -> str:
    return ".metadata" if meta.get("format") == "dcp" else "state.pt"  # DCP's index of shards, or the whole state


def has_weights(path) -> bool:
    """Whether a checkpoint dir holds its weights, not only meta.json (a run dir brought back without *.pt)."""
    return (Path(path) / weights_file(read_meta(path))).exists()
