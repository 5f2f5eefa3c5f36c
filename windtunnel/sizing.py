"""Parameter counts, FLOPs per token, and the named model ladder. Pure arithmetic, no torch.

N is the non-embedding parameter count (MiniCPM's and Kaplan's convention for scaling laws): every
attention/FFN matrix and every RMSNorm gain, without the (tied) token embedding.
"""
import dataclasses

from .config import ConfigError, ModelConfig, TrialConfig, phase_steps, whole_steps

# MiniCPM Table 8 (wind-tunnel shapes: head_dim 64, d_ff = 2.5 d) and Table 2 (final models), see
# shared/docs/minicpm.md sections 2.1 and 5. Tiny CPU sizes use head_dim 32 and a base width of 64 so
# their width multipliers (0.5 to 6) span the range of the paper's ladder.
_MINICPM = dict(dim_model_base=256, max_seq_len=4096)
_TINY = dict(dim_model_base=64, max_seq_len=1024)
LADDER: dict[str, dict] = {
    "tiny32": dict(d_model=32, n_layers=2, n_heads=1, **_TINY),
    "tiny64": dict(d_model=64, n_layers=2, n_heads=2, **_TINY),
    "tiny96": dict(d_model=96, n_layers=3, n_heads=3, **_TINY),
    "tiny128": dict(d_model=128, n_layers=4, n_heads=4, **_TINY),
    "tiny256": dict(d_model=256, n_layers=4, n_heads=8, **_TINY),
    "tiny384": dict(d_model=384, n_layers=6, n_heads=12, **_TINY),
    "w9m": dict(d_model=320, n_layers=8, n_heads=5, **_MINICPM),
    "w36m": dict(d_model=512, n_layers=12, n_heads=8, **_MINICPM),
    "w66m": dict(d_model=640, n_layers=14, n_heads=10, **_MINICPM),
    "w109m": dict(d_model=768, n_layers=16, n_heads=12, **_MINICPM),
    "w166m": dict(d_model=896, n_layers=18, n_heads=14, **_MINICPM),
    "w241m": dict(d_model=1024, n_layers=20, n_heads=16, **_MINICPM),
    "w499m": dict(d_model=1344, n_layers=24, n_heads=21, **_MINICPM),
    "minicpm-1.2b": dict(d_model=1536, n_layers=52, n_heads=24, n_kv_heads=8, **_MINICPM),
    "minicpm-2.4b": dict(d_model=2304, n_layers=40, n_heads=36, **_MINICPM),
}
ALIASES = {"9M": "w9m", "36M": "w36m", "66M": "w66m", "109M": "w109m", "166M": "w166m", "241M": "w241m",
           "499M": "w499m", "1.2B": "minicpm-1.2b", "2.4B": "minicpm-2.4b"}


def preset(name: str, **overrides) -> ModelConfig:
    """The ModelConfig of a ladder entry (or alias such as "2.4B"), with field overrides."""
    key = ALIASES.get(name, name)
    if key not in LADDER:
        raise ConfigError(f"model={name!r} is not in the ladder; use one of "
                          f"{', '.join(list(LADDER) + list(ALIASES))}")
    return ModelConfig(name=key, **{**LADDER[key], **overrides})


def attention_params(m: ModelConfig) -> int:
    q_o = 2 * m.d_model * m.heads * m.head_dim  # W_q: d -> H*hd, W_o: H*hd -> d
    k_v = 2 * m.d_model * m.kv_heads * m.head_dim  # W_k, W_v: d -> KV*hd
    return q_o + k_v


def ffn_params(m: ModelConfig) -> int:
    return 3 * m.d_model * m.ffn_dim  # SwiGLU: gate, up (d -> d_ff) and down (d_ff -> d)


def n_params(m: ModelConfig) -> int:
    """Non-embedding parameters N: blocks (attention, FFN, two RMSNorm gains) plus the final norm."""
    per_block = attention_params(m) + ffn_params(m) + 2 * m.d_model
    return m.n_layers * per_block + m.d_model


def n_embedding_params(m: ModelConfig, vocab_size: int = 0) -> int:
    """Token embedding (tied with the output head, so counted once)."""
    return (vocab_size or m.vocab_size) * m.d_model


