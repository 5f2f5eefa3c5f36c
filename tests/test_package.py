"""The package as a user installs it: a non-editable wheel in a fresh virtual environment carries the Hydra
tree (conf/ as windtunnel.conf) and the plugins, and runs a sweep from any directory."""
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


ROOT = Path(__file__).resolve().parents[1]


def test_wheel_in_a_fresh_venv_runs_a_two_point_sweep(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("windtunnel-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "windtunnel/conf/config.yaml" in names and "windtunnel/conf/sweep/batch_size_cpu.yaml" in names
    assert "hydra_plugins/windtunnel_grid_sweeper/grid.py" in names and not any(n.startswith("conf/") for n in names)
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "windtunnel").rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))  # every module of the package ships
    tree = {"windtunnel/conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert tree <= set(names), sorted(tree - set(names))  # and every file of the Hydra tree

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, hydra, ...) come from this environment; windtunnel only from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import windtunnel, windtunnel.conf; print(windtunnel.__file__); "
                            "print(windtunnel.conf.__file__)"], cwd=work, capture_output=True, text=True, check=True)
    assert all(line.startswith(site) for line in where.stdout.split()), where.stdout
    sweep = subprocess.run([str(venv / "bin" / "windtunnel"), "sweep", "-m", "model=tiny32", "train=cpu",
                            "train.seq_len=64", "train.batch_size_tokens=1024,2048", "train.total_tokens=8192",
                            "train.eval_points=3", "train.eval_tokens=2048", "train.final_eval_tokens=0", "data.max_bytes=1000000"],
                           cwd=work, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    results = sorted((work / "runs" / "adhoc").glob("*/result.json"))
    assert [json.loads(p.read_text())["status"] for p in results] == ["completed", "completed"]
    assert sorted(json.loads((p.parent / "config.json").read_text())["trial"]["train"]["batch_size_tokens"]
                  for p in results) == [1024, 2048]


@pytest.mark.parametrize("gpu", [False, True])
def test_make_install_takes_the_cpu_torch_where_there_is_no_gpu(tmp_path, gpu):
    """`make install` without TORCH: no nvidia-smi on PATH -> PyTorch's CPU index (then an offline CPU wheel, then a
    message naming the fix); an nvidia-smi on PATH -> PyPI's CUDA build; TORCH=SPEC -> exactly that spec."""
    import shutil
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "sh", "bash", "env"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    dry = subprocess.run(["make", "-n", "install"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    torch_line = next(line for line in dry.stdout.splitlines() if "pip install -q" in line and "torch" in line)
    if gpu:
        assert torch_line.endswith('pip install -q "torch>=2.6"')
    else:
        assert '"torch>=2.6" --index-url https://download.pytorch.org/whl/cpu' in torch_line
        assert "|| { .venv/bin/python -m pip install -q --no-index --no-deps \"torch>=2.6\" && " in torch_line
        assert "--extra-index-url" not in torch_line  # a PyPI fallback would pick the CUDA build
        assert "pass TORCH=SPEC" in torch_line and "exit 1" in torch_line
    pinned = subprocess.run(["make", "-n", "install", "TORCH=torch==2.13.0"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert '.venv/bin/python -m pip install -q "torch==2.13.0"' in pinned.stdout.splitlines()
