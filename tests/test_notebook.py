"""The notebook runs top to bottom on the committed records, and prints what the library computes."""
import json
import re
from pathlib import Path

import pytest

from windtunnel.sweep.tables import fit_laws, load_tables

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "windtunnel.ipynb"


def test_the_committed_notebook_has_no_outputs():
    doc = json.loads(NOTEBOOK.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c.get("execution_count") is None for c in code)


def test_notebook_executes_and_prints_the_librarys_exponent(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("WINDTUNNEL_BOOT", "50")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("output_type") == "stream")
    printed = float(re.search(r"^b = (\S+)", text, re.M).group(1))
    want = fit_laws(load_tables(ROOT / "sweeps" / "batch_size"), ["batch_size"], n_boot=50)[0]["batch_size"]
    assert printed == pytest.approx(want.params["b"], rel=1e-5)
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert figures == 4  # loss curves, iso-loss curves, batch-size law, LR U-curves
    assert "optimum transfers across width" in text and "Prediction for w768" in text
