"""Corpora, tokenizers, the memmapped token cache, the data budget, training batches and the held-out set.

The embedded default corpus is a *code* corpus: the Python source files of the running interpreter's
standard library (data.source=stdlib+site adds every installed package's source), read in sorted path
order. It needs no network, so the wind tunnel runs anywhere; its losses are those of a code LM, not of
web text. Split by noun: sources (documents, manifests, splits), cache (tokenizing, the cache, the
budget), batches (training windows, the held-out windows).
"""
from .batches import EVAL_SETS, HeldOut, Prefetcher, TokenBatches, eval_starts, eval_windows, held_out
from .cache import (EOT, Corpus, cache_key, check_budget, epochs, mixture_configs, prepare, prepare_mixture)
from .sources import documents, is_eval, manifest, manifest_hash

__all__ = ["EVAL_SETS", "EOT", "HeldOut", "held_out", "Corpus", "Prefetcher", "TokenBatches", "cache_key", "check_budget", "documents", "epochs",
           "eval_starts", "eval_windows", "is_eval", "manifest", "manifest_hash", "mixture_configs", "prepare", "prepare_mixture"]
