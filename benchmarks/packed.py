"""An 8-LR grid of a ~10M model on one GPU, three ways: 8 sequential compiled trials, 8 sequential trials with
CUDA graphs, and one packed job (train.pack=8: the 8 trials as one fused model, windtunnel/train/packed.py).

Two measurements, both in one process, side by side:
  step: steady-state training tokens/s of the grid (all 8 trials' tokens / time), timed on the trainer's own
        step objects (TrainStep for a lone trial, PackedModel.train_step for the pack) over synthetic tokens
        (vocab 8,192 like data=stdlib_bpe), compile excluded. 8 sequential trials take 8x one trial's time.
  grid: the whole grid end to end through run_trial (x8) and run_packed on the stdlib BPE corpus: wall time
        including compilation, evals and run-directory writes, as a user of `windtunnel sweep` sees it.

    python benchmarks/packed.py --out results/packed.json         # one GPU
    python benchmarks/packed.py --tiny --out tiny.json            # CPU smoke mode (the test suite runs it)
"""
import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from throughput import measure, windtunnel_step  # noqa: E402
from windtunnel import sizing  # noqa: E402
from windtunnel.config import OptimConfig, TrialConfig  # noqa: E402
from windtunnel.data import TokenBatches, prepare  # noqa: E402
from windtunnel.train import run_trial, run_trials  # noqa: E402
from windtunnel.train.core import autocast_for  # noqa: E402
from windtunnel.train.packed import PackedModel  # noqa: E402

WAYS = ("sequential_compiled", "sequential_cudagraphs", "packed")


def grid_lrs(k: int) -> list[float]:
    return [float(v) for v in np.geomspace(2 ** -10, 2 ** -4, k)]


def packed_step(k: int):
    def make(model_cfg, batches, device, accum, compile_mode):
        model = PackedModel(model_cfg, OptimConfig(), grid_lrs(k), [0] * k, device, autocast_for(device, "auto"),
                            shared_data=True, compile=compile_mode is not None, compile_mode=compile_mode or "default")
        return lambda i: model.train_step([batches.get(i, m, device) for m in range(accum)], 1.0)[0].sum()
    return make


def step_rows(args, device) -> list[dict]:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, args.vocab, size=4_000_000 if not args.tiny else 200_000, dtype=np.uint16)
    model_cfg = sizing.preset(args.model, vocab_size=args.vocab, max_seq_len=max(args.seq, 64))
    cuda = device.type == "cuda"
    rows = []
    for bs in map(int, args.batches.split(",")):
        micro = bs // args.seq  # one micro-batch per step (what CUDA graphs need)
        batches = TokenBatches(tokens, args.seq, micro, seed=0)
        row = {"model": args.model, "N": sizing.n_params(model_cfg), "tokens_per_step": bs, "k": args.k}
        ways = [("sequential_compiled", windtunnel_step, "default" if cuda else None),
                ("sequential_cudagraphs", windtunnel_step, "reduce-overhead" if cuda else None),
                ("packed", packed_step(args.k), "reduce-overhead" if cuda else None)]
        for label, make, mode in ways:
            if label == "sequential_cudagraphs" and not cuda:
                continue
            try:
                r = measure(make, model_cfg, batches, device, 1, mode, args.warmup, args.steps)
            except Exception as err:  # noqa: BLE001 -- a failing way is reported, not fatal
                row[label] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
                continue
            trials_per_step = args.k if label == "packed" else 1  # a sequential grid: one trial at a time
            row[label] = {**r, "mode": mode, "grid_tokens_per_s": trials_per_step * bs / r["s_per_step"]}
            torch.cuda.empty_cache() if cuda else None
        base = row.get("sequential_compiled", {}).get("grid_tokens_per_s")
        for label in WAYS[1:]:
            if base and "grid_tokens_per_s" in row.get(label, {}):
                row[label]["speedup_vs_sequential_compiled"] = row[label]["grid_tokens_per_s"] / base
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def grid_trial(args, device, bs: int) -> TrialConfig:
    cfg = TrialConfig(name=args.model)
    cfg.model = sizing.preset(args.model, max_seq_len=max(args.seq, 64))
    cfg.data.tokenizer, cfg.data.bpe_vocab_size = ("bpe", args.vocab) if not args.tiny else ("bytes", 0)
    if args.tiny:
        cfg.data.max_bytes = 2_000_000
    t = cfg.train
    t.device, t.seq_len, t.batch_size_tokens, t.micro_batch_size = device.type, args.seq, bs, bs // args.seq
    t.total_tokens, t.eval_points, t.eval_tokens = bs * args.grid_steps, 4, 8 * args.seq
    t.compile, t.skip_completed = device.type == "cuda", False
    return cfg


