"""One logged trial: the loss falls, tokens add up, resume is exact, divergence is recorded, skips work."""
import json
import os
import math
import shutil
import warnings

import pytest

from conftest import cli, shared, tiny_trial
from windtunnel import runs
from windtunnel.config import override
from windtunnel.train import StopTrial, eval_steps, run_trial


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """tiny_trial() trained once for the session: (its run dir, its result as recorded)."""
    out = shared(tmp_path_factory, "finished", lambda path: run_trial(tiny_trial(), path))
    return out, runs.read_result(out)


def test_loss_falls_well_below_uniform_and_tokens_add_up(finished):
    out, result = finished
    assert result.status == "completed", result
    metrics = runs.read_metrics(out)
    evals = [m for m in metrics if "eval_loss" in m]
    assert evals[0]["step"] == 0 and evals[0]["eval_loss"] == pytest.approx(math.log(256), rel=0.1)
    assert result.final_eval_loss < 0.6 * math.log(256)  # bytes: ln 256 = 5.55 nats for a uniform guess
    assert result.final_eval_loss == evals[-1]["eval_loss"] < evals[1]["eval_loss"]
    assert result.final_eval_bpb == pytest.approx(result.final_eval_loss / math.log(2), rel=1e-3)
    assert [m["tokens"] for m in metrics] == [m["step"] * 2048 for m in metrics]
    assert result.steps == 60 and result.tokens == 60 * 2048
    assert [m["step"] for m in evals] == eval_steps(60, 2048, 12)
    config = json.loads((out / "config.json").read_text())
    assert config["N"] == result.N == 94_528 and config["trial"]["model"]["vocab_size"] == 256
    assert result.flops == config["flops_per_token"] * 60 * 2048
    assert not (out / runs.CHECKPOINT).exists()  # removed once finished


def test_eval_points_are_log_spaced_in_tokens():
    steps = eval_steps(1000, 4096, 30)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 1000
    assert 20 <= len(steps) <= 31
    ratios = [b / a for a, b in zip(steps[1:], steps[2:])]
    assert max(ratios) <= 1000 ** (1 / 29) + 1.0  # geometric spacing up to integer rounding


@pytest.mark.slow
def test_a_wsd_decay_gets_evenly_spaced_evals_of_its_own(tmp_path):
    """train.decay_eval_points: 4 evals evenly spaced over a decay of the last 10 of 60 steps (52, 55, 58, 60:
    linspace(50, 60, 5)[1:] rounded) where the log spacing alone puts only the end; none without a decay."""
    assert eval_steps(60, 2048, 12) == eval_steps(60, 2048, 12, 0, 4) == eval_steps(60, 2048, 12, 60, 4)
    base = eval_steps(60, 2048, 12)
    assert [s for s in base if s > 42] == [60]
    assert sorted(set(base) | {52, 55, 58, 60}) == eval_steps(60, 2048, 12, 50, 4)
    cfg = tiny_trial("schedule.kind=wsd", override("schedule.decay_frac", 10 / 60), decay_eval_points=4)
    result = run_trial(cfg, tmp_path / "wsd")
    assert result.status == "completed", result
    evals = [m["step"] for m in runs.read_metrics(tmp_path / "wsd") if "eval_loss" in m]
    assert [s for s in evals if s > 42] == [52, 55, 58, 60]
    assert result.decayed_eval_loss == result.final_eval_loss


