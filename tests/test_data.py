"""Corpora, tokenizers, the token cache, batches and the held-out set."""
import os

import numpy as np
import pytest
import torch

from windtunnel.config import DataConfig
from windtunnel.data import EOT, TokenBatches, cache_key, documents, eval_starts, eval_windows, is_eval, prepare

LINES = ["def f(x):\n    return x + 1\n", "the quick brown fox jumps over the lazy dog\n", "café, naïve, 東京\n"]


@pytest.fixture()
def text_dir(tmp_path):
    root = tmp_path / "corpus"
    for i in range(60):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"doc{i:03d}.txt").write_text("".join(LINES[(i + j) % 3] * (5 + i % 7) for j in range(3)))
    (root / ".hidden").write_text("never read")
    return root


def test_embedded_corpus_is_the_stdlib_in_a_fixed_order():
    cfg = DataConfig(max_bytes=300_000)
    docs = list(documents(cfg))
    keys = [k for k, _ in docs]
    assert keys == sorted(keys) and all(k.endswith(".py") for k in keys)
    assert sum(len(t) for _, t in docs) >= 300_000
    assert any(k == "abc.py" or k.endswith("/abc.py") for k, _ in documents(DataConfig()))
    assert not any("site-packages" in k for k in keys)


def test_split_is_a_stable_hash_of_the_key():
    keys = [f"pkg/mod{i}.py" for i in range(20000)]
    held = [k for k in keys if is_eval(k, 0.05)]
    assert len(held) == pytest.approx(1000, rel=0.15)
    assert held == [k for k in reversed(keys) if is_eval(k, 0.05)][::-1]  # order-free


def test_text_dir_bytes_cache_and_bits_per_byte(text_dir, tmp_path):
    cfg = DataConfig(source="text_dir", path=str(text_dir), eval_frac=0.2, cache_dir=str(tmp_path / "cache"))
    corpus = prepare(cfg)
    docs = dict(documents(cfg))
    assert ".hidden" not in docs and len(docs) == 60
    val_bytes = sum(len(t) for k, t in docs.items() if is_eval(k, 0.2))
    assert corpus.meta["val_bytes"] == val_bytes and corpus.meta["val_tokens"] == val_bytes + corpus.meta["val_docs"]
    assert corpus.vocab_size == 256 and corpus.train.dtype == np.uint16
    # the train split is the train documents' bytes, each followed by the separator byte 0
    first_train = next(t for k, t in docs.items() if not is_eval(k, 0.2))
    assert bytes(corpus.train[:len(first_train)].astype(np.uint8)) == first_train and corpus.train[len(first_train)] == 0
    # cached: a second prepare reuses the files
    mtime = os.path.getmtime(corpus.path / "train.bin")
    assert prepare(cfg).path == corpus.path and os.path.getmtime(corpus.path / "train.bin") == mtime
    # bits per byte denominators: one byte per token for the byte tokenizer
    windows, n_bytes = eval_windows(corpus, seq_len=32, eval_tokens=256)
    assert windows.shape == (8, 33) and n_bytes == 8 * 32


def test_bpe_is_trained_on_train_split_and_round_trips(text_dir, tmp_path):
    from tokenizers import Tokenizer
    cfg = DataConfig(source="text_dir", path=str(text_dir), tokenizer="bpe", bpe_vocab_size=300,
                     eval_frac=0.2, cache_dir=str(tmp_path / "cache"))
    corpus = prepare(cfg)
    tok = Tokenizer.from_file(str(corpus.path / "tokenizer.json"))
    assert corpus.vocab_size == tok.get_vocab_size() <= 300
    eot = tok.token_to_id(EOT)
    ids = corpus.val.tolist()
    first_doc = ids[:ids.index(eot)]
    val_docs = [t for k, t in documents(cfg) if is_eval(k, 0.2)]
    assert tok.decode(first_doc).encode() == val_docs[0]  # byte-level BPE is lossless, UTF-8 included
    assert corpus.meta["val_bytes"] == sum(len(t) for t in val_docs)
    assert corpus.meta["val_tokens"] < corpus.meta["val_bytes"]  # BPE compresses
    # bits-per-byte denominator of the eval windows = the text bytes their target tokens stand for
    windows, n_bytes = eval_windows(corpus, seq_len=16, eval_tokens=64, eval_set="head")
    text = tok.decode(windows[:, 1:].flatten().tolist(), skip_special_tokens=True)
    assert n_bytes == len(text.encode())
    assert cache_key(cfg) != cache_key(DataConfig(source="text_dir", path=str(text_dir), eval_frac=0.2))


def test_hf_dataset_from_disk_and_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"text": [LINES[i % 3] * (20 + i) for i in range(80)], "id": list(range(80))}
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(source="hf", path=str(tmp_path / "saved"), eval_frac=0.25, cache_dir=str(tmp_path / "c"))
    corpus = prepare(cfg)
    held = [t for i, t in enumerate(rows["text"]) if is_eval(str(i), 0.25)]
    assert corpus.meta["val_docs"] == len(held) and corpus.meta["val_bytes"] == sum(len(t.encode()) for t in held)
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    builder = DataConfig(source="hf", path="parquet", hf_data_files=str(tmp_path / "rows.parquet"), eval_frac=0.25,
                         cache_dir=str(tmp_path / "c"), max_bytes=5000)
    loaded = list(documents(builder))
    assert [t.decode() for _, t in loaded] == rows["text"][:len(loaded)]
    assert sum(len(t) for _, t in loaded[:-1]) < 5000 <= sum(len(t) for _, t in loaded)  # max_bytes stops reading
    with pytest.raises(KeyError, match="text_field='body'"):
        list(documents(DataConfig(source="hf", path=str(tmp_path / "saved"), text_field="body")))


