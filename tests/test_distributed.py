"""torchrun on CPU (gloo): two processes reproduce one; FSDP2 likewise; kill and resume; muP groups survive
wrapping."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import cli, shared
from windtunnel import runs



pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


ARGS = ["model=tiny64", "train.seq_len=64", "train.micro_batch_size=4", "train.batch_size_tokens=1024",
        "train.eval_points=6", "train.eval_tokens=2048", "train.final_eval_tokens=0", "data.max_bytes=2000000", "train.threads=1", "train.log_every=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(nproc: int, out, *extra) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "windtunnel.cli", "train", *ARGS, *extra, "--out", str(out)]
    # --standalone: torchrun binds its own free rendezvous port (a port picked here and released could be taken
    # by another run before torchrun binds it)
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
            "-m", "windtunnel.cli", "train", *ARGS, *extra, "--out", str(out)]


def kill_all(marker) -> None:
    """SIGKILL every process whose command line names `marker` (a run dir), and wait until none is left."""
    def pids():
        out = []
        for proc in os.listdir("/proc"):
            try:
                if proc.isdigit() and str(marker).encode() in open(f"/proc/{proc}/cmdline", "rb").read():
                    out.append(int(proc))
            except OSError:
                continue
        return out
    deadline = time.time() + 30
    while pids() and time.time() < deadline:
        for pid in pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
    assert not pids(), "ranks of the killed run survived"


def run(cmd):
    # faulthandler: a rank that aborts (the rare "terminate called without an active exception" at a gloo rank's
    # exit, after its last eval) prints where every thread of it was, at the end of the stderr shown below
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert out.returncode == 0, out.stderr[-3000:]


def same_curves(a, b, rel):
    ma, mb = runs.read_metrics(a), runs.read_metrics(b)
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        for key in ("train_loss", "eval_loss", "grad_norm", "lr"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=rel), (x["step"], key)
    return ma


RUN = ["train.total_tokens=30720", "train.checkpoint_every=5"]  # 30 steps; checkpoints change no number


@pytest.fixture(scope="session")
def single(tmp_path_factory):
    """The one-process reference run the DDP and FSDP2 runs must reproduce (trained once for the session)."""
    return shared(tmp_path_factory, "single", lambda out: cli("train", *ARGS, *RUN, "--out", out, check=True))


@pytest.fixture(scope="session", params=["ddp", "fsdp"])
def two_process(request, tmp_path_factory):
    """(train.parallel, the same run on two torchrun processes), trained once for the session."""
    parallel = request.param
    return parallel, shared(tmp_path_factory, parallel,
                            lambda out: run(train_cmd(2, out, *RUN, f"train.parallel={parallel}")))


def test_two_processes_equal_one_process(single, two_process):
    parallel, out = two_process
    curve = same_curves(single, out, rel=1e-4)
    assert len(curve) == 31
    config = runs.read_json(out / "config.json")
    assert config["world_size"] == 2 and config["parallel"] == parallel


def test_kill_and_resume_continues_the_curve(tmp_path, two_process):
    parallel, whole = two_process
    extra = [*RUN, f"train.parallel={parallel}"]
    proc = subprocess.Popen(train_cmd(2, tmp_path / "killed", *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    meta = tmp_path / "killed" / "checkpoint" / "meta.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (meta.exists() and runs.read_json(meta)["step"] >= 10):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher dies, mid-run ...
    proc.wait()
    kill_all(tmp_path / "killed")  # ... and every rank with it (torchrun starts its workers in their own groups)
    killed_at = runs.read_json(meta)["step"]
    assert 10 <= killed_at < 30 and runs.read_result(tmp_path / "killed").status == "running"
    run(train_cmd(2, tmp_path / "killed", *extra))
    same_curves(whole, tmp_path / "killed", rel=1e-6)  # the same arithmetic: exact
    assert runs.read_result(tmp_path / "killed").steps == 30


def test_mup_groups_survive_ddp_and_fsdp2_wrapping():
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    from windtunnel.config import ModelConfig, OptimConfig
    from windtunnel.model import Transformer, build_optimizer

    def groups(model, opt):
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: (g["lr_scale"], g["weight_decay"], g["lr"]) for g in opt.param_groups for p in g["params"]}

    cfg = ModelConfig(d_model=128, n_layers=2, n_heads=4, vocab_size=256, dim_model_base=32)
    optim = OptimConfig(lr=0.01, weight_decay=0.1, wd_rule="mup")
    plain = Transformer(cfg)
    want = groups(plain, build_optimizer(plain, optim))
    assert {v[0] for v in want.values()} == {1.0, 0.25}  # m = 4: hidden matrices lr / 4
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        ddp_model = Transformer(cfg)
        DistributedDataParallel(ddp_model)
        assert groups(ddp_model, build_optimizer(ddp_model, optim)) == want
        sharded = Transformer(cfg)
        for block in sharded.blocks:
            fully_shard(block)
        fully_shard(sharded)
        assert type(next(sharded.parameters())).__name__ == "DTensor"
        assert groups(sharded, build_optimizer(sharded, optim)) == want
    finally:
        dist.destroy_process_group()