def test_completed_run_is_skipped(finished):
    out, result = finished
    before = (out / runs.METRICS).read_text()
    again = run_trial(tiny_trial(), out)
    assert again == result and (out / runs.METRICS).read_text() == before


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, finished):
    """Kill a run after a checkpoint (a KeyboardInterrupt from the eval callback), resume, compare the curve."""
    full = runs.read_metrics(finished[0])
    seen = []

    def kill_after_third_eval(report):
        seen.append(report.step)
        if len(seen) == 6:
            raise KeyboardInterrupt  # like a SIGINT: nothing is written after it
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_trial(tiny_trial(), out, callback=kill_after_third_eval)
    assert runs.read_result(out).status == "running" and (out / runs.CHECKPOINT).exists()
    partial = runs.read_metrics(out)
    assert partial[-1]["step"] == seen[-1] < 60
    result = run_trial(tiny_trial(), out)
    resumed = runs.read_metrics(out)
    assert result.status == "completed"
    assert [m["step"] for m in resumed] == [m["step"] for m in full]
    for a, b in zip(resumed, full):
        assert a.keys() == b.keys()
        for key in {"train_loss", "eval_loss", "grad_norm", "lr"} & b.keys():
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_a_checkpoint_that_lost_its_weights_restarts_the_run_and_keeps_its_first_curve(tmp_path, killed, finished):
    """A killed run dir brought back without *.pt (meta.json only): the next call trains it again from step 0 (the
    same curve as an uninterrupted run) instead of failing, and keeps the first attempt's points beside it."""
    out = tmp_path / "copied"
    _killed(killed, out)
    first = runs.read_metrics(out)
    (out / runs.CHECKPOINT / "state.pt").unlink()
    result = run_trial(tiny_trial(), out)
    assert result.status == "completed" and result.steps == 60
    full = runs.read_metrics(finished[0])
    again = runs.read_metrics(out)
    assert [m["step"] for m in again] == [m["step"] for m in full]
    assert [m["eval_loss"] for m in again if "eval_loss" in m] == pytest.approx(
        [m["eval_loss"] for m in full if "eval_loss" in m], rel=1e-6)
    kept = [json.loads(line) for line in runs.Run(out).restarted.read_text().splitlines()]
    assert kept == first and 0 < kept[-1]["step"] < 60


@pytest.fixture(scope="session")
def killed(tmp_path_factory):
    """tiny_trial() stopped by a KeyboardInterrupt at its fourth eval, once for the session: a run dir with a
    checkpoint and a partial curve, copied by each test that breaks it in its own way."""
    def build(path):
        def kill(report):
            if report.step >= eval_steps(60, 2048, 12)[3]:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            run_trial(tiny_trial(), path, callback=kill)
    return shared(tmp_path_factory, "killed", build)


def _killed(killed, out) -> int:
    """A copy of the killed run dir at `out`; the step of its checkpoint."""
    shutil.copytree(killed, out)
    return runs.read_meta(out / runs.CHECKPOINT)["step"]


def test_a_save_interrupted_between_its_renames_resumes_from_the_complete_copy(tmp_path, killed, finished):
    """A crash after `checkpoint -> .checkpoint.old` and before `.checkpoint.tmp -> checkpoint`: no checkpoint, two
    complete ones beside it. The next call resumes from the newer (the same curve as an uninterrupted run), not
    from step 0."""
    out = tmp_path / "torn_save"
    step = _killed(killed, out)
    ckpt = out / runs.CHECKPOINT
    shutil.copytree(ckpt, out / f".{runs.CHECKPOINT}.old")
    (out / f".{runs.CHECKPOINT}.old" / "meta.json").write_text(
        (ckpt / "meta.json").read_text().replace(f'"step": {step}', '"step": 1'))  # the older one
    os.rename(ckpt, out / f".{runs.CHECKPOINT}.tmp")
    resumed_at = []
    result = run_trial(tiny_trial(), out, callback=lambda report: resumed_at.append(report.step))
    assert result.status == "completed" and resumed_at[0] > step  # started after the checkpoint's step
    full = runs.read_metrics(finished[0])
    assert [m["eval_loss"] for m in runs.read_metrics(out) if "eval_loss" in m] == pytest.approx(
        [m["eval_loss"] for m in full if "eval_loss" in m], rel=1e-6)


def test_a_truncated_checkpoint_restarts_the_run_naming_the_file(tmp_path, killed, finished, caplog):
    out = tmp_path / "truncated"
    _killed(killed, out)
    state = out / runs.CHECKPOINT / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a full disk cut the save
    with caplog.at_level("WARNING", logger="windtunnel"):
        result = run_trial(tiny_trial(), out)
    assert result.status == "completed" and result.steps == 60
    assert f"checkpoint file {state} is unreadable (truncated or corrupt" in caplog.text
    assert "training" in caplog.text and "from the start" in caplog.text
    assert len(list(out.glob(f".{runs.CHECKPOINT}.unreadable-*"))) == 1 and runs.Run(out).restarted.exists()
    full = runs.read_metrics(finished[0])
    assert [m["eval_loss"] for m in runs.read_metrics(out) if "eval_loss" in m] == pytest.approx(
        [m["eval_loss"] for m in full if "eval_loss" in m], rel=1e-6)


