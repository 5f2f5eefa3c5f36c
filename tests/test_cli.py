"""The command line: one trial end to end, then the run table."""
import json
import math
import subprocess
import sys


def wt(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(out.stderr)
    return out


def test_train_then_runs_table(tmp_path):
    overrides = ["model=tiny64", "train.seq_len=64", "train.batch_size_tokens=1024", "train.total_tokens=40960",
                 "train.eval_points=8", "train.eval_tokens=2048", "data.max_bytes=2000000"]
    result = json.loads(wt("train", *overrides, "optim.lr=0.02", "--out", str(tmp_path / "r" / "a")).stdout)
    assert result["status"] == "completed" and result["steps"] == 40 and result["tokens"] == 40960
    assert result["final_eval_loss"] < 0.75 * math.log(256)
    wt("train", *overrides, "optim.lr=0.005", "--out", str(tmp_path / "r" / "b"))
    table = json.loads(wt("runs", str(tmp_path / "r"), "--json").stdout)
    assert [row["optim.lr"] for row in table] == [0.02, 0.005]
    assert table[0]["final_eval_loss"] == result["final_eval_loss"] and table[0]["N"] == 94_528
    points = json.loads(wt("runs", str(tmp_path / "r"), "--json", "--points").stdout)
    assert len(points) > 2 * 8 and {p["status"] for p in points} == {"completed"}


def test_bad_override_exits_2_with_the_field_named(tmp_path):
    out = wt("train", "train.batch_size_tokens=1000", "--out", str(tmp_path / "x"), check=False)
    assert out.returncode == 2 and "train.batch_size_tokens=1000 is not divisible" in out.stderr
    assert not (tmp_path / "x").exists()  # nothing started
    out = wt("runs", str(tmp_path / "nowhere"), check=False)
    assert out.returncode == 2 and "does not exist" in out.stderr
