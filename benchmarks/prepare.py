"""How long the corpus prepare takes, and how many unique tokens each built-in source has on this machine.

Prepares data=stdlib_bpe (BPE 8192) and data=stdlib_site_bpe (stdlib + every installed package's source,
BPE 8192) into a fresh cache and times them; then, side by side in the same process, the streaming build
against the one-document-at-a-time build (workers=1, the reference the parallel build must equal token for
token) on the same 64 MB slice of stdlib+site.

    python benchmarks/prepare.py --out benchmarks/results/prepare_h200.json [--cache DIR]
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from windtunnel.config import DataConfig  # noqa: E402
from windtunnel.data import manifest, prepare  # noqa: E402


def peak_rss_mb() -> float:
    text = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


def timed(cfg: DataConfig, workers: int = 0) -> dict:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS to the current one
    start = time.time()
    corpus = prepare(cfg, workers=workers)
    seconds = time.time() - start
    m = corpus.meta
    files = manifest(cfg)
    return {"source": cfg.source, "tokenizer": cfg.tokenizer, "vocab": corpus.vocab_size, "workers": workers or os.cpu_count(),
            "max_bytes": cfg.max_bytes, "files": len(files), "bytes_on_disk": sum(s for _, s in files),
            "train_tokens": m["train_tokens"], "val_tokens": m["val_tokens"], "train_bytes": m["train_bytes"],
            "bytes_per_token": (m["train_bytes"] + m["val_bytes"]) / (m["train_tokens"] + m["val_tokens"]),
            "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "cache": str(corpus.path)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--slice-bytes", type=int, default=64_000_000)
    ap.add_argument("--cache", default="", help="a cache dir to fill and keep (default: a temporary one)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        for source in ("stdlib", "stdlib+site"):
            rows.append(timed(DataConfig(source=source, tokenizer="bpe", bpe_vocab_size=8192, cache_dir=cache)))
            print(json.dumps(rows[-1]), flush=True)
        # the same slice both ways; each its own cache dir, so neither reuses the other's tokens
        sliced = dict(source="stdlib+site", tokenizer="bpe", bpe_vocab_size=8192, max_bytes=args.slice_bytes)
        one = timed(DataConfig(**sliced, cache_dir=cache + "/one"), workers=1)
        par = timed(DataConfig(**sliced, cache_dir=cache + "/par"))
        a, b = prepare(DataConfig(**sliced, cache_dir=cache + "/one")), prepare(DataConfig(**sliced, cache_dir=cache + "/par"))
        same = bool(np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val))
        rows += [one, par]
        print(json.dumps({"slice_one_doc_at_a_time_s": one["seconds"], "slice_parallel_s": par["seconds"],
                          "identical_tokens": same}), flush=True)
    doc = {"cpu_count": os.cpu_count(), "rows": rows, "slice_identical_tokens": same}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