def test_a_torn_metrics_line_is_named_and_the_run_resumes(tmp_path, killed, finished):
    """A kill tears the last metrics line; the resumed run never glues a row onto the fragment, and a torn line left
    mid-file (by an older writer) is named with its file and line and skipped."""
    out = tmp_path / "torn_metrics"
    _killed(killed, out)
    metrics = out / runs.METRICS
    metrics.write_text(metrics.read_text() + '{"step": 99, "train_lo')  # torn by the kill
    result = run_trial(tiny_trial(), out)
    assert result.status == "completed"
    assert all(json.loads(line) for line in metrics.read_text().splitlines())  # every line a row
    metrics.write_text('{"step": 1}\n{"step": 2, "tr\n{"step": 3}\n')
    with pytest.warns(UserWarning, match=rf"{metrics} line 2 is not a JSON row \(torn by a kill"):
        assert [r["step"] for r in runs.read_metrics(out)] == [1, 3]


def test_a_run_recorded_before_a_config_field_existed_is_still_skipped_and_a_set_field_is_refused(tmp_path, finished):
    """An upgrade adds fields to config.py (schedule.warmup_steps): a run dir whose config.json lacks one is the
    same trial while the field keeps its default (skipped, not refused); set away from it, it is another trial."""
    from windtunnel.config import ConfigError
    out = tmp_path / "old"
    shutil.copytree(finished[0], out)
    config = json.loads((out / "config.json").read_text())
    del config["trial"]["schedule"]["warmup_steps"]
    (out / "config.json").write_text(json.dumps(config))
    before = (out / runs.METRICS).read_text()
    assert run_trial(tiny_trial(), out) == finished[1] and (out / runs.METRICS).read_text() == before
    changed = tiny_trial("schedule.warmup_steps=5")
    with pytest.raises(ConfigError, match="schedule.warmup_steps: None there, 5 now"):
        run_trial(changed, out)


def test_huge_lr_diverges_and_keeps_its_curve(tmp_path):
    cfg = tiny_trial("optim.lr=30.0", "schedule.warmup_frac=0.0")
    result = run_trial(cfg, tmp_path / "hot")
    assert result.status == "diverged", result
    metrics = runs.read_metrics(tmp_path / "hot")
    assert len(metrics) >= 2 and metrics[-1]["step"] == result.steps < 60
    last = metrics[-1]["train_loss"]
    assert last is None or last > 3.0 * metrics[1]["train_loss"]  # NaN is stored as null
    assert runs.is_finished(tmp_path / "hot")  # a diverged LR is a result: not retrained
    table = runs.load_results(tmp_path)
    assert table.loc[0, "status"] == "diverged" and table.loc[0, "optim.lr"] == 30.0


def test_callback_can_prune(tmp_path):
    def prune(report):
        if report.step >= 3:
            raise StopTrial(f"pruned at {report.step}")
    result = run_trial(tiny_trial(), tmp_path / "p", callback=prune)
    assert result.status == "pruned" and result.steps == 3 and "pruned at 3" in result.error
    assert not runs.is_finished(tmp_path / "p")


def test_failure_is_recorded_not_raised(tmp_path):
    cfg = tiny_trial("data.source=text_dir", override("data.path", str(tmp_path / "missing")))
    result = run_trial(cfg, tmp_path / "f")
    assert result.status == "failed" and "missing" in result.error
    assert runs.read_result(tmp_path / "f").status == "failed"


