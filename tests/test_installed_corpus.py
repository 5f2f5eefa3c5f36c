"""data.source=installed_code (windtunnel/data/installed.py): exact duplicates kept once, the held-out split drawn
per package with vendored copies on their package's side, held-out groups filling eval_frac of the bytes, and the
held-out long-line overlap in the corpus's metadata. The machine's real roots are replaced by a small tree."""
import hashlib

import numpy as np
import pytest

from windtunnel.compose import compose
from windtunnel.data import installed, prepare
from windtunnel.data.cache import LONG_LINE, _long_line_hashes, _shared_share
from windtunnel.data.sources import held_out


@pytest.mark.parametrize("key, want", [
    ("stdlib/json/decoder.py", "json"),
    ("stdlib/os.py", "os"),
    ("site/requests/api.py", "requests"),
    ("site/pip/_vendor/requests/api.py", "requests"),            # a vendored copy goes with its package
    ("site/setuptools/_vendor/packaging/version.py", "packaging"),
    ("site/torch/include/pybind11/cast.h", "pybind11"),          # a package's bundled headers: the headers' package
    ("include/pybind11/cast.h", "pybind11"),
    ("include/stdio.h", "stdio"),
    ("site/_pytest/main.py", "pytest"),
    ("site/torch/nn/modules/linear.py", "torch"),
])
def test_a_file_s_group_is_its_package(key, want):
    assert installed.group(key) == want


