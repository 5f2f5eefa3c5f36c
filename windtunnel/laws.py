"""Scaling-law forms (pure numpy) and a registry of published reference laws with their units.

Each form is a function of its inputs and named parameters, with its formula in the docstring (the
parameter symbols there are the keys used in every fit's JSON), and a `guess` that seeds a fit.
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


# the laws windtunnel fits (windtunnel/fit), by the CLI's name (windtunnel fit --law NAME) -> FitResult.law
LAW_NAMES = {"batch-size": "batch_size", "batch-size-data": "batch_size_data", "lr": "lr", "loss": "loss",
             "isoflop": "isoflop", "critical-batch": "critical_batch"}


# ----------------------------------------------------------------------------- forms

def power_law(x, a, b):
    """y = a * x^(-b). Batch size vs loss: bs_opt(L) = a / L^b (MiniCPM: a = 1.21e9 tokens, b = 6.24)."""
    return a * np.asarray(x, dtype=float) ** (-b)


def power_law_guess(x, y) -> dict:
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return {"a": float(np.exp(intercept)), "b": float(-slope)}


def log_parabola(lr, L_star, k, log_lr_star):
    """L(lr) = L_star + k (ln lr - log_lr_star)^2: loss vs LR near its optimum lr* = e^log_lr_star (k > 0)."""
    return L_star + k * (np.log(lr) - log_lr_star) ** 2


def log_parabola_guess(lr, loss) -> dict:
    c2, c1, c0 = np.polyfit(np.log(lr), loss, 2)
    if c2 <= 0:  # no interior minimum: seed at the best point
        best = int(np.argmin(loss))
        return {"L_star": float(loss[best]), "k": 1e-3, "log_lr_star": float(np.log(lr[best]))}
    x = -c1 / (2 * c2)
    return {"L_star": float(c0 - c1 ** 2 / (4 * c2)), "k": float(c2), "log_lr_star": float(x)}


def chinchilla(N, D, E, A, B, alpha, beta):
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022). Fitted in the log-sum-exp form
    log L = LSE(a - alpha ln N, b - beta ln D, e) with A = e^a, B = e^b, E = e^e (keeps A, B, E > 0)."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    return E + A * N ** (-alpha) + B * D ** (-beta)


def minicpm_loss(N, D, C_N, alpha, C_D, beta, L0):
    """L(N, D) = C_N N^(-alpha) + C_D D^(-beta) + L0 (MiniCPM section 4.5), N in 1e9 non-embedding
    parameters and D in 1e9 tokens. The same family as Chinchilla's, in other units and symbols."""
    return chinchilla(N, D, L0, C_N, C_D, alpha, beta)


