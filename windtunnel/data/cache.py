"""The tokenized corpus cache, and the data budget of a trial.

A corpus is tokenized once into uint16 files (train.bin, val.bin) under a key of corpus + tokenizer +
manifest, so every trial of a sweep reuses it. The build streams: documents are read in chunks of about
CHUNK_BYTES, each chunk is encoded in parallel over all cores (the BPE's encode_batch) and appended to the
files, so memory stays bounded whatever the corpus size. A BPE is trained on a fixed sample of the train
split (data.bpe_sample_bytes). Documents are joined with a separator token (byte 0 for the byte tokenizer,
<|endoftext|> for BPE).

A wind tunnel measures how loss falls with new tokens: check_budget refuses, before any compute, a trial
that would see its train split more than data.max_epochs times.
"""
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .. import sizing
from ..config import ConfigError, DataConfig, TrialConfig
from .sources import bpe_sample, cache_root, documents, held_out, manifest, manifest_hash

CACHE_VERSION = 2
EOT = "<|endoftext|>"
CHUNK_BYTES = 32 * 2 ** 20  # text per encoding chunk: bounds the build's memory, and balances the cores
NOT_IN_KEY = ("cache_dir", "mixture", "max_epochs")  # DataConfig fields that do not change the tokens


@dataclass
class Corpus:
    """A tokenized corpus: memmapped uint16 train/val tokens and what is needed to report bits per byte."""
    path: Path
    vocab_size: int
    train: np.ndarray  # (n_train,) uint16, memmapped
    val: np.ndarray  # (n_val,) uint16, memmapped
    token_bytes: np.ndarray  # (vocab_size,) bytes of text each token stands for (bits-per-byte denominators)
    meta: dict

    @property
    def unique_train_tokens(self) -> int:
        return int(self.meta["train_tokens"])


def cache_key(cfg: DataConfig) -> str:
    """Corpus + tokenizer identity, with the manifest's hash (an edited corpus re-tokenizes)."""
    ident = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_KEY}
    ident["version"] = CACHE_VERSION
    if cfg.tokenizer == "bytes":
        for k in ("bpe_vocab_size", "bpe_sample_bytes"):
            ident.pop(k)
    ident["manifest"] = manifest_hash(cfg)
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _tokenizer(cfg: DataConfig, out: Path):
    """The BPE (from data.tokenizer_file, or trained on the train sample), saved beside the tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if cfg.tokenizer_file:
        tok = Tokenizer.from_file(cfg.tokenizer_file)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=cfg.bpe_vocab_size, special_tokens=[EOT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(bpe_sample(cfg), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    return tok


def _bpe_token_bytes(tok) -> np.ndarray:
    # ByteLevel maps each byte to one printable character, so a token's byte length is its string length.
    lengths = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    for text, idx in tok.get_vocab().items():
        lengths[idx] = 0 if text == EOT else len(text)
    return lengths


def _chunks(cfg: DataConfig) -> Iterator[list[tuple[str, bytes]]]:
    chunk, size = [], 0
    for key, text in documents(cfg):
        chunk.append((key, text))
        size += len(text)
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _encoder(cfg: DataConfig, out: Path, workers: int):
    """(encode(list of texts) -> list of uint16 arrays, each ending in the separator; token bytes; vocab)."""
    if cfg.tokenizer == "bytes":
        def encode(texts):
            return [np.frombuffer(t + b"\x00", dtype=np.uint8).astype(np.uint16) for t in texts]
        return encode, np.ones(256, dtype=np.int64), 256
    tok = _tokenizer(cfg, out)
    eot = tok.token_to_id(EOT)

    def encode(texts):
        strings = [t.decode("utf-8", "replace") for t in texts]
        encodings = [tok.encode(s) for s in strings] if workers == 1 else tok.encode_batch_fast(strings)  # threads
        return [np.array(e.ids + [eot], dtype=np.uint16) for e in encodings]
    return encode, _bpe_token_bytes(tok), tok.get_vocab_size()


def _build(cfg: DataConfig, out: Path, workers: int = 0) -> dict:
    """Tokenize into out/ in a stream: chunk by chunk, each encoded in parallel (workers=1: one document at a
    time, the reference the parallel build must equal token for token)."""
    encode, token_bytes, vocab = _encoder(cfg, out, workers)
    entries = manifest(cfg)
    total = sum(size for _, size in entries) or None
    if total and cfg.max_bytes:
        total = min(total, cfg.max_bytes)
    counts = {"train": [0, 0, 0], "val": [0, 0, 0]}  # tokens, bytes, documents
    lines = {"train": [], "val": []}  # per document, the hashes of its long lines
    progress = _progress(total, f"tokenizing data.source={cfg.source}")
    with open(out / "train.bin", "wb") as ftrain, open(out / "val.bin", "wb") as fval:
        for chunk in _chunks(cfg):
            for (key, text), ids in zip(chunk, encode([t for _, t in chunk])):
                split = "val" if held_out(cfg, key) else "train"
                if cfg.source != "hf":  # a streamed dataset may not fit a set of its lines in memory
                    lines[split].append(_long_line_hashes(text))
                (fval if split == "val" else ftrain).write(ids.tobytes())
                counts[split][0] += len(ids)
                counts[split][1] += len(text)
                counts[split][2] += 1
            progress.update(sum(len(t) for _, t in chunk))
    progress.close()
    np.save(out / "token_bytes.npy", token_bytes)
    if cfg.source != "hf":
        (out / "manifest.tsv").write_text("".join(f"{size}\t{key}\n" for key, size in entries))
    meta = {"config": {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_KEY}, "vocab_size": vocab,
            "manifest": manifest_hash(cfg, entries), "files": len(entries),
            **{f"{s}_{what}": counts[s][i] for s in counts for i, what in enumerate(("tokens", "bytes", "docs"))},
            **({"val_long_lines_in_train": _shared_share(lines), "long_line_bytes": LONG_LINE}
               if cfg.source != "hf" else {})}
    for split in ("train", "val"):
        if meta[f"{split}_tokens"] < 1024:
            raise ConfigError(f"the {split} split of data.source={cfg.source!r} has only {meta[f'{split}_tokens']} "
                              f"tokens; give more text (data.max_bytes, data.path) or change data.eval_frac")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


LONG_LINE = 40  # bytes, whitespace stripped: shorter lines (an `else:`, a closing brace) recur in any code


def _long_line_hashes(text: bytes) -> np.ndarray:
    """(n,) int64 hashes of the document's lines of LONG_LINE or more bytes (stripped); hash() is salted per process,
    which is all a comparison within one build needs."""
    return np.fromiter((hash(line) for line in (raw.strip() for raw in text.split(b"\n")) if len(line) >= LONG_LINE),
                       dtype=np.int64)


def _shared_share(lines: dict) -> float:
    """The share of held-out long lines (with repeats) that also occur somewhere in train: how much of the held-out
    loss measures text the model has seen (licence headers, vendored code, generated boilerplate)."""
    val = np.concatenate(lines["val"]) if lines["val"] else np.zeros(0, np.int64)
    train = np.unique(np.concatenate(lines["train"])) if lines["train"] else np.zeros(0, np.int64)
    return float(np.isin(val, train).mean()) if len(val) else 0.0


def _progress(total: Optional[int], what: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=what, unit="B", unit_scale=True, file=sys.stderr,
                disable=not sys.stderr.isatty())


def prepare(cfg: DataConfig, workers: int = 0) -> Corpus:
    """Tokenize the corpus once (atomically: build in a temp dir, then rename) and memmap it."""
    final = cache_root(cfg) / cache_key(cfg)
    if not (final / "meta.json").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _build(cfg, tmp, workers)
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


def mixture_configs(cfg: DataConfig, main: Corpus) -> list[tuple[float, DataConfig]]:
    """(weight, DataConfig) of each data.mixture source, tokenized with the main corpus's tokenizer."""
    out = []
    for item in cfg.mixture:
        weight, source, *path = str(item).split(":", 2)
        extra = DataConfig(**{**asdict(cfg), "source": source, "path": path[0] if path else "", "mixture": [],
                              "max_bytes": 0, "tokenizer_file": str(main.path / "tokenizer.json")
                              if cfg.tokenizer == "bpe" else ""})
        out.append((float(weight), extra))
    return out