def test_batches_are_a_pure_function_of_step():
    tokens = np.arange(10_000, dtype=np.uint16)
    a = TokenBatches(tokens, seq_len=16, micro_batch=4, seed=3)
    b = TokenBatches(tokens, seq_len=16, micro_batch=4, seed=3)
    x1, y1 = a.get(5, 1, "cpu")
    b.get(0, 0, "cpu")
    x2, y2 = b.get(5, 1, "cpu")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 16) and torch.equal(x1[:, 1:], y1[:, :-1]) and torch.equal(y1 - x1, torch.ones_like(x1))
    assert not torch.equal(a.get(6, 1, "cpu")[0], x1) and not torch.equal(a.get(5, 0, "cpu")[0], x1)
    assert not torch.equal(TokenBatches(tokens, 16, 4, seed=4).get(5, 1, "cpu")[0], x1)


def test_too_small_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.txt").write_text("tiny")
    with pytest.raises(ValueError, match="split of data.source='text_dir' has only"):
        prepare(DataConfig(source="text_dir", path=str(tmp_path / "one"), cache_dir=str(tmp_path / "c")))


def test_mixture_draws_sources_by_weight():
    main, extra = np.full(5000, 1, dtype=np.uint16), np.full(5000, 2, dtype=np.uint16)
    batches = TokenBatches([(0.7, main), (0.3, extra)], seq_len=8, micro_batch=50, seed=0)
    rows = torch.cat([batches.get(step, 0, "cpu")[0] for step in range(40)])  # (2000, 8)
    assert set(rows[:, 0].tolist()) == {1, 2} and (rows == rows[:, :1]).all()  # a window comes from one source
    assert (rows[:, 0] == 2).float().mean().item() == pytest.approx(0.3, abs=0.04)


def test_binary_and_non_utf8_files_in_a_text_dir_are_skipped_with_a_count(text_dir, caplog):
    from windtunnel.config import ConfigError
    from windtunnel.data import sources
    rng = np.random.default_rng(0)
    for i in range(3):
        (text_dir / f"blob{i}.bin").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (text_dir / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1") * 10)
    (text_dir / "cut.txt").write_bytes(("x" * 8191 + "東京").encode("utf-8"))  # a character split by the 8 KiB head
    cfg = DataConfig(source="text_dir", path=str(text_dir))
    with caplog.at_level("WARNING", logger="windtunnel"):
        keys = [k for k, _ in sources.files(cfg)]
    assert len(keys) == 61 and "cut.txt" in keys and not any(k.endswith(".bin") or k == "latin1.txt" for k in keys)
    assert "skipped 4 binary or non-UTF-8 file(s) of 65" in caplog.text
    only_binary = text_dir.parent / "blobs"
    only_binary.mkdir()
    (only_binary / "a.bin").write_bytes(b"\0\1\2" * 100)
    with pytest.raises(ConfigError, match="none of its 1 files is UTF-8 text"):
        sources.files(DataConfig(source="text_dir", path=str(only_binary)))


def _val_packages(cfg):
    """(package, first token, end token) of each top-level folder's held-out text in the val stream, from the
    manifest's order (bytes tokenizer: one token per byte, and the separator after each document)."""
    spans, at = {}, 0
    for key, text in documents(cfg):
        if is_eval(key, cfg.eval_frac):
            package = key.split("/")[0]
            start, _ = spans.get(package, (at, at))
            spans[package] = (start, at + len(text) + 1)
            at += len(text) + 1
    return spans, at


@pytest.mark.parametrize("n_windows", [7, 40, 123])
def test_eval_sample_draws_from_every_held_out_package_in_proportion(tmp_path, n_windows):
    root = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for p in range(6):  # packages of very different sizes, as site-packages are
        (root / f"pkg{p}").mkdir(parents=True)
        for i in range(30):
            (root / f"pkg{p}" / f"m{i:02d}.py").write_text("x = 1\n" * int(rng.integers(5, 40) * (p + 1) ** 2))
    cfg = DataConfig(source="text_dir", path=str(root), eval_frac=0.25, cache_dir=str(tmp_path / "cache"))
    corpus = prepare(cfg)
    spans, total = _val_packages(cfg)
    assert total == len(corpus.val) and len(spans) == 6  # the manifest accounts for every held-out token
    seq = 16
    windows, _ = eval_windows(corpus, seq, n_windows * seq)
    assert windows.shape == (n_windows, seq + 1)
    val = torch.from_numpy(np.asarray(corpus.val, dtype=np.int64))
    starts = eval_starts(len(corpus.val), seq, n_windows * seq).tolist()
    assert all(torch.equal(w, val[s:s + seq + 1]) for w, s in zip(windows, starts))
    assert starts == sorted(starts) and len(set(starts)) == n_windows  # spread in order over the whole split
    for package, (a, b) in spans.items():
        got = sum(a <= s < b for s in starts)
        assert abs(got - n_windows * (b - a) / total) <= 1, (package, got, n_windows * (b - a) / total)
    # the head set is the split's first tokens: the first package only, when it is long enough
    head, _ = eval_windows(corpus, seq, n_windows * seq, eval_set="head")
    assert torch.equal(head.flatten()[:seq], val[:seq])
    # fixed: the same windows for every run (no dependence on any seed or global RNG state)
    np.random.seed(1)
    torch.manual_seed(1)
    assert torch.equal(eval_windows(corpus, seq, n_windows * seq)[0], windows)
