import pytest

from windtunnel.config import ModelConfig
from windtunnel.model import Transformer
from windtunnel.sizing import LADDER, flops_per_token, n_embedding_params, n_params, preset, with_width


def test_minicpm_final_models_match_the_paper():
    assert n_params(preset("1.2B")) == 1_247_442_432
    assert n_params(preset("2.4B")) == 2_442_057_984


def test_table8_shapes_are_11_5_d2_L_plus_norms():
    for name in ("w9m", "w36m", "w66m", "w109m", "w166m", "w241m", "w499m"):
        m = preset(name)
        assert m.head_dim == 64 and m.ffn_dim == round(2.5 * m.d_model)
        assert n_params(m) == round(11.5 * m.d_model ** 2 * m.n_layers) + 2 * m.d_model * m.n_layers + m.d_model
    assert n_params(preset("9M")) / 1e9 == pytest.approx(0.009, abs=5e-4)
    assert n_params(preset("499M")) / 1e9 == pytest.approx(0.499, abs=5e-4)


@pytest.mark.parametrize("shape", [
    dict(d_model=64, n_layers=2, n_heads=2, vocab_size=256),
    dict(d_model=96, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=300),
    dict(d_model=128, n_layers=1, n_heads=4, d_ff=200, vocab_size=1000),
    dict(d_model=48, n_layers=2, n_heads=3, n_kv_heads=1, ffn_mult=4.0, vocab_size=77),
])
def test_formula_equals_module_count(shape):
    cfg = ModelConfig(**shape)
    model = Transformer(cfg)
    emb = model.embed.weight.numel()
    assert emb == n_embedding_params(cfg)
    assert sum(p.numel() for p in model.parameters()) - emb == n_params(cfg)


def test_flops_per_token_by_hand():
    m = ModelConfig(d_model=128, n_layers=4, n_heads=4, vocab_size=256)
    # per block: attention 4 * 128^2 = 65536, FFN 3 * 128 * 320 = 122880, norms 256 -> 188672; x4 + 128
    n = 4 * (65536 + 122880 + 256) + 128
    assert n_params(m) == n == 754_816
    expected = 6 * n + 6 * 128 * 256 + 12 * 4 * 128 * 512
    assert flops_per_token(m, seq_len=512) == expected == 7_871_232  # 4,528,896 + 196,608 + 3,145,728


def test_ladder_widths_and_with_width():
    assert preset("w9m").width_mult == 1.25 and preset("2.4B").width_mult == 9
    wide = with_width(preset("tiny128"), 512)
    assert (wide.n_heads, wide.head_dim, wide.n_layers) == (16, 32, 4)
    assert len(LADDER) >= 13