def prepare_mixture(cfg: DataConfig, main: Corpus) -> list[tuple[float, np.ndarray]]:
    """(weight, train tokens) for the main corpus and each data.mixture source, all with the main tokenizer."""
    extras = [(w, prepare(c).train) for w, c in mixture_configs(cfg, main)]
    return [(1.0 - sum(w for w, _ in extras), main.train)] + extras


def epochs(cfg: TrialConfig, corpus: Corpus, tokens: Optional[int] = None) -> float:
    """How many times the trial sees its train data: tokens / unique train tokens, for the main source and
    each mixture source at its share; the largest. `tokens` defaults to everything the trial will train
    (its run, or up to the end of its last decay branch)."""
    tokens = sizing.tokens_trained(cfg) if tokens is None else tokens
    extras = [(w, prepare(c).unique_train_tokens) for w, c in mixture_configs(cfg.data, corpus)]
    shares = [(1.0 - sum(w for w, _ in extras), corpus.unique_train_tokens)] + extras
    return max(w * tokens / unique for w, unique in shares)


def check_budget(cfg: TrialConfig, corpus: Corpus) -> float:
    """The trial's epochs; ConfigError when they exceed data.max_epochs (a wind tunnel sees each token at
    most once by default: repeated tokens measure memorisation, not how loss falls with data)."""
    seen = epochs(cfg, corpus)
    limit = cfg.data.max_epochs
    if seen > limit * (1 + 1e-9):
        tokens = sizing.tokens_trained(cfg)
        fit = int(limit * tokens / seen)
        raise ConfigError(
            f"trial {cfg.name!r} would train {tokens:,} tokens = {seen:.2f} epochs of data.source={cfg.data.source} "
            f"({corpus.unique_train_tokens:,} unique train tokens at data.tokenizer={cfg.data.tokenizer}), over "
            f"data.max_epochs={limit:g}; use train.total_tokens <= {fit:,} (or fewer train.tokens_per_param / "
            f"train.branch_at_n), a bigger corpus (data.source=stdlib+site, text_dir or hf), or raise data.max_epochs "
            f"(up to ~4 repeats are worth nearly as much as new data: Muennighoff et al. 2023)")
    return seen
