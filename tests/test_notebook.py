"""The notebook runs top to bottom on the committed records, and prints what the library computes."""
import json
import re
from pathlib import Path

import pytest

from windtunnel import fit, load_runs

pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "windtunnel.ipynb"


def test_the_committed_notebook_is_executed_and_shows_what_the_library_computes():
    """Committed with its outputs (a code host shows the figures): every code cell ran, in order, without an error;
    its 4 figures are there; the numbers it printed are what the library computes from the committed records
    (batch_size, lr_transfer: its defaults)."""
    doc = json.loads(NOTEBOOK.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
    text = "".join("".join(o["text"]) for o in outputs if o["output_type"] == "stream")
    fits, _ = fit(load_runs(ROOT / "sweeps" / "batch_size"), ["batch_size"], n_boot=20)
    assert float(re.search(r"^b = (\S+)", text, re.M).group(1)) == pytest.approx(fits["batch_size"].params["b"], rel=1e-5)
    lr, _ = fit(load_runs(ROOT / "sweeps" / "lr_transfer"), ["lr"], n_boot=20)
    printed = float(re.search(r"'lr_star': ([\d.e-]+)", text).group(1))
    assert printed == pytest.approx(lr["lr"].params["lr_star"], rel=1e-9)
    verdicts = {p: v["verdict"] for p, v in lr["lr"].details["transfer"].items()}
    assert f"{lr['lr'].form} {lr['lr'].params} {verdicts}" in text and "# Prediction for w768" in text


# (batch-size record, LR record): the notebook reads each committed pair
PAIRS = [("batch_size", "lr_transfer"), ("prediction_check/batch_size", "prediction_check/lr")]


@pytest.mark.parametrize("record,lr_record", PAIRS, ids=[p[0] for p in PAIRS])
def test_notebook_executes_and_prints_the_librarys_exponent(monkeypatch, record, lr_record):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("WINDTUNNEL_BOOT", "50")
    monkeypatch.setenv("WINDTUNNEL_RECORD", str(ROOT / "sweeps" / record))
    monkeypatch.setenv("WINDTUNNEL_LR_RECORD", str(ROOT / "sweeps" / lr_record))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("output_type") == "stream")
    printed = float(re.search(r"^b = (\S+)", text, re.M).group(1))
    want = fit(load_runs(ROOT / "sweeps" / record), ["batch_size"], n_boot=50)[0]["batch_size"]
    assert printed == pytest.approx(want.params["b"], rel=1e-5)
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert figures == 4  # loss curves, iso-loss curves, batch-size law, LR U-curves
    lr = fit(load_runs(ROOT / "sweeps" / lr_record), ["lr"], n_boot=50)[0]["lr"]
    verdicts = {p: v["verdict"] for p, v in lr.details["transfer"].items()}
    assert str(verdicts) in text and "Prediction for w768" in text


# every committed record's run table, as the notebook (and fit, report) load it: runs and statuses per its README
RECORD_RUNS = {"batch_size": {"completed": 18}, "lr_transfer": {"completed": 159, "diverged": 1},
               "lr_transfer_8l": {"completed": 264},
               "batch_size_8l/lr0.0039": {"completed": 35}, "batch_size_8l/lr0.01": {"completed": 35},
               "batch_size_8l/lr0.0039_64Mtok": {"completed": 29}, "loss_law_8l": {"completed": 15},
               "prediction_check/batch_size": {"completed": 12}, "prediction_check/lr": {"completed": 24},
               "prediction_check/target": {"completed": 5}, "prediction_8l": {"completed": 19}, "wsd_vs_cosine": {"completed": 4},
               "wsd_vs_cosine/lr0.004": {"completed": 4}, "wsd_data_model": {"completed": 24},
               "batch_size/lr0.004": {"completed": 18}, "batch_size/warmup20": {"completed": 18},
               "lr_search/grid": {"completed": 70}, "lr_search/tpe_seed0": {"completed": 44, "pruned": 9},
               "lr_search/tpe_seed1": {"completed": 64, "pruned": 4}, "lr_search/tpe_seed2": {"completed": 44, "pruned": 9},
               "lr_search/tpe_startup4": {"completed": 36, "pruned": 11},
               "prediction_check/seeds/target": {"completed": 20},
               "prediction_check/seeds/resolution_sample": {"completed": 4},
               "prediction_check/seeds/resolution_head": {"completed": 4},
               **{f"resolution/{name}": {"completed": 4} for name in
                  ("batch_size", "lr_search", "lr_transfer", "wsd_data_model", "wsd_vs_cosine")}}


def test_every_committed_record_loads_with_its_runs_and_statuses():
    found = sorted(str(p.parent.relative_to(ROOT / "sweeps")) for p in (ROOT / "sweeps").glob("**/runs.csv.gz"))
    assert found == sorted(RECORD_RUNS)
    for name, statuses in RECORD_RUNS.items():
        tables = load_runs(ROOT / "sweeps" / name)
        assert tables.runs["status"].value_counts().to_dict() == statuses, name
        ran = tables.runs[tables.runs["status"].isin(["completed", "diverged"])]  # an interrupted run has no epochs
        assert (ran["epochs"] <= 1).all(), name  # every trial within one epoch of its corpus
