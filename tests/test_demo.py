"""`windtunnel demo --tiny`: the whole story in seconds; its regret table is what its runs say, its report embeds
every figure, and a second call trains nothing."""
import json
import re

import pytest

from conftest import cli, shared


pytestmark = pytest.mark.slow  # every test here starts processes or trains several models


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`windtunnel demo --tiny` once for the session: (its OUT folder, what it printed)."""
    def build(path):
        done = cli("-q", "demo", "--tiny", "--out", str(path / "runs"), "--boot", "50")
        assert done.returncode == 0, done.stderr[-3000:]
        (path / "stdout.txt").write_text(done.stdout)
    path = shared(tmp_path_factory, "demo", build)
    return path / "runs", (path / "stdout.txt").read_text()


def test_regret_table_is_the_target_runs_losses(demo):
    out, stdout = demo
    doc = json.loads((out / "demo.json").read_text())
    rows = {r["point"]: r for r in doc["regret"]}
    assert list(rows) == ["predicted", "lr x2", "lr /2", "batch x2", "batch /2"]
    pred = rows["predicted"]
    assert rows["lr x2"]["lr"] == pytest.approx(2 * pred["lr"]) and rows["lr /2"]["lr"] == pytest.approx(pred["lr"] / 2)
    assert rows["batch x2"]["batch_size_tokens"] == 2 * pred["batch_size_tokens"]
    losses = {}
    for name, r in rows.items():  # each seed's loss is its run dir's own final held-out loss; the row is their mean
        found = sorted((out / "target").glob(f"*-lr{r['lr']:.6g}-bs{r['batch_size_tokens']}-s*/result.json"))
        results = [json.loads(f.read_text()) for f in found]
        assert len(results) == 2 and all(x["status"] == "completed" for x in results)
        losses[name] = [x["final_eval_loss"] for x in results]
        assert r["losses"] == losses[name] and r["final_eval_loss"] == pytest.approx(sum(losses[name]) / 2)
    for name, r in rows.items():  # the paired difference from the predicted point, seed by seed
        if name == "predicted":
            continue
        d = [a - b for a, b in zip(losses[name], losses["predicted"])]
        assert r["difference"]["mean"] == pytest.approx(sum(d) / 2)
        half = 12.706 * abs(d[0] - d[1]) / 2 ** 0.5 / 2 ** 0.5  # t(0.975, 1) x sd / sqrt(2)
        assert r["difference"]["interval"] == pytest.approx([sum(d) / 2 - half, sum(d) / 2 + half], rel=1e-3)
        assert r["difference"]["verdict"] == ("better" if sum(d) / 2 + half < 0 else "worse" if sum(d) / 2 - half > 0
                                              else "tied within noise")
    best = min(r["final_eval_loss"] for r in rows.values())
    assert doc["prediction_regret"] == pytest.approx(pred["final_eval_loss"] - best) and doc["prediction_regret"] >= 0
    assert re.search(r"Regret of the prediction: [+-]\d", stdout) and "| predicted |" in stdout
    assert "beyond the seed noise" in doc["verdict"] and doc["verdict"] in stdout
    # the predicted point comes from the fitted LR law (muP: one constant across widths)
    assert "lr" in doc["fits"] and pred["lr"] == pytest.approx(doc["fits"]["lr"]["parameters"]["lr_star"]["value"])


def test_report_embeds_every_figure(demo):
    out, _ = demo
    doc = json.loads((out / "demo.json").read_text())
    html = (out / "report.html").read_text()
    expected = 1 + 2 * ("batch_size" in doc["fits"]) + ("lr" in doc["fits"]) + 1  # curves, batch law x2, LR, target
    assert html.count('<img alt="') == expected == html.count("data:image/png;base64,")
    # the regret table is an HTML table, one row per point with its verdict, not Markdown pipes
    assert "<h2>Regret table" in html and "| predicted |" not in html
    for r in doc["regret"]:
        verdict = r.get("difference", {}).get("verdict", "")
        assert f"<td>{r['point']}</td>" in html and (not verdict or f"<td>{verdict}</td>" in html)
    assert f"Demo in {doc['demo_seconds']:.0f} s" in html


def test_a_second_call_skips_finished_trials(demo):
    out, _ = demo
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert len(stamps) == 12 + 12 + 10  # 3 widths x 4 batches, 2 widths x 2 parametrizations x 3 LRs, 5 targets x 2 seeds
    first = json.loads((out / "demo.json").read_text())["demo_seconds"]
    done = cli("-q", "demo", "--tiny", "--out", str(out), "--boot", "50")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == stamps
    # the headline keeps the demo's real time, and says this call's
    again = json.loads((out / "demo.json").read_text())
    assert again["demo_seconds"] == first > again["seconds"]
    assert re.search(rf"Demo in {first:.0f} s \(this call \d+ s: the runs of an earlier call were kept\)", done.stdout)


def test_the_demo_is_reproducible_run_to_run_on_one_machine(demo, tmp_path):
    """A second demo from scratch into another folder: every run's final loss, the fits and the regret table are the
    same to the bit (one thread per tiny trial, seeded data order and init). Across machines and torch builds they are
    not: README "What the demo does" states by how much (measured)."""
    out, printed = demo
    done = cli("-q", "demo", "--tiny", "--out", str(tmp_path / "again"), "--boot", "50")
    assert done.returncode == 0, done.stderr[-3000:]
    first, again = (json.loads((p / "demo.json").read_text()) for p in (out, tmp_path / "again"))
    assert again["regret"] == first["regret"] and again["prediction"] == first["prediction"]
    assert {k: v["parameters"] for k, v in again["fits"].items()} == {k: v["parameters"] for k, v in first["fits"].items()}
    finals = {p: {str(r.parent.relative_to(p)): json.loads(r.read_text())["final_eval_loss"] for r in p.rglob("result.json")}
              for p in (out, tmp_path / "again")}
    assert len(finals[out]) == 34 and finals[out] == finals[tmp_path / "again"]
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert table and all(line in done.stdout for line in table)  # what it prints, line for line
