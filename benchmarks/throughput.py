"""Training throughput of windtunnel's trainer against the peer a user would otherwise pick: Hugging Face
LlamaForCausalLM of the same shape, trained by a plain compiled bf16 loop with fused AdamW. Same data (the
same TokenBatches windows of one synthetic token file), same precision, same tokens per step.

    python benchmarks/throughput.py --out results.json            # one GPU: 9M, 36M, 166M x 16k / 256k tokens
    python benchmarks/throughput.py --tiny --out tiny.json        # CPU smoke mode (the test suite runs it)

MFU = tokens/s x FLOPs per token / peak, with FLOPs per token from windtunnel.sizing.flops_per_token
(6N + 6dV + 12 L d T) and the peak both as measured here (an 8192^3 bf16 matmul) and as the datasheet's.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from windtunnel import sizing  # noqa: E402
from windtunnel.config import OptimConfig  # noqa: E402
from windtunnel.data import TokenBatches  # noqa: E402
from windtunnel.model import Transformer, build_optimizer  # noqa: E402
from windtunnel.train.core import autocast_for  # noqa: E402
from windtunnel.train.dist import Dist  # noqa: E402
from windtunnel.train.step import TrainStep  # noqa: E402

DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float) -> float:
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12)


def ceilings(device) -> dict:
    if device.type != "cuda":
        return {"matmul_tflops": None, "copy_gbps": None}
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    src = torch.empty(2 ** 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copies = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        torch.cuda.synchronize()
        copies.append(s.elapsed_time(e) / 1e3)
    return {"matmul_tflops": 2 * 8192 ** 3 / float(np.median(times)) / 1e12,
            "copy_gbps": 2 * 2 ** 30 / float(np.median(copies)) / 1e9}


def windtunnel_step(model_cfg, batches, device, accum, compile_mode):
    """The trainer's own step (windtunnel.train.step.TrainStep), as run_trial builds it."""
    torch.manual_seed(0)
    model = Transformer(model_cfg).to(device)
    dist = Dist(str(device), "none")
    opt = build_optimizer(model, OptimConfig(lr=3e-3), fused=device.type == "cuda")
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    step = TrainStep(model, model, forward, opt, batches, dist, autocast_for(device, "auto"), accum, 3e-3, 1.0)
    return lambda i: step(i, 1.0)[0]


