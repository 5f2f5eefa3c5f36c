"""Training batches and the fixed held-out set, read from a tokenized corpus (data/cache.py)."""
from dataclasses import dataclass

import numpy as np
import torch

from ..config import EVAL_SETS  # noqa: F401 -- train.eval_set's values, re-exported
from .cache import Corpus


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


EVAL_SAMPLE_SEED = 240406395  # fixed: every run on a corpus, whatever its seed, draws the same windows


def eval_starts(n_val: int, seq_len: int, eval_tokens: int, eval_set: str = "sample") -> np.ndarray:
    """Where the held-out windows start in a val split of n_val tokens: n = eval_tokens // seq_len windows (at most
    what the split holds without overlap).

    "sample": a systematic sample spread over the whole val split: window i starts at (u + i) x stride, stride =
    n_val / n, u fixed by EVAL_SAMPLE_SEED, so every held-out document (and package) contributes in proportion to
    its tokens, within one window. "head": the first eval_tokens of the val split in file order (runs recorded
    before train.eval_set existed: on the stdlib corpora, a few dozen files of one folder)."""
    span = n_val - seq_len - 1  # the last possible start
    n = max(1, min(eval_tokens // seq_len, (n_val - 1) // seq_len))
    if eval_set == "head":
        return np.arange(n) * seq_len
    stride = (span + 1) / n
    offset = np.random.default_rng(EVAL_SAMPLE_SEED).uniform()
    return np.minimum(((offset + np.arange(n)) * stride).astype(np.int64), span)


def eval_windows(corpus: Corpus, seq_len: int, eval_tokens: int, eval_set: str = "sample") -> tuple[torch.Tensor, int]:
    """The held-out windows (n, seq_len + 1) that eval_starts places, and the number of text bytes their targets
    stand for (for bits per byte)."""
    starts = eval_starts(len(corpus.val), seq_len, eval_tokens, eval_set)
    windows = np.stack([np.asarray(corpus.val[s:s + seq_len + 1], dtype=np.int64) for s in starts])  # (n, T+1)
    n_bytes = int(corpus.token_bytes[windows[:, 1:]].sum())
    return torch.from_numpy(windows), n_bytes


@dataclass
class HeldOut:
    """The held-out windows of a run, (windows (n, T+1), their target bytes): `curve` for the evals along the run
    (train.eval_tokens), `final` for the evals runs are compared on (its end, a WSD decay's evals:
    train.final_eval_tokens, more windows where the standard error matters)."""
    curve: tuple
    final: tuple

    def get(self, final: bool) -> tuple:
        return self.final if final else self.curve


def held_out(corpus: Corpus, train) -> HeldOut:
    """The run's HeldOut from its TrainConfig (eval_set, eval_tokens, final_eval_tokens, seq_len)."""
    curve = eval_windows(corpus, train.seq_len, train.eval_tokens, train.eval_set)
    final_tokens = train.final_eval_tokens or train.eval_tokens
    final = curve if final_tokens == train.eval_tokens else eval_windows(corpus, train.seq_len, final_tokens,
                                                                           train.eval_set)
    return HeldOut(curve, final)
