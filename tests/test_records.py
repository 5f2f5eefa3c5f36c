"""Each committed wind-tunnel record (sweeps/<name>/) reproduces its committed fits from its committed runs."""
import json
import pathlib
import subprocess
import sys

import pytest

SWEEPS = pathlib.Path(__file__).resolve().parents[1] / "sweeps"
RECORDS = sorted(p.parent for p in SWEEPS.glob("*/fits.json"))


@pytest.mark.parametrize("record", RECORDS, ids=[p.name for p in RECORDS])
def test_fit_of_the_committed_runs_reproduces_the_committed_fits(record, tmp_path):
    committed = json.loads((record / "fits.json").read_text())
    laws = list(committed["fits"])
    assert laws, f"{record}/fits.json holds no fit"
    for law in laws:
        out = tmp_path / f"{law}.json"
        done = subprocess.run([sys.executable, "-m", "windtunnel.cli", "fit", str(record), "--law",
                               law.replace("_", "-"), "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        fresh = json.loads(out.read_text())["fits"][law]
        want = committed["fits"][law]
        for name, p in want["parameters"].items():
            assert fresh["parameters"][name]["value"] == pytest.approx(p["value"], rel=1e-9), name
            assert fresh["parameters"][name]["interval"] == pytest.approx(p["interval"], rel=1e-9), name
        assert fresh["details"].get("optima") == want["details"].get("optima")


def test_the_lr_transfer_record_shows_mup_transfer_and_sp_drift():
    """What the record's README says, read from its fits: muP's optimum moves < 1 grid step over 8x width, SP's
    more than 1; every cell's optimum lies inside its interval and inside the LR grid."""
    fits = json.loads((SWEEPS / "lr_transfer" / "fits.json").read_text())["fits"]["lr"]
    transfer = fits["details"]["transfer"]
    assert max(abs(s) for s in transfer["mup"]["shift_in_grid_steps"]) < 1 and not transfer["mup"]["moves"]
    assert transfer["sp"]["moves"] and transfer["sp"]["shift_in_grid_steps"][-1] < -1
    for cell in fits["details"]["optima"]:
        assert cell["interval"][0] <= cell["lr_star"] <= cell["interval"][1] and not cell["edge"]


def test_the_batch_size_record_shows_the_optimum_growing_as_the_loss_falls():
    """The README's answer, read from the record's fits: at each fully swept size the optimal batch grows as the
    loss level falls (by more than 4x over the levels), and the law's b is positive, identified, and below
    MiniCPM's 6.24 (the README's comparison of slopes)."""
    fits = json.loads((SWEEPS / "batch_size" / "fits.json").read_text())["fits"]["batch_size"]
    rows = [r for r in fits["details"]["optima"] if r["bs_opt"] and not r["flag"]]
    for n in sorted({r["N"] for r in rows})[:2]:  # widths 128 and 256: all six batch sizes
        mine = sorted((r for r in rows if r["N"] == n), key=lambda r: r["loss"])
        assert mine[0]["bs_opt"] > 4 * mine[-1]["bs_opt"], mine
    low, high = fits["parameters"]["b"]["interval"]
    assert 0 < low < fits["parameters"]["b"]["value"] < high < 6.24


def test_runs_reads_a_record_as_its_run_dirs():
    done = subprocess.run([sys.executable, "-m", "windtunnel.cli", "runs", str(SWEEPS / "batch_size"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    statuses = sorted(r["status"] for r in json.loads(done.stdout))
    assert statuses == ["completed"] * 16 + ["interrupted"]  # the README: 16 of 18 runs, one stopped by the budget