def flops_per_token(m: ModelConfig, seq_len: int, vocab_size: int = 0) -> float:
    """Training FLOPs per token (forward + backward = 3x forward).

    6N for the block matrices (norm gains are negligible but kept for exactness of "6N"), 6 d V for the
    tied output head, and 12 L d_attn T for the attention scores and weighted sum (the PaLM / nanoGPT MFU
    convention, counting the full T x T product as the kernels of non-causal attention would).
    """
    d_attn = m.heads * m.head_dim
    head = 6 * m.d_model * (vocab_size or m.vocab_size)
    return 6 * n_params(m) + head + 12 * m.n_layers * d_attn * seq_len


def with_width(m: ModelConfig, d_model: int) -> ModelConfig:
    """The same model at another width, head_dim fixed (heads grow with width, as in the ladder)."""
    heads = max(1, d_model // m.head_dim)
    kv = 0 if m.n_kv_heads == 0 else max(1, heads * m.kv_heads // m.heads)
    return dataclasses.replace(m, d_model=d_model, n_heads=heads, n_kv_heads=kv, name=f"{m.name}-d{d_model}")


def resolve_tokens(cfg: TrialConfig) -> TrialConfig:
    """Fill train.total_tokens from train.tokens_per_param (and the last decay branch), in whole batches."""
    t = cfg.train
    multiple = max([t.tokens_per_param, *t.branch_at_n]) if (t.tokens_per_param or t.branch_at_n) else 0
    if multiple:
        steps = whole_steps(multiple * n_params(cfg.model), t.batch_size_tokens)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, total_tokens=steps * t.batch_size_tokens))
    if t.branch_at_n:  # every decay branch must start after the warmup (each branch keeps it)
        first = min(t.branch_at_n) * n_params(cfg.model)
        warmup = phase_steps(cfg.schedule, cfg.total_steps, t.batch_size_tokens)[0] * t.batch_size_tokens
        if warmup >= first:
            raise ConfigError(f"train.branch_at_n: the first decay branch, at {min(t.branch_at_n):g}N = {first:,.0f} "
                              f"tokens for model={cfg.model.name}, starts before the warmup ends ({warmup:,.0f} tokens); "
                              f"shorten schedule.warmup_tokens / warmup_frac or branch later")
    return cfg


def branch_steps(cfg: TrialConfig) -> dict[int, float]:
    """{start step: multiple of N} of a stable run's decay branches (train.branch_at_n), in whole batches."""
    return {whole_steps(k * n_params(cfg.model), cfg.train.batch_size_tokens): k for k in cfg.train.branch_at_n}


def branch_decay_steps(start: int, decay_frac: float) -> int:
    """The decay of the branch that starts at step `start`: decay_frac of the branch's own length D, where
    start = (1 - decay_frac) D (MiniCPM's WSD: a stable run, then a decay of ~10% of the tokens)."""
    return max(1, round(start * decay_frac / (1 - decay_frac)))


def tokens_trained(cfg: TrialConfig) -> int:
    """Tokens a trial draws from its data stream: its whole run, or with decay branches up to the end of its
    last branch (a branch continues the stable run's stream and decays over decay_frac of its own length)."""
    cfg = resolve_tokens(cfg)
    if not cfg.train.branch_at_n:
        return cfg.train.total_tokens
    last = max(branch_steps(cfg))
    return (last + branch_decay_steps(last, cfg.schedule.decay_frac)) * cfg.train.batch_size_tokens


# ----------------------------------------------------------------------------- memory
# One memory model for `windtunnel launch` (micro-batch and DDP vs FSDP2) and the trainer's check before it
# allocates anything.
BYTES_PER_PARAM = 16  # fp32 weights (4) + grads (4) + AdamW moments (8); bf16 autocast keeps fp32 masters
ACT_BYTES_PER_TOKEN_LAYER = 40  # bf16 activations per token, layer and unit of width (Korthikanti et al.
#                                 2022: 34 s b h for a GPT block with flash attention; SwiGLU's wider FFN ~40)
LOGIT_BYTES_PER_TOKEN_VOCAB = 10  # bf16 logits + their fp32 copy and gradient for the loss


def total_params(m: ModelConfig, vocab_size: int = 0) -> int:
    """Every parameter: non-embedding N plus the (tied) embedding."""
    return n_params(m) + n_embedding_params(m, vocab_size)


def activation_bytes_per_token(m: ModelConfig, vocab_size: int = 0) -> int:
    return (ACT_BYTES_PER_TOKEN_LAYER * m.d_model * m.n_layers
            + LOGIT_BYTES_PER_TOKEN_VOCAB * (vocab_size or m.vocab_size))