def grid_rows(args, device, root: Path) -> list[dict]:
    rows = []
    for bs in map(int, args.batches.split(",")):
        base = grid_trial(args, device, bs)
        cfgs = []
        for lr in grid_lrs(args.k):
            cfg = copy.deepcopy(base)
            cfg.optim.lr = lr
            cfgs.append(cfg)
        prepare(base.data)  # tokenizes (and caches) the corpus once, outside the timings
        row = {"model": args.model, "tokens_per_step": bs, "k": args.k, "steps_per_trial": args.grid_steps}
        for label in WAYS:
            if label == "sequential_cudagraphs" and device.type != "cuda":
                continue
            start = time.time()
            if label == "packed":
                results = run_trials(cfgs, [root / f"{label}{bs}_{i}" for i in range(args.k)])
            else:
                mode = "default" if label == "sequential_compiled" else "reduce-overhead"
                results = []
                for i, c in enumerate(cfgs):
                    c = copy.deepcopy(c)
                    c.train.compile_mode = mode
                    results.append(run_trial(c, root / f"{label}{bs}_{i}"))
            wall = time.time() - start
            row[label] = {"wall_s": wall, "statuses": [r.status.value for r in results],
                          "final_eval_loss": [r.final_eval_loss for r in results],
                          "train_s": sum(r.train_s or 0 for r in results) if label != "packed"
                          else max(r.train_s or 0 for r in results)}
        for label in WAYS[1:]:
            if label in row and "sequential_compiled" in row:
                row[label]["wall_speedup_vs_sequential_compiled"] = row["sequential_compiled"]["wall_s"] / row[label]["wall_s"]
        add_diffs(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def max_rel_diff(a: list, b: list):
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return max((abs(x - y) / abs(y) for x, y in pairs), default=None)


def add_diffs(row: dict) -> None:
    """How close the same trials' final held-out losses are, packed vs sequential compiled, and (the noise
    floor of bf16 kernels) sequential with CUDA graphs vs sequential compiled."""
    base = row["sequential_compiled"]["final_eval_loss"]
    row["packed"]["max_rel_diff_vs_sequential"] = max_rel_diff(row["packed"]["final_eval_loss"], base)
    if "sequential_cudagraphs" in row:
        row["sequential_cudagraphs"]["max_rel_diff_vs_sequential"] = max_rel_diff(
            row["sequential_cudagraphs"]["final_eval_loss"], base)


def table(doc: dict) -> str:
    out = [f"Card: {doc['card']}, torch {doc['torch']}; {doc['model']} ({doc['N'] / 1e6:.1f}M), seq {doc['seq_len']}, "
           f"vocab {doc['vocab']}, an LR grid of K = {doc['k']}.", "",
           "Steady state (grid tokens/s; 8 sequential trials run at one trial's speed):", "",
           f"| tokens/step | sequential compiled | sequential + CUDA graphs | packed K={doc['k']} | best / sequential compiled |",
           "|---|---|---|---|---|"]
    for r in doc["step"]:
        def cell(k):
            v = r.get(k, {})
            return f"{v['grid_tokens_per_s'] / 1e6:.2f}M" if "grid_tokens_per_s" in v else v.get("error", "-")[:60]
        best = max((r[k].get("speedup_vs_sequential_compiled", 0) for k in WAYS[1:] if k in r), default=0)
        out.append(f"| {r['tokens_per_step']:,} | {cell(WAYS[0])} | {cell(WAYS[1])} | {cell(WAYS[2])} | {best:.2f}x |")
    if doc.get("grid"):
        out += ["", "End to end (run_trial x8 or run_packed; wall seconds incl. compile, evals, run dirs):", "",
                f"| tokens/step | steps/trial | sequential compiled | sequential + CUDA graphs | packed K={doc['k']} | "
                "final eval loss, max rel. diff. vs sequential compiled: packed (CUDA graphs) |",
                "|---|---|---|---|---|---|"]
        for r in doc["grid"]:
            cells = [f"{r[k]['wall_s']:.1f} s" if k in r else "-" for k in WAYS]
            diffs = [r.get(k, {}).get("max_rel_diff_vs_sequential") for k in ("packed", "sequential_cudagraphs")]
            diffs = ["-" if d is None else f"{d:.1e}" for d in diffs]
            out.append(f"| {r['tokens_per_step']:,} | {r['steps_per_trial']} | " + " | ".join(cells) +
                       f" | {diffs[0]} ({diffs[1]}) |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU smoke mode: a tiny model, a few steps")
    ap.add_argument("--out", default="packed.json")
    ap.add_argument("--model", default="w9m")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batches", default="4096,16384", help="tokens per step")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--grid-steps", type=int, default=300, help="steps per trial of the end-to-end grid (0 = skip)")
    ap.add_argument("--table", help="only re-render the Markdown table of this results file (next to it)")
    args = ap.parse_args()
    if args.table:
        doc = json.loads(Path(args.table).read_text())
        for row in doc.get("grid", []):
            add_diffs(row)
        Path(args.table).write_text(json.dumps(doc, indent=1))
        Path(args.table).with_suffix(".md").write_text(table(doc))
        return print(table(doc))
    torch.set_float32_matmul_precision("high")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.model, args.k, args.batches, args.seq, args.vocab = "tiny32", 2, "256,512", 64, 256
        args.steps, args.warmup, args.grid_steps = 2, 1, 4
    model_cfg = sizing.preset(args.model, vocab_size=args.vocab, max_seq_len=max(args.seq, 64))
    doc = {"card": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "model": args.model, "N": sizing.n_params(model_cfg), "seq_len": args.seq, "vocab": args.vocab, "k": args.k}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    doc["step"] = step_rows(args, device)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    if args.grid_steps:
        with tempfile.TemporaryDirectory() as tmp:
            doc["grid"] = grid_rows(args, device, Path(tmp))
    Path(args.out).write_text(json.dumps(doc, indent=1))
    Path(args.out).with_suffix(".md").write_text(table(doc))
    print(table(doc))


if __name__ == "__main__":
    main()