def peer_step(model_cfg, batches, device, accum, compile_mode):
    """A plain loop around transformers' LlamaForCausalLM: compiled forward, bf16 autocast, fused AdamW."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=model_cfg.vocab_size, hidden_size=model_cfg.d_model,
                         intermediate_size=model_cfg.ffn_dim, num_hidden_layers=model_cfg.n_layers,
                         num_attention_heads=model_cfg.heads, num_key_value_heads=model_cfg.kv_heads,
                         max_position_embeddings=model_cfg.max_seq_len, rms_norm_eps=model_cfg.norm_eps,
                         rope_theta=model_cfg.rope_theta, tie_word_embeddings=True, attention_dropout=0.0)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    use_bf16 = device.type == "cuda"

    def step(i):
        total = torch.zeros((), device=device)
        for m in range(accum):
            x, y = batches.get(i, m, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = forward(input_ids=x).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            (loss / accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total / accum
    return step


def measure(make, model_cfg, batches, device, accum, compile_mode, warmup, steps) -> dict:
    start = time.time()
    step = make(model_cfg, batches, device, accum, compile_mode)
    for i in range(warmup):
        loss = step(i)
    float(loss)
    compile_s = time.time() - start
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss = step(i)
    final = float(loss)  # one sync at the end
    elapsed = time.perf_counter() - t0
    return {"s_per_step": elapsed / steps, "loss": final, "warmup_s": compile_s}


def table(results: dict) -> str:
    """A Markdown table of the rows (tokens/s, MFU against the datasheet peak, windtunnel / peer)."""
    out = [f"Card: {results['card']}, torch {results['torch']}; measured ceilings: bf16 8192^3 matmul "
           f"{results['ceilings']['matmul_tflops'] or 0:.0f} TFLOP/s, device copy {results['ceilings']['copy_gbps'] or 0:.0f} GB/s "
           f"(read + write); MFU against the datasheet's {results['datasheet_tflops']} TFLOP/s (and the measured matmul).",
           "", "| model | N | tokens/step | micro x accum | windtunnel compiled | windtunnel + CUDA graphs | HF Llama compiled | "
           "ratio (best windtunnel / peer) | windtunnel MFU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        def tps(k):
            v = r.get(k, {})
            return f"{v['tokens_per_s'] / 1e6:.2f}M" if "tokens_per_s" in v else v.get("error", "-")[:40]
        best = max((r[k] for k in ("windtunnel", "windtunnel_cudagraphs") if "tokens_per_s" in r.get(k, {})),
                   key=lambda v: v["tokens_per_s"], default={})
        m = (f"{best['mfu_datasheet']:.1%} ({best['mfu_measured_peak']:.1%})" if best.get("mfu_datasheet") else "-")
        ratio = r.get("ratio_windtunnel_over_peer")
        out.append(f"| {r['model']} | {r['N'] / 1e6:.1f}M | {r['tokens_per_step']:,} | {r['micro']} x {r['accum']} | "
                   f"{tps('windtunnel')} | {tps('windtunnel_cudagraphs')} | {tps('peer_hf_llama')} | "
                   f"{'-' if ratio is None else f'{ratio:.2f}'} | {m} |")
    return "\n".join(out) + "\n"


def merge(paths: list[str], out: str) -> None:
    """Join per-size result files (one process per size keeps a crash in one from losing the rest)."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    merged = {**docs[0], "rows": [r for d in docs for r in d["rows"]]}
    Path(out).write_text(json.dumps(merged, indent=1))
    Path(out).with_suffix(".md").write_text(table(merged))
    print(table(merged))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--merge", nargs="+", help="join these result files into --out (and a .md table)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke mode: a tiny model, two steps")
    ap.add_argument("--out", default="throughput.json")
    ap.add_argument("--sizes", default="w9m,w36m,w166m")
    ap.add_argument("--batches", default="16384,262144", help="tokens per step")
    ap.add_argument("--vocab", type=int, default=8192, help="the BPE tokenizer's vocabulary (data=stdlib_bpe)")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    torch.set_float32_matmul_precision("high")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.sizes, args.batches, args.seq, args.vocab, args.steps = "tiny64", "1024,4096", 64, 256, 2
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = ceilings(device)
    datasheet = next((v for k, v in DATASHEET_TFLOPS.items() if k in card), None)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, args.vocab, size=20_000_000 if not args.tiny else 200_000, dtype=np.uint16)
    compile_mode = "default" if device.type == "cuda" else None
    import importlib.util
    have_peer = importlib.util.find_spec("transformers") is not None
    rows = []
    for name in args.sizes.split(","):
        model_cfg = sizing.preset(name, vocab_size=args.vocab, max_seq_len=max(args.seq, 64))
        fpt = sizing.flops_per_token(model_cfg, args.seq)
        for bs in map(int, args.batches.split(",")):
            seqs = bs // args.seq
            micro = min(seqs, {"w9m": 64, "w36m": 32}.get(name, 16))  # sequences per forward pass
            accum = seqs // micro
            batches = TokenBatches(tokens, args.seq, micro, seed=0)
            row = {"model": name, "N": sizing.n_params(model_cfg), "tokens_per_step": bs, "micro": micro,
                   "accum": accum, "flops_per_token": fpt}
            variants = [("windtunnel", windtunnel_step, compile_mode)]
            if device.type == "cuda" and accum == 1:  # what train.compile_mode=auto picks for one micro-batch
                variants.append(("windtunnel_cudagraphs", windtunnel_step, "reduce-overhead"))
            if have_peer:
                variants.append(("peer_hf_llama", peer_step, compile_mode))
            warmup = 3 if device.type == "cuda" else 1
            for label, make, mode in variants:
                try:
                    r = measure(make, model_cfg, batches, device, accum, mode, warmup, args.steps)
                except Exception as err:  # noqa: BLE001 -- a failing variant is reported, not fatal
                    row[label] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                    continue
                tps = bs / r["s_per_step"]
                row[label] = {**r, "tokens_per_s": tps, "mode": mode,
                              "mfu_measured_peak": mfu(tps, fpt, peak["matmul_tflops"]) if peak["matmul_tflops"] else None,
                              "mfu_datasheet": mfu(tps, fpt, datasheet) if datasheet else None}
                torch.cuda.empty_cache() if device.type == "cuda" else None
            best = max((row[k]["tokens_per_s"] for k in row if k.startswith("windtunnel") and "tokens_per_s" in row[k]),
                       default=None)
            if best and "tokens_per_s" in row.get("peer_hf_llama", {}):
                row["ratio_windtunnel_over_peer"] = best / row["peer_hf_llama"]["tokens_per_s"]
            rows.append(row)
            Path(args.out).write_text(json.dumps({"card": card, "torch": torch.__version__, "ceilings": peak,
                                                  "datasheet_tflops": datasheet, "seq_len": args.seq,
                                                  "vocab": args.vocab, "rows": rows}, indent=1))
            print(json.dumps(row), flush=True)
    print(table(json.loads(Path(args.out).read_text())))


if __name__ == "__main__":
    main()
