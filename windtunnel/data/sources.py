"""Where a corpus's documents come from, in a fixed order: the interpreter's standard library (and its
site-packages), a folder of text files, or a Hugging Face dataset (streamed). Each document is (key, bytes);
its key decides its split (a hash, so the split never changes when documents are added elsewhere).

The set of files is fixed by a manifest, (key, size) per file in sorted order; its hash is part of the
token cache's key and is recorded by every trial, so a sweep and a re-run months later see the same
corpus, or are told that it changed.
"""
import hashlib
import json
import logging
import math
import os
import site
import sysconfig
from pathlib import Path
from typing import Iterator

from ..config import ConfigError, DataConfig
from .text import is_text

log = logging.getLogger("windtunnel")


def _python_files(root: Path, skip_site: bool) -> Iterator[tuple[str, Path]]:
    """(relative key, path) of every *.py file under root, in the order of sorted(root.rglob("*.py")) (by path
    components): os.walk, pruning installed packages when skip_site, lists the stdlib 2-4x faster than rglob, and
    every trial lists its corpus (the manifest in its cache key)."""
    def installed(rel: str) -> bool:
        return skip_site and ("site-packages" in rel or "dist-packages" in rel)
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        here = os.path.relpath(folder, root)
        prefix = "" if here == "." else here.replace(os.sep, "/") + "/"
        subfolders[:] = [d for d in subfolders if not installed(prefix + d)]
        found += [prefix + name for name in names if name.endswith(".py") and not installed(prefix + name)]
    for rel in sorted(found, key=lambda r: r.split("/")):
        path = root / rel
        if path.is_file():
            yield rel, path


def files(cfg: DataConfig) -> list[tuple[str, Path]]:
    """(key, path) of every file of a file source, in the fixed (sorted) order."""
    if cfg.source == "text_dir":
        root = Path(cfg.path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.path={cfg.path!r} is not a folder of text files; give an existing folder "
                                    f"(data.path=/path/to/texts), or another data source (data=stdlib_bpe)")
        found = [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        text, skipped = [], []
        for key, path in found:
            (text if is_text(path) else skipped).append((key, path))
        skipped = [key for key, _ in skipped]
        if skipped and str(root) not in _REPORTED:
            _REPORTED.add(str(root))
            log.warning("data.path=%s: skipped %d binary or non-UTF-8 file(s) of %d (e.g. %s)", cfg.path, len(skipped),
                        len(found), ", ".join(skipped[:3]))
        if found and not text:
            raise ConfigError(f"data.path={cfg.path!r}: none of its {len(found)} files is UTF-8 text")
        return text
    if cfg.source == "installed_code":
        from . import installed
        return installed.files(cache_root(cfg))
    out = list(_python_files(Path(sysconfig.get_paths()["stdlib"]), skip_site=True))
    if cfg.source == "stdlib+site":
        for sp in sorted(set(site.getsitepackages())):
            out += [(f"site/{rel}", p) for rel, p in _python_files(Path(sp), skip_site=False)]
    return out


_REPORTED: set = set()  # folders whose skipped files were already reported in this process


def manifest(cfg: DataConfig) -> list[tuple[str, int]]:
    """(key, size in bytes) of each file, in order; for a Hugging Face dataset, its name, config, split and
    files (its rows are not listed)."""
    if cfg.source == "hf":
        return [(f"hf:{cfg.path}:{cfg.hf_config}:{cfg.hf_split}:{cfg.hf_data_files}:{cfg.text_field}", 0)]
    return [(key, path.stat().st_size) for key, path in files(cfg)]


def manifest_hash(cfg: DataConfig, entries: list = None) -> str:
    """The hash of the manifest (of `entries` when the caller has already listed them)."""
    return hashlib.sha1(json.dumps(manifest(cfg) if entries is None else entries).encode()).hexdigest()[:16]


def _hf_rows(cfg: DataConfig) -> Iterator[tuple[str, bytes]]:
    try:
        import datasets
    except ImportError:
        raise ImportError("data.source='hf' needs the `datasets` package: pip install datasets") from None
    if Path(cfg.path).is_dir() and any((Path(cfg.path) / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(cfg.path)  # a dataset saved with save_to_disk
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[cfg.hf_split]
        columns = ds.column_names
    else:  # streamed: a multi-GB dataset (FineWeb-Edu, say) is read row by row, never held whole
        extra = {"data_files": cfg.hf_data_files} if cfg.hf_data_files else {}
        ds = datasets.load_dataset(cfg.path, cfg.hf_config or None, split=cfg.hf_split, streaming=True, **extra)
        columns = list(ds.features) if ds.features is not None else [cfg.text_field]
    if cfg.text_field not in columns:
        raise KeyError(f"data.text_field={cfg.text_field!r} is not a column of {cfg.path}; "
                       f"columns: {', '.join(columns)}")
    for i, row in enumerate(ds):
        yield f"{i}", row[cfg.text_field].encode("utf-8")


def documents(cfg: DataConfig) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) in the fixed order, stopping once data.max_bytes (if > 0) have been read."""
    source = _hf_rows(cfg) if cfg.source == "hf" else ((key, path.read_bytes()) for key, path in files(cfg))
    total = 0
    for key, text in source:
        if not text:
            continue
        yield key, text
        total += len(text)
        if cfg.max_bytes and total >= cfg.max_bytes:
            return


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("WINDTUNNEL_CACHE") or Path.home() / ".cache" / "windtunnel")


def held_out(cfg: DataConfig, key: str) -> bool:
    """Whether a document is in the held-out split: drawn per document, or per package for installed_code (one
    package never on both sides)."""
    if cfg.source == "installed_code":
        from .installed import is_held_out
        return is_held_out(key, cache_root(cfg), cfg.eval_frac)
    return is_eval(key, cfg.eval_frac)


def is_eval(key: str, eval_frac: float) -> bool:
    """Held-out membership from a hash of the document key: stable, order-free."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return h / 2 ** 64 < eval_frac


def bpe_sample(cfg: DataConfig) -> Iterator[list[str]]:
    """The train documents a BPE is trained on, in batches (the trainer counts words in parallel over a
    batch): about data.bpe_sample_bytes of them, every k-th train file of a file source (k from the
    manifest's sizes, so the sample is deterministic, spread over the whole corpus, and only its own files
    are read), or the first train rows of a dataset."""
    if cfg.source == "hf":
        texts = (text for key, text in documents(cfg) if not held_out(cfg, key))
    else:
        chosen, total = [], 0
        for key, path in files(cfg):  # the files documents() would read, up to data.max_bytes
            if cfg.max_bytes and total >= cfg.max_bytes:
                break
            size = path.stat().st_size
            total += size
            if size and not held_out(cfg, key):
                chosen.append(path)
        train_bytes = sum(p.stat().st_size for p in chosen)
        stride = max(1, math.ceil(train_bytes / cfg.bpe_sample_bytes)) if cfg.bpe_sample_bytes else 1
        texts = (path.read_bytes() for path in chosen[::stride])
    batch, taken = [], 0
    for text in texts:
        batch.append(text.decode("utf-8", "replace"))
        taken += len(text)
        if len(batch) == 256:
            yield batch
            batch = []
        if cfg.bpe_sample_bytes and taken >= cfg.bpe_sample_bytes:
            break
    if batch:
        yield batch
