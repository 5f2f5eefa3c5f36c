"""data.source=installed_code: the source code and docs installed on this machine, as one corpus. The GPU wind tunnel's
corpus at the card's sizes: the interpreter's standard library and site-packages (Python, and the C/C++ sources,
headers and docs that packages ship), the system's C/C++ headers, and its docs, HTML and JS.

What makes it a fair held-out set:
- exact duplicates are removed (a vendored or copied file kept once: the first in sorted key order);
- the split is decided per *group*, the package or top-level folder a file belongs to, not per file, so one
  package never sits on both sides; a vendored copy (a path under _vendor/, vendor/, vendored/, third_party/,
  externals/) belongs to the group of the package it copies, so pip's vendored requests goes where requests goes;
- the held-out groups are drawn in a fixed hashed order until they hold data.eval_frac of the corpus's bytes,
  passing over groups larger than MAX_HELD_OUT_GROUP of it (boost's headers are 19% of the corpus on the lent H200:
  held out, one package would be most of the held-out set; a per-group coin would give 1.6% instead of 5%);
- files over MAX_FILE_BYTES (generated tables, amalgamations, minified bundles) and non-UTF-8 files are left out.
cache.py reports in the corpus's meta.json the share of held-out long lines that also occur in train.
"""
import hashlib
import json
import os
import site
import sysconfig
from pathlib import Path

from .text import is_text

PYTHON = (".py", ".pyi")
C_CPP = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".cu", ".cuh", ".inl")
DOCS = (".md", ".rst", ".txt", ".html", ".htm", ".js")
SUFFIXES = PYTHON + C_CPP + DOCS
MAX_FILE_BYTES = 2 ** 20
MAX_HELD_OUT_GROUP = 0.01  # of the corpus's bytes: larger groups always train
# the system's own folders of headers and docs (those that exist are read), beside the interpreter's
SYSTEM_ROOTS = {"include": "/usr/include", "local-include": "/usr/local/include", "cuda-include": "/usr/local/cuda/include",
                "doc": "/usr/share/doc"}
VENDOR_DIRS = {"_vendor", "vendor", "vendored", "third_party", "thirdparty", "externals", "extern"}


def roots() -> list[tuple[str, Path, bool]]:
    """(key prefix, folder, skip installed packages) of every root, in a fixed order."""
    out = [("stdlib", Path(sysconfig.get_paths()["stdlib"]), True)]
    out += [(f"site{i}" if i else "site", Path(p), False) for i, p in enumerate(sorted(set(site.getsitepackages())))]
    out += [(name, Path(path), False) for name, path in SYSTEM_ROOTS.items()]
    return [(prefix, folder, skip) for prefix, folder, skip in out if folder.is_dir()]


def _walk(prefix: str, root: Path, skip_site: bool) -> list[tuple[str, Path, int, int]]:
    """(key, path, size, mtime in ns) of every corpus file under root."""
    found = []
    for folder, subfolders, names in os.walk(root):  # symlinks not followed: a linked tree is read once
        here = os.path.relpath(folder, root)
        rel = "" if here == "." else here.replace(os.sep, "/") + "/"
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and not d == "__pycache__" and
                               not (skip_site and d in ("site-packages", "dist-packages")))
        for name in names:
            if name.endswith(SUFFIXES):
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:
                    continue
                if 0 < stat.st_size <= MAX_FILE_BYTES and path.is_file():
                    found.append((f"{prefix}/{rel}{name}", path, stat.st_size, stat.st_mtime_ns))
    return found


def group(key: str) -> str:
    """The package or top-level folder a file belongs to (what the held-out split is drawn over): the first folder
    below its root (a top-level file is its own group, named without its suffix); inside a vendored copy or a
    package's bundled headers (a folder named in VENDOR_DIRS, or include/), the copied package's name. Roots do not
    enter the name, so torch's bundled pybind11 headers and /usr/include/pybind11 are one group."""
    rest = key.split("/")[1:]
    for i, part in enumerate(rest[:-1]):
        if (part in VENDOR_DIRS or part == "include") and i + 2 < len(rest):  # a folder, not a file, follows
            rest = rest[i + 1:]
            break
    head = rest[0] if len(rest) > 1 else rest[0].split(".")[0]
    if head.endswith((".dist-info", ".egg-info")):  # "foo-1.2.dist-info" belongs to "foo"
        head = head.split("-")[0]
    return head.removesuffix(".libs").lstrip("_").lower() or "_"


_HELD_OUT: dict = {}  # (cache folder, eval_frac) -> the held-out groups, once per process


def is_held_out(key: str, cache: Path, eval_frac: float) -> bool:
    memo = (str(cache), eval_frac)
    if memo not in _HELD_OUT:
        _HELD_OUT[memo] = held_out_groups(cache, eval_frac)
    return group(key) in _HELD_OUT[memo]


def held_out_groups(cache: Path, eval_frac: float) -> frozenset:
    """The groups of the held-out split: in the order of a hash of their names (fixed, and unrelated to size or
    name), each group not larger than MAX_HELD_OUT_GROUP of the bytes is taken until eval_frac of the bytes are."""
    sizes: dict = {}
    for key, path in files(cache):
        sizes[group(key)] = sizes.get(group(key), 0) + path.stat().st_size
    total, taken, chosen = sum(sizes.values()), 0, set()
    for name in sorted(sizes, key=lambda g: hashlib.sha1(f"group:{g}".encode()).digest()):
        if taken >= eval_frac * total:
            break
        if sizes[name] <= MAX_HELD_OUT_GROUP * total:
            chosen.add(name)
            taken += sizes[name]
    return frozenset(chosen)


def files(cache: Path) -> list[tuple[str, Path]]:
    """(key, path) of every file of the corpus, duplicates removed, in sorted key order. The listing is a walk of
    ~10^5 files; the duplicate check reads only files whose size another file shares, and its result is kept in
    `cache` under the hash of the listing (keys, sizes, mtimes), so a trial does not read the corpus to list it."""
    listing = sorted((f for prefix, root, skip in roots() for f in _walk(prefix, root, skip)), key=lambda f: f[0])
    signature = hashlib.sha1(json.dumps([(k, s, m) for k, _, s, m in listing]).encode()).hexdigest()[:16]
    kept_file = cache / f"installed_code-{signature}.json"
    if kept_file.exists():
        kept = set(json.loads(kept_file.read_text()))
    else:
        by_size: dict = {}
        for key, path, size, _ in listing:
            by_size.setdefault(size, []).append((key, path))
        seen, dropped = set(), set()
        for key, path, size, _ in listing:
            if len(by_size[size]) == 1:
                continue
            try:
                text = path.read_bytes()
            except OSError:
                dropped.add(key)
                continue
            digest = hashlib.sha1(text).digest()
            if digest in seen or not _utf8(text):
                dropped.add(key)
            seen.add(digest)
        kept = {key for key, path, size, _ in listing if key not in dropped and
                (len(by_size[size]) > 1 or _is_text(path))}
        cache.mkdir(parents=True, exist_ok=True)
        tmp = kept_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(kept)))
        os.replace(tmp, kept_file)
    return [(key, path) for key, path, _, _ in listing if key in kept]


def _utf8(text: bytes) -> bool:
    if b"\0" in text:
        return False
    try:
        text.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _is_text(path: Path) -> bool:
    try:
        return is_text(path)
    except OSError:
        return False