def _tree(tmp_path, monkeypatch):
    """Two roots: 'site' (packages a..f, a vendored copy of b inside a, a duplicate, a too-large file, a binary file)
    and 'include' (headers)."""
    site, inc = tmp_path / "site", tmp_path / "inc"
    line = "x = compute_something_long(argument_one, argument_two)  # a long line\n"
    files = {
        site / "a" / "core.py": "import os\n" + line * 3 + "def f():\n    return 1\n" * 40,
        site / "a" / "_vendor" / "b" / "copy.py": "VENDORED = True\n" + "y = 2\n" * 50,
        site / "b" / "main.py": "MAIN = 1\n" + "z = 3  # b's own text, long enough to count as a long line\n" * 20,
        site / "c" / "util.py": "def g():\n    pass\n" * 50,
        site / "c" / "dup.py": "def g():\n    pass\n" * 50,   # same bytes as util.py: kept once
        site / "d" / "mod.py": line * 20 + "w = 4\n" * 30,
        site / "e" / "docs.md": "# e\n" + "Some documentation text for e.\n" * 40,
        site / "f" / "big.py": "q = 1\n" * 400,
        inc / "lib" / "api.h": "int api(void);\n" * 80,
        inc / "other.h": "#define OTHER 1\n" * 60,
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (site / "a" / "blob.py").write_bytes(b"\xff\xfe" + b"\x00" * 100)  # binary: left out
    (site / "a" / "skip.pyc").write_bytes(b"compiled")                # not a corpus suffix
    monkeypatch.setattr(installed, "roots", lambda: [("site", site, False), ("include", inc, False)])
    monkeypatch.setattr(installed, "MAX_FILE_BYTES", 2000)  # f/big.py (2,400 bytes) is too large
    installed._HELD_OUT.clear()
    return files


def test_listing_drops_duplicates_binaries_and_large_files_and_is_cached(tmp_path, monkeypatch):
    _tree(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    keys = [k for k, _ in installed.files(cache)]
    assert keys == ["include/lib/api.h", "include/other.h", "site/a/_vendor/b/copy.py", "site/a/core.py",
                    "site/b/main.py", "site/c/dup.py", "site/d/mod.py", "site/e/docs.md"]  # c/util.py: dup.py's copy
    assert len(list(cache.glob("installed_code-*.json"))) == 1
    (tmp_path / "site" / "c" / "util.py").unlink()  # the listing changed: a new signature, dup.py still kept
    assert [k for k, _ in installed.files(cache)] == keys
    assert len(list(cache.glob("installed_code-*.json"))) == 2


def test_held_out_groups_fill_eval_frac_of_the_bytes_and_skip_giant_groups(tmp_path, monkeypatch):
    _tree(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    sizes = {}
    for key, path in installed.files(cache):
        sizes[installed.group(key)] = sizes.get(installed.group(key), 0) + path.stat().st_size
    total = sum(sizes.values())
    monkeypatch.setattr(installed, "MAX_HELD_OUT_GROUP", 0.3)
    for frac in (0.1, 0.3, 0.5):
        chosen = installed.held_out_groups(cache, frac)
        held = sum(sizes[g] for g in chosen)
        order = sorted(sizes, key=lambda g: hashlib.sha1(f"group:{g}".encode()).digest())
        # walked in hash order: every group before the last one taken is either taken or over the cap
        last = max(order.index(g) for g in chosen)
        assert all(g in chosen or sizes[g] > 0.3 * total for g in order[:last + 1])
        eligible = {g for g in sizes if sizes[g] <= 0.3 * total}
        if sum(sizes[g] for g in eligible) >= frac * total:
            assert held - max(sizes[g] for g in chosen) < frac * total <= held
        else:  # not enough small groups: all of them
            assert chosen == eligible
        assert all(sizes[g] <= 0.3 * total for g in chosen)


def test_vendored_copy_sits_on_its_package_s_side(tmp_path, monkeypatch):
    _tree(tmp_path, monkeypatch)
    cfg = compose(["data.source=installed_code", "data.tokenizer=bytes", f"data.cache_dir={tmp_path / 'cache'}",
                   "data.eval_frac=0.5"]).data
    monkeypatch.setattr(installed, "MAX_HELD_OUT_GROUP", 1.0)
    sides = {key: held_out(cfg, key) for key, _ in installed.files(tmp_path / "cache")}
    assert sides["site/a/_vendor/b/copy.py"] == sides["site/b/main.py"]
    assert 0 < sum(sides.values()) < len(sides)  # both splits hold something at eval_frac 0.5


def test_long_line_overlap_is_the_share_of_held_out_long_lines_seen_in_train():
    long_a, long_b, long_c = (f"{c * LONG_LINE}".encode() for c in "abc")
    train = [_long_line_hashes(b"short\n" + long_a + b"\n  " + long_b + b"  \n")]
    val = [_long_line_hashes(long_a + b"\n" + long_c + b"\n" + long_c + b"\nshort\n" + long_b[:-1] + b"\n")]
    # held-out long lines: a (in train), c twice (not), b minus a byte (39 bytes: not long) -> 1 of 3
    assert _shared_share({"train": train, "val": val}) == pytest.approx(1 / 3)
    assert _shared_share({"train": train, "val": [np.zeros(0, np.int64)]}) == 0.0


def test_prepare_records_the_overlap_and_splits_by_package(tmp_path, monkeypatch):
    _tree(tmp_path, monkeypatch)
    monkeypatch.setattr(installed, "MAX_HELD_OUT_GROUP", 1.0)
    cfg = compose(["data.source=installed_code", "data.tokenizer=bytes", f"data.cache_dir={tmp_path / 'cache'}",
                   "data.eval_frac=0.3"]).data
    corpus = prepare(cfg)
    files = dict(installed.files(tmp_path / "cache"))
    val_keys = [k for k in files if held_out(cfg, k)]
    # byte tokenizer: one token per byte plus one separator per document
    assert corpus.meta["val_tokens"] == sum(files[k].stat().st_size + 1 for k in val_keys)
    assert corpus.meta["val_docs"] == len(val_keys) and corpus.meta["files"] == len(files)
    val_lines = [ln.strip() for k in val_keys for ln in files[k].read_bytes().split(b"\n") if len(ln.strip()) >= LONG_LINE]
    train_lines = {ln.strip() for k in files if k not in val_keys for ln in files[k].read_bytes().split(b"\n")}
    want = sum(ln in train_lines for ln in val_lines) / len(val_lines) if val_lines else 0.0
    assert corpus.meta["val_long_lines_in_train"] == pytest.approx(want)


def test_the_corpus_record_quotes_its_measurement():
    """sweeps/corpus/README.md's table and the README's budget row are corpus_h200.json's numbers."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    record = json.loads((root / "sweeps/corpus/corpus_h200.json").read_text())
    mine, theirs = record["installed_code_bpe"], record["stdlib_site_bpe"]
    text = (root / "sweeps/corpus/README.md").read_text()
    row = f"| `installed_code_bpe` | {mine['files']:,} | {(mine['train_bytes'] + mine['val_bytes']) / 1e6:.0f} MB | " \
          f"**{mine['train_tokens'] / 1e6:.1f}M** | **{mine['val_tokens'] / 1e6:.1f}M** | " \
          f"**{100 * mine['val_long_lines_in_train']:.1f}%** | {mine['prepare_s']:.1f} s + " \
          f"{record['list_and_dedupe_s']:.1f} s listing |"
    assert row in text
    assert f"| {theirs['train_tokens'] / 1e6:.1f}M | {theirs['val_tokens'] / 1e6:.2f}M | " \
           f"{100 * theirs['val_long_lines_in_train']:.1f}% | {theirs['prepare_s']:.1f} s |" in text
    assert f"{record['val_groups']} of {record['groups']} groups held out" in text
    assert mine["prepare_s"] + record["list_and_dedupe_s"] < 120  # the bound on 16 cores
    budget_row = f"| `installed_code_bpe` (BPE 8192), GPU machine | {mine['train_tokens'] / 1e6:.1f}M |"
    assert budget_row in (root / "README.md").read_text()