def test_loader_skips_corrupt_run_dirs(tmp_path, finished):
    shutil.copytree(finished[0], tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"trial": {"model": ')  # half-written
    torn = tmp_path / "torn"
    shutil.copytree(finished[0], torn)
    with open(torn / "metrics.jsonl", "a") as f:
        f.write('{"step": 61, "tok')  # a kill mid-line
    with pytest.warns(UserWarning, match="skipping corrupt run directory .*bad"):
        results = runs.load_results(tmp_path)
    assert sorted(results["run_dir"].str.rsplit("/", n=1).str[-1]) == ["good", "torn"]
    with warnings.catch_warnings(record=True):
        points = runs.load_points(tmp_path)
    n = len(runs.read_metrics(finished[0]))
    assert len(points) == 2 * n
    assert set(points["status"]) == {"completed"} and set(points["N"]) == {94_528}
    assert {"step", "tokens", "eval_loss", "optim.lr", "train.batch_size_tokens"} <= set(points.columns)


@pytest.mark.slow
def test_wsd_decay_branch_equals_a_standalone_wsd_run(tmp_path):
    """A decay branched from the stable run's checkpoint = the same WSD schedule trained from scratch."""
    cfg = tiny_trial("schedule.decay_frac=0.2", f"schedule.warmup_tokens={4 * 2048}",
                     log_every=1, branch_at_n=[0.5, 1.0])  # N = 94,528: branches at steps 23 and 46
    reports = []
    trunk = run_trial(cfg, tmp_path / "trunk", callback=reports.append)
    assert trunk.status == "completed" and trunk.steps == 46  # the run stops at the last branch point
    branch = runs.read_metrics(tmp_path / "trunk" / "decay_1N")
    stable = runs.read_metrics(tmp_path / "trunk")
    assert [r.branch for r in reports if r.decayed] == ["decay_0.5N", "decay_1N"]
    assert reports[-1].step == 46 + 12 and reports[-1].decayed  # decay = 0.2 of the branch: 46 / 0.8 - 46 -> 12
    assert all(m["lr"] == pytest.approx(0.01) for m in stable if m.get("lr") and m["step"] > 4)  # stays stable
    assert branch[-1]["step"] == 58 and branch[-1]["lr"] < 0.01 * 0.2
    by_step = {m["step"]: m for m in stable}
    for m in branch:  # identical to the stable run up to the branch point
        if m["step"] <= 46:
            assert m == by_step[m["step"]]
    solo = tiny_trial(f"schedule.warmup_tokens={4 * 2048}", f"schedule.decay_tokens={12 * 2048}",
                      f"schedule.half_life_tokens={round(0.02 * 58 * 2048)}", log_every=1, total_tokens=58 * 2048)
    run_trial(solo, tmp_path / "solo")
    alone = {m["step"]: m for m in runs.read_metrics(tmp_path / "solo")}
    for m in branch:
        if m["step"] > 46:  # the decay itself matches a from-scratch WSD run step for step
            assert m["lr"] == pytest.approx(alone[m["step"]]["lr"], rel=1e-12)
            assert m["train_loss"] == pytest.approx(alone[m["step"]]["train_loss"], rel=1e-5)
    assert runs.read_result(tmp_path / "trunk" / "decay_1N").final_eval_loss == pytest.approx(
        runs.read_result(tmp_path / "solo").final_eval_loss, rel=1e-5)
    assert not (tmp_path / "trunk" / "checkpoints").exists()
    table = runs.load_results(tmp_path / "trunk")
    assert sorted(table["train.total_tokens"]) == [29 * 2048, 46 * 2048, 58 * 2048]


def test_run_dir_with_a_different_trial_is_refused(tmp_path, finished):
    from windtunnel.config import ConfigError
    cfg = tiny_trial("optim.lr=0.02")
    with pytest.raises(ConfigError, match=r"holds a different trial \(optim.lr: 0.01 there, 0.02 now\)"):
        run_trial(cfg, finished[0])


class _Payload:
    """What a crafted checkpoint could hold: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    """In this process, where the payload's class is importable: a loader that unpickled objects would run it."""
    import torch
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker), "optim": {}}, evil / "state.pt")
    (evil / "meta.json").write_text(json.dumps({"step": 1, "format": "full", "first_loss": 5.0, "train_s": 0.0}))
    out = cli("train", "model=tiny32", "train=cpu", f"train.init_from={evil}", "--out", tmp_path / "run")
    assert not marker.exists()  # the payload never ran
    assert out.returncode != 0 and "holds more than tensors and plain values" in out.stderr + out.stdout


def test_a_tiny_cpu_trial_trains_on_one_thread_and_leaves_torch_as_it_found_it(tmp_path, monkeypatch):
    """train.threads=0 picks one thread for a micro-batch under 2 GFLOP on the CPU (benchmarks/threads.py), torch's
    default above it or on a GPU, and any count given; the trainer puts torch's thread count back after the run."""
    import torch

    from windtunnel.compose import compose
    from windtunnel.train.core import cpu_threads
    cpu = torch.device("cpu")
    assert cpu_threads(tiny_trial(), cpu) == 1 and cpu_threads(tiny_trial(threads=3), cpu) == 3
    big = compose(["model=tiny256", "train=cpu", "train.seq_len=128", "train.micro_batch_size=32",
                   "train.batch_size_tokens=4096"])  # 74 GFLOP a micro-batch
    assert cpu_threads(big, cpu) == 0 and cpu_threads(tiny_trial(), torch.device("cuda")) == 0
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not the suite's one thread (conftest), so that restoring it is seen
    seen, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n) or real(n))
    try:
        assert run_trial(tiny_trial(total_tokens=4 * 2048, eval_points=2), tmp_path / "r").status == "completed"
        assert seen == [1, 3] and torch.get_num_threads() == 3
    finally:
        real(before)
