"""muP correctness: base-width identity with SP, the parameter-group oracle, the coordinate check."""
import math

import pytest
import torch
import torch.nn.functional as F

from windtunnel.config import ModelConfig, OptimConfig
from windtunnel.model import Transformer, build_optimizer
from windtunnel.train import coord_check


def small(d_model=64, parametrization="mup", base=64, **kw):
    return ModelConfig(d_model=d_model, n_layers=2, n_heads=max(1, d_model // 16), vocab_size=256,
                       dim_model_base=base, parametrization=parametrization, max_seq_len=64, **kw)


def groups_by_param(model, optim):
    """param name -> (lr, weight decay) of the AdamW group holding it."""
    opt = build_optimizer(model, optim)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_mup_equals_sp_at_base_width():
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    mup = Transformer(small(64, "mup", base=64))
    torch.manual_seed(7)
    sp = Transformer(small(64, "sp", base=64))
    for (n1, p1), (n2, p2) in zip(mup.named_parameters(), sp.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert torch.equal(mup(x), sp(x))
    optim = OptimConfig(lr=0.02, weight_decay=0.1, wd_rule="mup")
    assert groups_by_param(mup, optim) == groups_by_param(sp, optim)


@pytest.mark.parametrize("m", [0.5, 2, 8])
@pytest.mark.parametrize("wd_rule", ["coupled", "mup"])
def test_param_group_oracle(m, wd_rule):
    """Every tensor's LR, weight decay and init std follow the rules of minicpm.md 1.2 exactly."""
    base = 64
    cfg = small(int(base * m), "mup", base=base, init_std=0.1)
    torch.manual_seed(0)
    model = Transformer(cfg)
    lr, wd = 0.01, 0.1
    got = groups_by_param(model, OptimConfig(lr=lr, weight_decay=wd, wd_rule=wd_rule))
    hidden_suffixes = ("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w_gate.weight", "w_up.weight",
                       "w_down.weight")
    n_hidden = 0
    for name, p in model.named_parameters():
        if name.endswith(hidden_suffixes):
            n_hidden += 1
            want = (lr / m, wd * (m if wd_rule == "mup" else 1.0), 0.1 / math.sqrt(m))
        elif name == "embed.weight":
            want = (lr, wd, 0.1)
        else:
            assert name.endswith("norm.weight"), name
            want = (lr, 0.0, 0.0)
            assert torch.equal(p, torch.ones_like(p))
        assert got[name][0] == pytest.approx(want[0], rel=1e-12), name
        assert got[name][1] == pytest.approx(want[1], rel=1e-12), name
        assert model.init_stds[name] == pytest.approx(want[2], rel=1e-12), name
        if want[2] > 0 and p.numel() >= 4096:  # the recorded std is the one actually drawn
            assert p.std().item() == pytest.approx(want[2], rel=0.05), name
    assert n_hidden == 7 * cfg.n_layers


def test_sp_has_one_lr_and_width_free_init():
    model = Transformer(small(256, "sp", base=64))
    got = groups_by_param(model, OptimConfig(lr=0.01, weight_decay=0.1))
    assert {v[0] for v in got.values()} == {0.01}
    assert {s for s in model.init_stds.values() if s} == {0.1}


def test_logits_are_readout_over_m():
    torch.manual_seed(0)
    model = Transformer(small(256, "mup", base=64))
    x = torch.randint(0, 256, (2, 16))
    expected = F.linear(model.hidden_states(x) / 4.0, model.embed.weight)
    assert torch.allclose(model(x), expected, atol=0, rtol=0)


def test_gqa_equals_mha_with_shared_kv_heads():
    """Grouped-query attention = MHA whose k/v weights repeat each kv head for its query group."""
    torch.manual_seed(0)
    gqa = Transformer(small(64, n_kv_heads=2))  # 4 query heads, 2 kv heads of dim 16
    mha = Transformer(small(64))
    state = gqa.state_dict()
    for key in list(state):
        if key.endswith(("wk.weight", "wv.weight")):
            w = state[key].view(2, 16, 64).repeat_interleave(2, dim=0)  # (kv, hd, d) -> (H, hd, d)
            state[key] = w.reshape(64, 64)
    mha.load_state_dict(state)
    x = torch.randint(0, 256, (2, 24))
    assert torch.allclose(gqa(x), mha(x), atol=1e-5)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = Transformer(small(64))
    x = torch.randint(0, 256, (1, 20))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-6)
    assert not torch.allclose(model(x)[0, 10:], model(y)[0, 10:], atol=1e-3)


# ----------------------------------------------------------------------------- coordinate check

WIDTHS = (32, 64, 128, 256)  # 8x apart; base 32


def width_ratios(table, parametrization: str) -> dict:
    """max/min over widths of the seed-averaged mean |activation| after the last step, per module."""
    last = table[(table["parametrization"] == parametrization) & (table["step"] == table["step"].max())]
    per_width = last.groupby(["module", "width"], sort=False)["mean_abs"].mean()
    return {m: float(g.max() / g.min()) for m, g in per_width.groupby(level=0, sort=False)}


def test_coordinate_check_mup_flat_sp_blows_up():
    table = coord_check(WIDTHS, steps=5, lr=0.03, seeds=3, base=32)
    mup, sp = width_ratios(table, "mup"), width_ratios(table, "sp")
    print("coord-check max/min across widths", WIDTHS, "\n mup:", mup, "\n sp:", sp)
    assert len(mup) == 7  # 2 blocks x (block, attn, ffn) + logits
    assert max(mup.values()) < 2.0, mup  # muP: every module within a 2x band across 8x width
    # negative control: SP fails the same band, on every block output and by a wide margin on some
    assert all(sp[k] > 2.0 for k in sp if k != "logits"), sp
    assert max(sp.values()) > 8.0, sp
