"""A decoder-only transformer in MiniCPM's style, in muP or standard parametrization.

RMSNorm pre-norm, RoPE, SwiGLU FFN, grouped-query attention through SDPA (flash on GPU), tied input and
output embedding. Every muP rule is fenced by a `### muP:` comment so a reviewer can grep them all:

  rule                              muP (m = d_model / dim_model_base)    SP (same constants)
  embedding output                  x scale_emb                           x scale_emb
  residual branch                   x scale_depth / sqrt(n_layers)        x scale_depth / sqrt(n_layers)
  logits                            W_emb (h / m)                         W_emb h
  attention scores                  1 / sqrt(head_dim) (head_dim fixed)   1 / sqrt(head_dim)
  hidden matrix init std            init_std / sqrt(m)                    init_std
  embedding init std                init_std                              init_std
  norm gains                        1                                     1
  hidden matrix Adam LR             lr / m                                lr
  embedding and norm Adam LR        lr                                    lr
  weight decay                      matrices only; hidden x m if wd_rule="mup"

SP is the muP code with m = 1 everywhere (ModelConfig.width_mult), so the two are identical at base width.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, OptimConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # (..., d) -> (..., d), normalised in fp32
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_table(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (max_len, head_dim / 2) for rotary embeddings (Llama's rotate-half layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x, cos, sin):
    """x: (B, H, T, hd); cos, sin: (T, hd/2). Rotates the pairs (x[i], x[i + hd/2])."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x, cos, sin):  # x: (B, T, d)
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.wv(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv != self.n_heads:  # GQA: each kv head serves n_heads / n_kv query heads
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        ### muP: scores use 1/sqrt(head_dim) (SDPA's default); head_dim is fixed across widths, and
        ### MiniCPM applies no attention-softmax scaling (minicpm.md 1.2).
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x):  # (B, T, d) -> (B, T, d) via (B, T, d_ff)
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = FeedForward(cfg)
        ### muP: every residual branch x scale_depth / sqrt(n_layers) (MiniCPM, Tensor Programs VI)
        self.branch_scale = cfg.scale_depth / math.sqrt(cfg.n_layers)

    def forward(self, x, cos, sin):  # (B, T, d) -> (B, T, d)
        x = x + self.branch_scale * self.attn(self.attn_norm(x), cos, sin)
        return x + self.branch_scale * self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (>0) before building the model")
        self.cfg = cfg
        self.width_mult = cfg.width_mult  # m; exactly 1.0 under SP
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        cos, sin = rope_table(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_stds: dict[str, float] = {}
        self.reset_parameters()

    def is_hidden_matrix(self, name: str, p: nn.Parameter) -> bool:
        """Width -> width matrices (attention and FFN): the tensors muP scales. Embedding and norms are not."""
        return p.ndim == 2 and not name.startswith("embed.")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Init from the rules, recording each tensor's std in self.init_stds (0 marks ones)."""
        for name, p in self.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)  # norm gains
                self.init_stds[name] = 0.0
                continue
            std = self.cfg.init_std
            if self.is_hidden_matrix(name, p):
                ### muP: hidden matrix init std = init_std / sqrt(m)
                std = self.cfg.init_std / math.sqrt(self.width_mult)
            p.normal_(0.0, std)
            self.init_stds[name] = std

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """AdamW groups; each carries lr_scale (the trainer sets lr = base_lr * factor(step) * lr_scale)."""
        m = self.width_mult
        hidden, embed, norms = [], [], []
        for name, p in self.named_parameters():
            (norms if p.ndim == 1 else hidden if self.is_hidden_matrix(name, p) else embed).append(p)
        ### muP: hidden-matrix Adam LR = lr / m; embedding (also the tied readout) and norms keep lr.
        ### Weight decay: matrices only. wd_rule "coupled" keeps torch AdamW's lr*wd coupling with one wd
        ### (ForgeTrain's MiniCPM4 engine); "mup" multiplies the hidden wd by m so lr*wd is width-free
        ### (microsoft/mup MuAdamW; mup.md 1.2 and 3.3).
        hidden_wd = optim.weight_decay * (m if optim.wd_rule == "mup" else 1.0)
        groups = [dict(name="hidden", params=hidden, lr_scale=1.0 / m, weight_decay=hidden_wd),
                  dict(name="embedding", params=embed, lr_scale=1.0, weight_decay=optim.weight_decay),
                  dict(name="norm", params=norms, lr_scale=1.0, weight_decay=0.0)]
        return [g for g in groups if g["params"]]

    def hidden_states(self, idx):
        """idx: (B, T) token ids -> final normed hidden states (B, T, d)."""
        T = idx.shape[1]
        ### muP: embedding output x scale_emb
        h = self.embed(idx) * self.cfg.scale_emb  # (B, T, d)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.norm(h)

    def forward(self, idx, targets=None, per_row: bool = False):
        """idx, targets: (B, T). Returns logits (B, T, V), or the mean next-token loss when targets given: a scalar,
        or (B,) one per sequence when per_row (held-out evals: the standard error over windows)."""
        h = self.hidden_states(idx)
        ### muP: readout through the tied embedding from h / m (m = 1 under SP)
        logits = F.linear(h / self.width_mult, self.embed.weight)  # (B, T, V)
        if targets is None:
            return logits
        if per_row:
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(
                targets.shape).mean(1)  # (B,)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def build_optimizer(model: Transformer, optim: OptimConfig, fused: bool = False) -> torch.optim.AdamW:
    groups = model.param_groups(optim)
    for g in groups:
        g["lr"] = optim.lr * g["lr_scale"]
    kwargs = dict(fused=True) if fused else {}
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps, **kwargs)
