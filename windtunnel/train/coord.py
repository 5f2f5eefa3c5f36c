"""The coordinate check (muP paper section 6, microsoft/mup's `get_coord_data`): train each width a few AdamW
steps on one fixed batch and record the mean |activation| of every block, attention and FFN output and the
logits. Under muP each stays flat across width; under SP they grow with it. plot.coord_check draws the table."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig, OptimConfig
from ..model import Transformer, build_optimizer

if TYPE_CHECKING:  # pandas loads with the table (a training process does not import it)
    import pandas as pd


def _watched(name: str) -> bool:
    return name.startswith("blocks.") and (name.count(".") == 1 or name.endswith((".attn", ".ffn")))


def coord_check(widths=(32, 64, 128, 256), parametrizations=("mup", "sp"), *, steps: int = 5, lr: float = 0.03,
                seeds: int = 3, base: int = 32, n_layers: int = 2, head_dim: int = 16, vocab: int = 256,
                batch: int = 8, seq_len: int = 32) -> pd.DataFrame:
    """Rows (parametrization, width, seed, step, module, mean_abs): mean |output| of each watched module on the
    fixed batch after 0 ... `steps` AdamW steps (weight decay 0, the same batch every step, as in the muP
    paper's check), per seed. base: the muP base width (muP and SP coincide there)."""
    tokens = torch.randint(0, vocab, (batch, seq_len + 1), generator=torch.Generator().manual_seed(1234))
    x, y = tokens[:, :-1], tokens[:, 1:]  # (batch, seq_len) inputs and next-token targets
    rows = []
    for param in parametrizations:
        for width in widths:
            cfg = ModelConfig(d_model=width, n_layers=n_layers, n_heads=max(1, width // head_dim), vocab_size=vocab,
                              dim_model_base=base, parametrization=param, max_seq_len=max(64, seq_len))
            for seed in range(seeds):
                torch.manual_seed(seed)
                model = Transformer(cfg)
                opt = build_optimizer(model, OptimConfig(lr=lr, weight_decay=0.0))
                for step in range(steps + 1):
                    stats, hooks = {}, []
                    for name, module in model.named_modules():
                        if _watched(name):
                            hooks.append(module.register_forward_hook(
                                lambda mod, inp, out, name=name: stats.__setitem__(name, out.abs().mean().item())))
                    with torch.no_grad():
                        stats["logits"] = model(x).abs().mean().item()
                    for h in hooks:
                        h.remove()
                    rows += [dict(parametrization=param, width=width, seed=seed, step=step, module=m, mean_abs=v)
                             for m, v in stats.items()]
                    if step < steps:
                        loss = model(x, y)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
    import pandas as pd
    return pd.DataFrame(rows)