def chinchilla_guess(N, D, L) -> dict:
    return {"E": float(0.8 * np.min(L)), "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}


def compute_optimal(C, A, B, alpha, beta):
    """Chinchilla allocation for a budget of C = 6 N D FLOPs: G = (alpha A / (beta B))^(1/(alpha+beta)),
    N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)^(alpha/(alpha+beta)) / G. Returns (N_opt, D_opt, D/N)."""
    C = np.asarray(C, dtype=float)
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = G * (C / 6) ** (beta / (alpha + beta))
    d_opt = (C / 6) ** (alpha / (alpha + beta)) / G
    return n_opt, d_opt, d_opt / n_opt


def minicpm_allocation(C, C_N, alpha, C_D, beta):
    """MiniCPM's form: N_opt / D_opt = K^2 (C/6)^eta with K = (alpha C_N / (beta C_D))^(1/(alpha+beta)) and
    eta = (beta - alpha)/(alpha + beta); C in 1e18 FLOPs, N and D in 1e9. Returns (N_opt, D_opt, D/N, K^2, eta)."""
    K = (alpha * C_N / (beta * C_D)) ** (1 / (alpha + beta))
    eta = (beta - alpha) / (alpha + beta)
    n_opt, d_opt, ratio = compute_optimal(C, C_N, C_D, alpha, beta)
    return n_opt, d_opt, ratio, K ** 2, eta


def hyper_power_law(c, exponents: dict, **inputs):
    """y = c * prod_i x_i^(e_i): hyperparameter laws in N, D or C (DeepSeek eta = 0.3118 C^-0.125; Step Law
    eta = 1.79 N^-0.713 D^0.307, bs = 0.58 D^0.571). `exponents` maps input name -> e_i."""
    y = c
    for name, e in exponents.items():
        y = y * np.asarray(inputs[name], dtype=float) ** e
    return y


def hyper_power_law_guess(y, **inputs) -> dict:
    X = np.column_stack([np.ones(len(y))] + [np.log(v) for v in inputs.values()])
    coef, *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    return {"c": float(np.exp(coef[0])), **{f"e_{k}": float(e) for k, e in zip(inputs, coef[1:])}}


# ----------------------------------------------------------------------------- reference laws

@dataclass
class ReferenceLaw:
    name: str
    form: str  # "power_law", "chinchilla", "minicpm_loss", "hyper_power_law", "constant"
    params: dict
    units: dict  # what x, y, N, D, C, bs mean (tokens vs sequences, N with or without embeddings)
    source: str
    exponents: dict = field(default_factory=dict)  # hyper_power_law only
    loss_range: tuple = ()  # the losses a loss-indexed law was measured over (x of a power law in L), when stated

    def __call__(self, *args, **inputs):
        if self.form == "power_law":
            return power_law(args[0], **self.params)
        if self.form == "chinchilla":
            return chinchilla(*args, **self.params)
        if self.form == "minicpm_loss":
            return minicpm_loss(*args, **self.params)
        if self.form == "hyper_power_law":
            return hyper_power_law(self.params["c"], self.exponents, **inputs)
        if self.form == "constant":
            return self.params["value"]
        raise ValueError(f"unknown form {self.form}")


_MINICPM_UNITS = {"N": "1e9 non-embedding parameters", "D": "1e9 tokens", "C": "1e18 FLOPs",
                  "L": "per-byte loss on the named eval set"}
REFERENCE: dict[str, ReferenceLaw] = {r.name: r for r in [
    ReferenceLaw("minicpm-batch-size", "power_law", {"a": 1.21e9, "b": 6.24},
                 {"x": "C4 loss, nats/token", "y": "batch size in tokens"},
                 "MiniCPM (arXiv 2404.06395) section 3.2: bs = 1.21e9 / L^6.24",
                 loss_range=(3.3, 5.35)),  # C4 losses of its three panels (minicpm.md 2.1)
    ReferenceLaw("minicpm-lr", "constant", {"value": 0.01},
                 {"y": "muP base Adam LR (hidden matrices get lr / m, m = d_model / 256)"},
                 "MiniCPM section 3.3 / A.1: lr 0.01 optimal at every width under muP"),
    ReferenceLaw("minicpm-loss-average", "minicpm_loss",
                 {"C_N": 7.15e-2, "alpha": 0.29, "C_D": 3.00e-1, "beta": 0.23, "L0": 0.31}, _MINICPM_UNITS,
                 "MiniCPM Fig. 10, average of 5 eval sets (read off the figure; minicpm.md 4.4)"),
    ReferenceLaw("minicpm-loss-code", "minicpm_loss",
                 {"C_N": 3.32e-2, "alpha": 0.37, "C_D": 2.17e-1, "beta": 0.34, "L0": 0.17}, _MINICPM_UNITS,
                 "MiniCPM Fig. 10, Code eval set"),
    ReferenceLaw("chinchilla-hoffmann", "chinchilla",
                 {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
                 {"N": "total parameters", "D": "tokens", "L": "MassiveText train loss, nats/token"},
                 "Hoffmann et al. 2022 (arXiv 2203.15556), Approach 3"),
    ReferenceLaw("chinchilla-epoch", "chinchilla",
                 {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
                 {"N": "total parameters", "D": "tokens", "L": "MassiveText train loss, nats/token"},
                 "Besiroglu et al. 2024 (arXiv 2404.10102), refit of Chinchilla Fig. 4 data"),
    ReferenceLaw("deepseek-lr", "hyper_power_law", {"c": 0.3118}, {"C": "FLOPs (M D, M = non-embedding FLOPs/token)",
                 "y": "peak LR"}, "DeepSeek LLM (arXiv 2401.02954)", {"C": -0.1250}),
    ReferenceLaw("deepseek-batch-size", "hyper_power_law", {"c": 0.2920}, {"C": "FLOPs", "y": "batch in tokens"},
                 "DeepSeek LLM (arXiv 2401.02954)", {"C": 0.3271}),
    ReferenceLaw("steplaw-lr", "hyper_power_law", {"c": 1.79}, {"N": "non-embedding parameters", "D": "tokens",
                 "y": "peak LR"}, "Step Law (arXiv 2503.04715)", {"N": -0.713, "D": 0.307}),
    ReferenceLaw("steplaw-batch-size", "hyper_power_law", {"c": 0.58}, {"D": "tokens", "y": "batch in tokens"},
                 "Step Law (arXiv 2503.04715)", {"D": 0.571}),
    ReferenceLaw("porian-isoflop", "hyper_power_law", {"c": 0.118}, {"C": "FLOPs", "y": "compute-optimal N"},
                 "Porian et al. 2024 (arXiv 2406.19146), tuned RefinedWeb: N* = 0.118 C^0.497 (CI 0.491-0.505)",
                 {"C": 0.497}),
    ReferenceLaw("llama3-isoflop", "hyper_power_law", {"c": 0.29}, {"C": "FLOPs", "y": "compute-optimal tokens"},
                 "Llama 3 (arXiv 2407.21783): D* = 0.29 C^0.53", {"C": 0.53}),
    ReferenceLaw("chinchilla-approach2", "hyper_power_law", {"c": float("nan")}, {"C": "FLOPs", "y": "compute-optimal N"},
                 "Hoffmann et al. 2022, Approach 2: N* ~ C^0.49 (constant not stated)", {"C": 0.49}),
    ReferenceLaw("zhang-critical-batch", "hyper_power_law", {"c": float("nan")},
                 {"N": "parameters", "y": "critical batch in sequences of 512 tokens"},
                 "Zhang et al. 2024 (arXiv 2410.21676): critical batch 745 .. 2533 sequences over 85M .. 1.2B, "
                 "~ N^0.468 (scaling-laws.md; constant not stated)", {"N": 0.468}),
    ReferenceLaw("kaplan-critical-batch", "power_law", {"a": 2e8, "b": 1 / 0.21},
                 {"x": "loss, nats/token", "y": "critical batch in tokens"},
                 "Kaplan et al. 2020: B_crit = B* / L^(1/alpha_B), B* ~ 2e8, alpha_B ~ 0.21 (from memory; "
                 "scaling-laws.md 1.2 marks it unverified)"),
]}

FORMS: dict[str, tuple[Callable, Callable, tuple]] = {
    "power_law": (power_law, power_law_guess, ("a", "b")),
    "log_parabola": (log_parabola, log_parabola_guess, ("L_star", "k", "log_lr_star")),
    "chinchilla": (chinchilla, chinchilla_guess, ("E", "A", "B", "alpha", "beta")),
    "minicpm_loss": (minicpm_loss, None, ("C_N", "alpha", "C_D", "beta", "L0")),
    "hyper_power_law": (hyper_power_law, hyper_power_law_guess, ("c",)),
}
