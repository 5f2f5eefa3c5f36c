"""The layer rules of DEVELOPERS.md, read from the imports of every module."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = [["cli"], ["sweep", "launch", "plot"], ["train", "predict"], ["model", "data", "runs", "fit"],
          ["schedule", "sizing", "laws"], ["config"]]
LEVEL = {name: len(LAYERS) - i for i, row in enumerate(LAYERS) for name in row}
ONLY = {"torch": {"model", "data", "train"}, "scipy": {"fit"}, "matplotlib": {"plot"},
        "hydra": {"sweep"}, "omegaconf": {"sweep"}}


def imports(path: pathlib.Path, depth: int = 0) -> list[str]:
    """Imported module names; relative imports resolved against windtunnel (depth = package nesting)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.level <= depth:  # inside our own package (from .core import ...)
                continue
            if node.level:
                names += [f"windtunnel.{node.module}"] if node.module else [f"windtunnel.{a.name}" for a in node.names]
            else:
                names.append(node.module or "")
    return names


def violations() -> list[str]:
    bad = []
    pkg = ROOT / "windtunnel"
    for path in sorted(pkg.rglob("*.py")):
        mod = path.relative_to(pkg).parts[0].removesuffix(".py")  # a package (train/) is one module
        if mod not in LEVEL:
            if mod not in ("__init__", "conf"):
                bad.append(f"{mod}: module not placed in a layer")
            continue
        for name in imports(path, depth=len(path.relative_to(pkg).parts) - 1):
            top, *rest = name.split(".")
            if top in ONLY and mod not in ONLY[top]:
                bad.append(f"{mod} imports {top}")
            if top == "windtunnel" and rest and rest[0] != "__version__":
                dep = rest[0]
                if dep in LEVEL and dep != mod and LEVEL[dep] >= LEVEL[mod]:
                    bad.append(f"{mod} (layer {LEVEL[mod]}) imports {dep} (layer {LEVEL[dep]})")
    return bad


def test_layer_rules_hold():
    assert violations() == []


def test_the_check_catches_a_violation(tmp_path, monkeypatch):
    fake = tmp_path / "windtunnel"
    fake.mkdir()
    (fake / "config.py").write_text("import torch\nfrom .model import Transformer\n")
    (fake / "fit.py").write_text("import scipy\nfrom . import laws\n")
    (fake / "train").mkdir()
    (fake / "train" / "loop.py").write_text("from ..sweep import app\nfrom .core import x\nimport matplotlib\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations() == ["config imports torch", "config (layer 1) imports model (layer 3)",
                            "train (layer 4) imports sweep (layer 5)", "train imports matplotlib"]


def test_shared_layer_tool_agrees():
    tool = ROOT.parent / "shared" / "tools" / "layers.py"
    if not tool.exists():
        pytest.skip("../shared/tools/layers.py is not beside this checkout")
    out = subprocess.run([sys.executable, str(tool)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert "0 layer violations" in out.stdout
