"""The throughput benchmark never rots: its CPU mode runs in the suite, and its MFU arithmetic is checked."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from windtunnel import sizing

pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
throughput = importlib.util.module_from_spec(spec)
spec.loader.exec_module(throughput)


def test_flops_and_mfu_by_hand():
    m = sizing.preset("w9m", vocab_size=8192)
    # 6N + 6 d V + 12 L d T: 6 x 9,426,240 + 6 x 320 x 8192 + 12 x 8 x 320 x 1024
    assert sizing.flops_per_token(m, 1024) == 56_557_440 + 15_728_640 + 31_457_280 == 103_743_360
    assert throughput.mfu(1e6, 103_743_360, 989.0) == pytest.approx(0.104897, rel=1e-5)


def test_cpu_mode_runs_and_reports(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--tiny", "--out",
                          str(tmp_path / "t.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "t.json").read_text())
    assert [r["tokens_per_step"] for r in doc["rows"]] == [1024, 4096]
    for r in doc["rows"]:
        wt = r["windtunnel"]
        assert wt["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / wt["s_per_step"])
        assert r["micro"] * r["accum"] * 64 == r["tokens_per_step"]
        if "peer_hf_llama" in r:  # transformers installed: the peer trained on the same windows
            assert r["ratio_windtunnel_over_peer"] == pytest.approx(wt["tokens_per_s"] / r["peer_hf_llama"]["tokens_per_s"])
    assert "| tiny64 |" in out.stdout


def test_packed_benchmark_cpu_mode(tmp_path):
    """benchmarks/packed.py --tiny: grid tokens/s is K x tokens/step / step time for the pack, tokens/step /
    step time for one sequential trial, and the end-to-end packed grid gives the sequential grid's losses."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "packed.py"), "--tiny", "--out",
                          str(tmp_path / "p.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["k"] == 2 and [r["tokens_per_step"] for r in doc["step"]] == [256, 512]
    for r in doc["step"]:
        seq, packed = r["sequential_compiled"], r["packed"]
        assert seq["grid_tokens_per_s"] == pytest.approx(r["tokens_per_step"] / seq["s_per_step"])
        assert packed["grid_tokens_per_s"] == pytest.approx(2 * r["tokens_per_step"] / packed["s_per_step"])
        assert packed["speedup_vs_sequential_compiled"] == pytest.approx(packed["grid_tokens_per_s"] / seq["grid_tokens_per_s"])
    for r in doc["grid"]:
        assert r["packed"]["statuses"] == r["sequential_compiled"]["statuses"] == ["completed", "completed"]
        assert r["packed"]["final_eval_loss"] == pytest.approx(r["sequential_compiled"]["final_eval_loss"], rel=1e-4)
        assert r["packed"]["max_rel_diff_vs_sequential"] < 1e-4
    assert "| 256 |" in (tmp_path / "p.md").read_text()
