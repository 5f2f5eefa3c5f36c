"""Law forms and the reference registry against published numbers."""
import numpy as np
import pytest

from windtunnel import laws


def test_minicpm_batch_size_law_reproduces_the_paper():
    bs = laws.REFERENCE["minicpm-batch-size"]
    assert bs(3.5) == pytest.approx(4.87e5, rel=0.01)  # minicpm.md 2.2: L=3.5 -> 487k, L=5.4 -> 32.6k
    assert bs(5.4) == pytest.approx(3.26e4, rel=0.01)
    assert bs(2.5) == pytest.approx(3.98e6, rel=0.01)
    assert bs.units["y"] == "batch size in tokens"


def test_chinchilla_allocation_matches_epoch_refit():
    # scaling-laws data README: the refit gives N_opt 7.3e10, D_opt 1.31e12, D/N 17.9 at C = 5.76e23
    n, d, ratio = laws.compute_optimal(5.76e23, A=477.83, B=2143.40, alpha=0.34731, beta=0.36717)
    assert n == pytest.approx(7.3e10, rel=0.02) and d == pytest.approx(1.31e12, rel=0.02)
    assert ratio == pytest.approx(17.9, rel=0.01) and 6 * n * d == pytest.approx(5.76e23)


def test_minicpm_allocation_average_fit():
    ref = laws.REFERENCE["minicpm-loss-average"].params
    n, d, ratio, k2, eta = laws.minicpm_allocation(1e3, ref["C_N"], ref["alpha"], ref["C_D"], ref["beta"])
    # minicpm.md 4.4: K^2 ~ 0.01; recomputed from the rounded constants, D/N = 183.9 at C = 1e21 FLOPs
    assert k2 == pytest.approx(0.0098, abs=0.0005) and eta == pytest.approx(-0.115, abs=0.001)
    assert ratio == pytest.approx(183.9, rel=0.01) and n / d == pytest.approx(k2 * (1e3 / 6) ** eta)


def test_lse_form_equals_direct_form():
    N, D = np.array([1e8, 1e9]), np.array([1e10, 2e11])
    p = dict(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    direct = laws.chinchilla(N, D, **p)
    lse = np.exp(np.logaddexp(np.logaddexp(np.log(p["A"]) - p["alpha"] * np.log(N),
                                           np.log(p["B"]) - p["beta"] * np.log(D)), np.log(p["E"])))
    assert np.allclose(direct, lse, rtol=1e-12)
    assert laws.minicpm_loss(1.0, 1.0, C_N=0.1, alpha=0.3, C_D=0.2, beta=0.2, L0=0.3) == pytest.approx(0.6)


def test_hyperparameter_power_laws():
    assert laws.REFERENCE["deepseek-lr"](C=1e17) == pytest.approx(2.3e-3, rel=0.02)  # scaling-laws.md 1.3
    assert laws.REFERENCE["deepseek-batch-size"](C=1e20) == pytest.approx(1.02e6, rel=0.02)
    assert laws.REFERENCE["steplaw-batch-size"](D=2e9) == pytest.approx(1.19e5, rel=0.02)
    y = laws.hyper_power_law(2.0, {"N": -0.5, "D": 0.3}, N=np.array([1e6, 4e6, 1e7]), D=np.array([1e9, 1e8, 3e9]))
    guess = laws.hyper_power_law_guess(y, N=np.array([1e6, 4e6, 1e7]), D=np.array([1e9, 1e8, 3e9]))
    assert guess == pytest.approx({"c": 2.0, "e_N": -0.5, "e_D": 0.3}, rel=1e-9)


def test_guesses_recover_exact_data():
    x = np.array([3.0, 3.5, 4.0, 5.0])
    assert laws.power_law_guess(x, laws.power_law(x, 1.21e9, 6.24)) == pytest.approx({"a": 1.21e9, "b": 6.24})
    lr = 2.0 ** np.arange(-10, -3)
    g = laws.log_parabola_guess(lr, laws.log_parabola(lr, 3.0, 0.05, np.log(0.01)))
    assert g == pytest.approx({"L_star": 3.0, "k": 0.05, "log_lr_star": np.log(0.01)})
