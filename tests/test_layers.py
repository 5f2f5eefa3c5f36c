"""The layer rules of DEVELOPERS.md, read from the imports of every module; the plugins lean on the core,
never the reverse; no circles inside a package; no private Hydra/Optuna APIs; --help never imports torch."""
import ast
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = [["__main__"], ["cli"], ["demo", "report"], ["sweep", "launch", "plot", "resolution"], ["train", "predict", "tables"],
          ["model", "data", "runs", "fit", "compose"], ["schedule", "sizing", "laws"], ["config"]]
LEVEL = {name: len(LAYERS) - i for i, row in enumerate(LAYERS) for name in row}
ONLY = {"torch": {"model", "data", "train"}, "scipy": {"fit"}, "matplotlib": {"plot"},
        "hydra": {"sweep", "compose"}, "omegaconf": {"sweep", "compose"}}
# what the Hydra plugins may use of windtunnel: the glue made for them, and the config dataclasses
PLUGIN_MAY_IMPORT = {"windtunnel.sweep.grid", "windtunnel.sweep.study", "windtunnel.config"}
PRIVATE_ATTRIBUTES = {"_storage", "_study_id", "_trial_id", "_return_value"}


def imports(path: pathlib.Path, package: str) -> list[str]:
    """Absolute names of every module imported anywhere in the file (function-level imports too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
                names += [prefix] if node.module else [f"{prefix}.{a.name}" for a in node.names]
            else:
                names.append(node.module or "")
    return names


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: pathlib.Path, root: pathlib.Path) -> str:
    name = module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def violations(root: pathlib.Path = None) -> list[str]:
    root = root or ROOT
    bad = []
    pkg = root / "windtunnel"
    for path in sorted(pkg.rglob("*.py")):
        mod = path.relative_to(pkg).parts[0].removesuffix(".py")  # a package (train/) is one module
        if mod not in LEVEL:
            if mod != "__init__":
                bad.append(f"{mod}: module not placed in a layer")
            continue
        for name in imports(path, package_of(path, root)):
            top, *rest = name.split(".")
            if top in ONLY and mod not in ONLY[top]:
                bad.append(f"{mod} imports {top}")
            if top == "hydra_plugins":
                bad.append(f"{mod} imports hydra_plugins (the plugins import the core, not the reverse)")
            if top == "windtunnel" and rest and rest[0] != "__version__":
                dep = rest[0]
                if dep in LEVEL and dep != mod and LEVEL[dep] >= LEVEL[mod]:
                    bad.append(f"{mod} (layer {LEVEL[mod]}) imports {dep} (layer {LEVEL[dep]})")
    for path in sorted((root / "hydra_plugins").rglob("*.py")):
        for name in imports(path, package_of(path, root)):
            if name.startswith("windtunnel") and name not in PLUGIN_MAY_IMPORT:
                bad.append(f"{module_name(path, root)} imports {name}; plugins use only {sorted(PLUGIN_MAY_IMPORT)}")
            if name.split(".")[0] == "torch":
                bad.append(f"{module_name(path, root)} imports torch")
    return bad + circles(root) + private_apis(root)


def circles(root: pathlib.Path) -> list[str]:
    """Import cycles between the modules of one package (train/, fit/, sweep/), function-level imports too."""
    graph = {}
    for path in sorted((root / "windtunnel").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        name, package = module_name(path, root), package_of(path, root)
        graph[name] = {n for n in imports(path, package) if n.rpartition(".")[0] == package and n != name}
        graph[name] |= {f"{package}.{n.rpartition('.')[2]}" for n in imports(path, package)
                        if n == package}  # from . import x
    found = []

    def visit(node, stack):
        for dep in sorted(graph.get(node, ())):
            if dep in stack:
                loop = stack[stack.index(dep):]
                at = loop.index(min(loop))  # one name per circle, whichever module the walk started from
                text = " -> ".join(loop[at:] + loop[:at] + [loop[at]])
                if text not in found:
                    found.append(text)
            elif dep in graph:
                visit(dep, stack + [dep])
    for node in graph:
        visit(node, [node])
    return [f"import circle: {c}" for c in found]


def private_apis(root: pathlib.Path) -> list[str]:
    bad = []
    for path in sorted(list((root / "windtunnel").rglob("*.py")) + list((root / "hydra_plugins").rglob("*.py"))):
        tree = ast.parse(path.read_text())
        for name in imports(path, package_of(path, root)):
            if name.startswith(("hydra._internal", "optuna._")):
                bad.append(f"{module_name(path, root)} imports the private {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
                bad.append(f"{module_name(path, root)} uses the private attribute .{node.attr}")
    return bad


def test_layer_rules_hold():
    assert violations() == []


def test_the_check_catches_a_violation(tmp_path):
    fake = tmp_path / "windtunnel"
    (fake / "train").mkdir(parents=True)
    (fake / "config.py").write_text("import torch\nfrom .model import Transformer\n")
    (fake / "fit.py").write_text("import scipy\nfrom . import laws\n")
    (fake / "train" / "loop.py").write_text("from ..sweep import app\nfrom .core import x\nimport matplotlib\n")
    (fake / "train" / "core.py").write_text("def f():\n    from .loop import train\n")
    (fake / "runs.py").write_text("from hydra_plugins.x import y\nfrom hydra._internal.utils import z\n")
    (tmp_path / "hydra_plugins" / "p").mkdir(parents=True)
    (tmp_path / "hydra_plugins" / "p" / "s.py").write_text("from windtunnel.train import run_trial\n"
                                                           "x = study._storage\n")
    assert violations(tmp_path) == [
        "config imports torch", "config (layer 1) imports model (layer 3)",
        "runs imports hydra_plugins (the plugins import the core, not the reverse)", "runs imports hydra",
        "train (layer 4) imports sweep (layer 5)", "train imports matplotlib",
        "hydra_plugins.p.s imports windtunnel.train; plugins use only "
        "['windtunnel.config', 'windtunnel.sweep.grid', 'windtunnel.sweep.study']",
        "import circle: windtunnel.train.core -> windtunnel.train.loop -> windtunnel.train.core",
        "hydra_plugins.p.s uses the private attribute ._storage",
        "windtunnel.runs imports the private hydra._internal.utils"]


def test_shared_layer_tool_agrees():
    tool = ROOT.parent / "shared" / "tools" / "layers.py"
    if not tool.exists():
        pytest.skip("../shared/tools/layers.py is not beside this checkout")
    out = subprocess.run([sys.executable, str(tool)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert "0 layer violations" in out.stdout


@pytest.mark.parametrize("command", ["train", "runs", "fit", "predict", "launch", "sweep"])
def test_help_does_not_import_torch(command):
    code = ("import sys, time; t = time.time()\nfrom windtunnel.cli import main\ntry:\n    main([%r, '--help'])\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH', time.time() - t)") % command
    times = []
    for _ in range(3):  # the fastest of three, so a busy machine does not decide it
        start = time.time()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        verdict, seconds = out.stdout.split()[-2:]
        assert verdict == "NO-TORCH" and "usage: windtunnel" in out.stdout + out.stderr
        times.append((float(seconds), time.time() - start))
    seconds, wall = min(times)
    print(f"windtunnel {command} --help: {seconds:.2f} s in-process, {wall:.2f} s with interpreter start")
    assert seconds < 1.0
