"""Corpora, tokenizers, the memmapped token cache, training batches and the fixed held-out set.

The embedded default corpus is a *code* corpus: the Python source files of the running interpreter's
standard library (optionally also its site-packages), read in sorted path order. It needs no network,
so the wind tunnel runs anywhere; its losses are those of a code LM, not of web text.

Every corpus is a sequence of (key, text bytes) documents. A document goes to the held-out split when the
hash of its key (its relative path, or dataset row) falls below data.eval_frac, so the split never
changes when files are added elsewhere. Documents are joined with a separator token (byte 0 for the byte
tokenizer, <|endoftext|> for BPE) and cached as uint16 token files under a key of corpus + tokenizer, so
a sweep of many trials tokenizes once.
"""
import hashlib
import json
import os
import shutil
import site
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .config import DataConfig

CACHE_VERSION = 1
EOT = "<|endoftext|>"


# ----------------------------------------------------------------------------- documents

def _python_files(root: Path, skip_site: bool) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if skip_site and ("site-packages" in rel or "dist-packages" in rel):
            continue
        if path.is_file():
            yield rel, path


def _file_documents(cfg: DataConfig) -> list[tuple[str, Path]]:
    if cfg.source == "text_dir":
        root = Path(cfg.path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.path={cfg.path!r} is not a folder of text files")
        return [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    files = list(_python_files(Path(sysconfig.get_paths()["stdlib"]), skip_site=True))
    if cfg.source == "stdlib+site":
        for sp in sorted(set(site.getsitepackages())):
            files += [(f"site/{rel}", p) for rel, p in _python_files(Path(sp), skip_site=False)]
    return files


def _hf_documents(cfg: DataConfig) -> Iterator[tuple[str, bytes]]:
    try:
        import datasets
    except ImportError:
        raise ImportError("data.source='hf' needs the `datasets` package: pip install datasets") from None
    if Path(cfg.path).is_dir() and any((Path(cfg.path) / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(cfg.path)  # a dataset saved with save_to_disk
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[cfg.hf_split]
    else:
        extra = {"data_files": cfg.hf_data_files} if cfg.hf_data_files else {}
        ds = datasets.load_dataset(cfg.path, cfg.hf_config or None, split=cfg.hf_split, **extra)
    if cfg.text_field not in ds.column_names:
        raise KeyError(f"data.text_field={cfg.text_field!r} is not a column of {cfg.path}; "
                       f"columns: {', '.join(ds.column_names)}")
    for i, row in enumerate(ds):
        yield f"{i}", row[cfg.text_field].encode("utf-8")


def documents(cfg: DataConfig) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) in a fixed order, stopping once data.max_bytes (if > 0) have been read."""
    source = _hf_documents(cfg) if cfg.source == "hf" else (
        (key, path.read_bytes()) for key, path in _file_documents(cfg))
    total = 0
    for key, text in source:
        if not text:
            continue
        yield key, text
        total += len(text)
        if cfg.max_bytes and total >= cfg.max_bytes:
            return


def is_eval(key: str, eval_frac: float) -> bool:
    """Held-out membership from a hash of the document key: stable, order-free."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return h / 2 ** 64 < eval_frac


# ----------------------------------------------------------------------------- tokenized cache

@dataclass
class Corpus:
    """A tokenized corpus: memmapped uint16 train/val tokens and what is needed to report bits per byte."""
    path: Path
    vocab_size: int
    train: np.ndarray  # (n_train,) uint16, memmapped
    val: np.ndarray  # (n_val,) uint16, memmapped
    token_bytes: np.ndarray  # (vocab_size,) bytes of text each token stands for (bits-per-byte denominators)
    meta: dict


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("WINDTUNNEL_CACHE") or Path.home() / ".cache" / "windtunnel")


def cache_key(cfg: DataConfig) -> str:
    """Corpus + tokenizer identity. File corpora add their (path, size) list so an edited corpus re-tokenizes."""
    ident = {k: v for k, v in asdict(cfg).items() if k not in ("cache_dir", "mixture")}
    ident["version"] = CACHE_VERSION
    if cfg.tokenizer == "bytes":
        ident.pop("bpe_vocab_size")
    if cfg.source != "hf":
        ident["files"] = hashlib.sha1(json.dumps(
            [(k, p.stat().st_size) for k, p in _file_documents(cfg)]).encode()).hexdigest()
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _train_bpe(cfg: DataConfig, out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.bpe_vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    train_texts = (t.decode("utf-8", "replace") for k, t in documents(cfg) if not is_eval(k, cfg.eval_frac))
    tok.train_from_iterator(train_texts, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    return tok


def _bpe_token_bytes(tok) -> np.ndarray:
    # ByteLevel maps each byte to one printable character, so a token's byte length is its string length.
    lengths = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    for text, idx in tok.get_vocab().items():
        lengths[idx] = 0 if text == EOT else len(text)
    return lengths


def _build(cfg: DataConfig, out: Path) -> dict:
    if cfg.tokenizer == "bpe" and cfg.tokenizer_file:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(cfg.tokenizer_file)
        tok.save(str(out / "tokenizer.json"))
    elif cfg.tokenizer == "bpe":
        tok = _train_bpe(cfg, out)
    if cfg.tokenizer == "bpe":
        eot = tok.token_to_id(EOT)
        encode = lambda text: tok.encode(text.decode("utf-8", "replace")).ids + [eot]  # noqa: E731
        token_bytes, vocab = _bpe_token_bytes(tok), tok.get_vocab_size()
    else:
        encode = lambda text: np.frombuffer(text + b"\x00", dtype=np.uint8)  # noqa: E731  byte 0 separates
        token_bytes, vocab = np.ones(256, dtype=np.int64), 256
    counts = {"train": [0, 0, 0], "val": [0, 0, 0]}  # tokens, bytes, documents
    with open(out / "train.bin", "wb") as ftrain, open(out / "val.bin", "wb") as fval:
        for key, text in documents(cfg):
            split = "val" if is_eval(key, cfg.eval_frac) else "train"
            ids = np.asarray(encode(text), dtype=np.uint16)
            (fval if split == "val" else ftrain).write(ids.tobytes())
            counts[split][0] += len(ids)
            counts[split][1] += len(text)
            counts[split][2] += 1
    np.save(out / "token_bytes.npy", token_bytes)
    meta = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("cache_dir", "mixture")}, "vocab_size": vocab,
            **{f"{s}_{what}": counts[s][i] for s in counts for i, what in enumerate(("tokens", "bytes", "docs"))}}
    for split in ("train", "val"):
        if meta[f"{split}_tokens"] < 1024:
            raise ValueError(f"the {split} split of data.source={cfg.source!r} has only {meta[f'{split}_tokens']} "
                             f"tokens; give more text (data.max_bytes, data.path) or change data.eval_frac")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def prepare(cfg: DataConfig) -> Corpus:
    """Tokenize the corpus once (atomically: build in a temp dir, then rename) and memmap it."""
    final = cache_root(cfg) / cache_key(cfg)
    if not (final / "meta.json").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _build(cfg, tmp)
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():  # not a lost race with another process: a real error
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((final / "meta.json").read_text())
    return Corpus(path=final, vocab_size=meta["vocab_size"],
                  train=np.memmap(final / "train.bin", dtype=np.uint16, mode="r"),
                  val=np.memmap(final / "val.bin", dtype=np.uint16, mode="r"),
                  token_bytes=np.load(final / "token_bytes.npy"), meta=meta)


def prepare_mixture(cfg: DataConfig, main: Corpus) -> list[tuple[float, np.ndarray]]:
    """(weight, train tokens) for the main corpus and each data.mixture source, all with the main tokenizer."""
    sources, rest = [], 1.0
    for item in cfg.mixture:
        weight, source, *path = str(item).split(":", 2)
        extra = DataConfig(**{**asdict(cfg), "source": source, "path": path[0] if path else "", "mixture": [],
                              "max_bytes": 0, "tokenizer_file": str(main.path / "tokenizer.json")
                              if cfg.tokenizer == "bpe" else ""})
        sources.append((float(weight), prepare(extra).train))
        rest -= float(weight)
    return [(rest, main.train)] + sources


# ----------------------------------------------------------------------------- batches

class TokenBatches:
    """Random windows of the train split (or of a weighted mixture of splits). Batch (step, micro) is a pure
    function of (seed, step, micro), so a resumed run sees exactly the batches an uninterrupted run would,
    and W ranks that take micro-batches r*A ... r*A+A-1 see exactly one process's global batch."""

    def __init__(self, tokens, seq_len: int, micro_batch: int, seed: int):
        self.sources = tokens if isinstance(tokens, list) else [(1.0, tokens)]  # [(weight, tokens)]
        for _, toks in self.sources:
            if len(toks) <= seq_len + 1:
                raise ValueError(f"train split has {len(toks)} tokens, fewer than train.seq_len + 1 = {seq_len + 1}")
        self.weights = np.array([w for w, _ in self.sources]) / sum(w for w, _ in self.sources)
        self.seq_len, self.micro_batch, self.seed = seq_len, micro_batch, seed

    def get(self, step: int, micro: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 0, step, micro])
        rows = []
        if len(self.sources) == 1:  # (kept separate so single-source draws stay as they always were)
            tokens = self.sources[0][1]
            starts = rng.integers(0, len(tokens) - self.seq_len - 1, size=self.micro_batch)
            rows = [tokens[s:s + self.seq_len + 1] for s in starts]
        else:
            for k in rng.choice(len(self.sources), size=self.micro_batch, p=self.weights):
                tokens = self.sources[k][1]
                s = rng.integers(0, len(tokens) - self.seq_len - 1)
                rows.append(tokens[s:s + self.seq_len + 1])
        window = np.stack(rows).astype(np.int64)  # (B, T+1)
        xy = torch.from_numpy(window)
        if torch.device(device).type == "cuda":
            xy = xy.pin_memory().to(device, non_blocking=True)
        return xy[:, :-1], xy[:, 1:]  # inputs, next-token targets: (B, T) each


class Prefetcher:
    """The micro-batches first .. first+count-1 of each step, gathered and copied to the device by a
    background thread one step ahead, so the GPU never waits on numpy (steps are asked for in order)."""

    def __init__(self, batches: TokenBatches, first: int, count: int, device):
        from concurrent.futures import ThreadPoolExecutor
        self.batches, self.first, self.count, self.device = batches, first, count, device
        self.pool = ThreadPoolExecutor(max_workers=1) if torch.device(device).type == "cuda" else None
        self.pending: dict = {}

    def _load(self, step: int) -> list:
        return [self.batches.get(step, self.first + i, self.device) for i in range(self.count)]

    def get(self, step: int) -> list:
        if self.pool is None:
            return self._load(step)
        future = self.pending.pop(step, None) or self.pool.submit(self._load, step)
        self.pending[step + 1] = self.pool.submit(self._load, step + 1)
        return future.result()


def eval_windows(corpus: Corpus, seq_len: int, eval_tokens: int) -> tuple[torch.Tensor, int]:
    """The fixed held-out set: the first eval_tokens of the val split as (n, seq_len + 1) windows, and the
    number of text bytes their targets stand for (for bits per byte)."""
    n = max(1, min(eval_tokens // seq_len, (len(corpus.val) - 1) // seq_len))
    flat = np.asarray(corpus.val[:n * seq_len + 1], dtype=np.int64)
    windows = np.stack([flat[i * seq_len:(i + 1) * seq_len + 1] for i in range(n)])  # (n, T+1)
    n_bytes = int(corpus.token_bytes[windows[:, 1:]].sum())
    return torch.from_numpy(windows), n_bytes
