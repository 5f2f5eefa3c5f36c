"""Predict the hyperparameters of a target model from fitted (or reference) laws. No torch.

Chain: the loss the target reaches (given, or from L(N, D)) -> the optimal batch size at that loss
(bs = a / L^b) -> the base LR (muP: the wind tunnel's optimum transfers; else a power law in N) -> per-group
LRs under muP -> a WSD schedule -> a TrialConfig. Each number carries the law it came from and an interval
from the fits' bootstrap draws.
"""
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from . import laws, schedule, sizing
from .compose import compose_record
from .config import ConfigError, ModelConfig, ScheduleConfig, TrialConfig, callable_module, override, to_dict, whole_steps
from .fit import FitResult, coarse_grid_warnings

WARMUP_FRAC = 0.01  # MiniCPM does not state its warmup; 1% of tokens is the common choice
MIN_STEPS = 100  # fewer optimizer steps than this in a predicted run is warned about
DECAY_FRAC = 0.1  # MiniCPM: a decay of ~10% of tokens is enough (minicpm.md 4.3)
# How far a prediction may reach past the data its laws were fitted on before it is refused (--force goes on):
LOSS_FACTOR = 1.25  # a target loss below the lowest fitted loss / 1.25 (or above the highest x 1.25)
REFERENCE_LOSS_FACTOR = 2.0  # for a published law: MiniCPM itself applied its batch law below the losses it measured
SIZE_FACTOR = 100.0  # a target N above 100 x the largest proxy's N (MiniCPM went from 0.036B proxies to 2.4B: 67x)
EXPONENTS = {"batch_size": ("b",), "lr": ("e_N", "e_D"), "loss": ("alpha", "beta"), "batch_size_data": ("b",)}


class NotIdentified(ConfigError):
    """The laws cannot say what the prediction asks; the message lists each reason and how to go on."""


def identification(fits: dict, n: float, loss: float | None) -> tuple[list[str], dict]:
    """Reasons a prediction from these fitted laws would not be supported by their data, and how far it
    extrapolates (target N / largest proxy N, target loss against the fitted losses)."""
    problems, reach = [], {}
    for name, fit in fits.items():
        if not isinstance(fit, FitResult):
            continue
        for key, value in fit.params.items():
            if value is None or not np.isfinite(value):
                problems.append(f"{name} law: {key} = {value} is not a finite number")
        for key in (k for k in EXPONENTS.get(name, ()) if k in fit.params):
            low, high = fit.intervals.get(key) or (None, None)
            if low is not None and low <= 0 <= high:
                problems.append(f"{name} law: {key} = {fit.params[key]:.3g} has the interval [{low:.3g}, {high:.3g}], "
                                f"which includes 0: the data do not identify it")
        for key in ("a", "c", "A", "B", "E"):
            if key in fit.params and fit.params[key] is not None and fit.params[key] <= 0:
                problems.append(f"{name} law: {key} = {fit.params[key]:.3g} is not positive (a non-physical law)")
        sizes = [o["N"] for o in fit.details.get("optima", []) if o.get("N")] or fit.details.get("sizes", [])
        if sizes and name in ("lr", "loss", "batch_size"):
            reach[f"{name}_size_ratio"] = n / max(sizes)
            if n > SIZE_FACTOR * max(sizes):
                problems.append(f"{name} law: the target's N = {n:.3g} is {n / max(sizes):.0f}x the largest fitted "
                                f"size ({max(sizes):.3g}); more than {SIZE_FACTOR:g}x is beyond what it can say")
        losses = [o["loss"] for o in fit.details.get("optima", []) if o.get("bs_opt") and not o.get("flag")]
        if name == "batch_size" and losses and loss is not None:
            reach["batch_size_loss_range"] = [min(losses), max(losses)]
            if not min(losses) / LOSS_FACTOR <= loss <= max(losses) * LOSS_FACTOR:
                problems.append(f"batch_size law: the target loss {loss:.4g} is outside the fitted losses "
                                f"[{min(losses):.4g}, {max(losses):.4g}] by more than a factor {LOSS_FACTOR:g}")
    return problems, reach


@dataclass
class Prediction:
    target: ModelConfig
    tokens: float
    numbers: dict  # name -> {"value", "interval", "source"}
    trial: TrialConfig
    notes: list = field(default_factory=list)
    extrapolation: dict = field(default_factory=dict)  # target N / largest proxy N, fitted loss range
    warnings: list = field(default_factory=list)  # reasons it would have been refused (predicted with --force)

    def to_json(self) -> dict:
        return {"target": {**to_dict(self.target), "N": sizing.n_params(self.target)}, "tokens": self.tokens,
                "predictions": self.numbers, "notes": self.notes, "extrapolation": self.extrapolation,
                "warnings": self.warnings, "trial": to_dict(self.trial)}

    def to_markdown(self) -> str:
        t = self.target
        lines = [f"# Prediction for {t.name} (d_model {t.d_model}, {t.n_layers} layers, "
                 f"N = {sizing.n_params(t):,} non-embedding), {self.tokens:.3g} tokens", "",
                 "| quantity | value | interval | source |", "|---|---|---|---|"]
        for name, v in self.numbers.items():
            iv = v.get("interval") or [None, None]
            shown = "" if iv[0] is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]"
            lines.append(f"| {name} | {v['value']:.4g} | {shown} | {v['source']} |")
        reach = [f"- extrapolation: {k} = {v if not isinstance(v, float) else f'{v:.3g}'}"
                 for k, v in self.extrapolation.items()]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes] + reach) + "\n"


def _number(value: float, draws=None, source: str = "") -> dict:
    draws = np.asarray([d for d in (draws if draws is not None else []) if d is not None and np.isfinite(d)])
    interval = [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))] if len(draws) > 1 else None
    return {"value": float(value), "interval": interval, "source": source}


def _loss_at(fit: FitResult, n: float, d: float) -> tuple[float, np.ndarray]:
    scale = 1e9 if fit.form == "minicpm_loss" else 1.0
    func = laws.FORMS[fit.form][0]
    draws = np.array([func(n / scale, d / scale, **s) for s in fit.samples]) if fit.samples else None
    return float(func(n / scale, d / scale, **fit.params)), draws


def target_model(name: str = "", shape: dict | None = None) -> ModelConfig:
    """A ladder entry by name (e.g. "2.4B"), or a shape given as ModelConfig fields."""
    if shape:
        base = sizing.preset(name) if name else ModelConfig(name="target", dim_model_base=256)
        try:
            model = dataclasses.replace(base, **shape)
        except TypeError as err:
            raise ConfigError(f"--shape: {err}; use ModelConfig fields such as d_model, n_layers, n_heads") from None
        for key in ("d_model", "n_layers", "n_heads", "dim_model_base"):
            value = getattr(model, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--shape {key}={value}: must be a positive number")
        if model.d_model % model.heads:
            raise ConfigError(f"--shape d_model={model.d_model} is not divisible by n_heads={model.heads}")
        return model
    return sizing.preset(name)


def _reachable(target_loss: float, loss, batch_size) -> None:
    """A given target loss no model reaches (at or below a fitted loss law's floor), or one far outside the losses a
    published batch-size law was measured on: refused (--force does not cover it: the batch would be meaningless)."""
    if isinstance(loss, FitResult):
        floor = loss.params.get("E", loss.params.get("L0"))
        if floor is not None and target_loss <= floor:
            raise ConfigError(f"--target-loss {target_loss:g} is at or below the loss law's floor "
                              f"{'E' if 'E' in loss.params else 'L0'} = {floor:.4g}: no model reaches it; give a loss "
                              f"above the floor (the law predicts the target's own from N and D without --target-loss)")
    if isinstance(batch_size, laws.ReferenceLaw) and batch_size.loss_range:
        low, high = batch_size.loss_range
        if not low / REFERENCE_LOSS_FACTOR <= target_loss <= high * REFERENCE_LOSS_FACTOR:
            raise ConfigError(f"--target-loss {target_loss:g} is outside what {batch_size.name} can say: it was "
                              f"measured at losses {low:g}-{high:g} ({batch_size.units.get('x', 'its loss')}); more "
                              f"than a factor {REFERENCE_LOSS_FACTOR:g} away is beyond it")


def _checked_inputs(tokens: float, compute: float, target_loss: float, seq_len) -> None:
    """One line for each input that cannot describe a training run."""
    for flag, value in (("--tokens", tokens), ("--compute", compute), ("--target-loss", target_loss)):
        if value is None or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{flag} {value}: must be a finite, positive number (0: not given)")
    if not (isinstance(seq_len, (int, float)) and math.isfinite(seq_len) and seq_len >= 1 and float(seq_len).is_integer()):
        raise ConfigError(f"--seq-len {seq_len}: must be a whole number of tokens >= 1 (e.g. 4096)")


def shape_warnings(proxy: dict, target: ModelConfig) -> list[str]:
    """Where the target's muP base width or depth differs from the proxies' the LR law was fitted on: muP transfers
    the LR across width at a fixed base width (m = d_model / dim_model_base), not across a changed base or depth."""
    notes = []
    for key, label, why in (("dim_model_base", "muP base width",
                             "the base LR belongs to the base width it was tuned at; set dim_model_base to theirs"),
                            ("n_layers", "depth", "muP transfers the LR across width, not depth; MiniCPM keeps the "
                                                  "proxies' depth rule (scale_depth / sqrt(n_layers)), so check it "
                                                  "with proxies of the target's depth")):
        values = proxy.get(key) or []
        mine = getattr(target, key)
        if values and mine not in values:
            notes.append(f"WARNING: the LR law was fitted on proxies of {label} {', '.join(map(str, values))}; the "
                         f"target's is {mine}: {why}")
    return notes


def predict(target: ModelConfig, *, tokens: float = 0, compute: float = 0, target_loss: float = 0,
            batch_size: FitResult | laws.ReferenceLaw | None = None, lr: FitResult | laws.ReferenceLaw | None = None,
            loss: FitResult | None = None, seq_len: int = 4096, seed: int = 0, force: bool = False) -> Prediction:
    """Predict loss, batch size, LRs and schedule for `target` trained on `tokens` (or a FLOP budget
    `compute` = 6 N D with N non-embedding). `target_loss` overrides the loss law (MiniCPM picks the batch
    size for the loss it expects to reach). A fitted law that its data do not identify (an exponent's interval
    includes 0, a non-physical constant) or a target too far outside its data raises NotIdentified with every
    reason; force=True goes on and records them as warnings in the prediction."""
    _checked_inputs(tokens, compute, target_loss, seq_len)
    n = sizing.n_params(target)
    if tokens <= 0 and compute > 0:
        tokens = compute / (6 * n)
    if tokens <= 0:
        raise ConfigError("give the target's token budget (--tokens) or compute budget (--compute)")
    if tokens < seq_len:
        raise ConfigError(f"--tokens {tokens:g} is less than one sequence of --seq-len {seq_len}: not a training run")
    numbers, notes = {}, []
    rng = np.random.default_rng(seed)

    if target_loss > 0:
        L, L_draws = target_loss, None
        numbers["loss"] = _number(L, None, "given (--target-loss)")
    elif isinstance(loss, FitResult):
        L, L_draws = _loss_at(loss, n, tokens)
        numbers["loss"] = _number(L, L_draws, f"{loss.form} loss law L(N, D) at N={n:.3g}, D={tokens:.3g}")
    else:
        raise ConfigError("the batch-size law needs the loss the target will reach: give --target-loss or a fitted "
                          "loss law (windtunnel fit ... --law loss)")

    if target_loss > 0:
        _reachable(target_loss, loss, batch_size)
    problems, reach = identification({"batch_size": batch_size, "lr": lr, "loss": loss}, n, L)
    if problems and not force:
        raise NotIdentified("the prediction is refused: " + "; ".join(problems) + ". Fix the sweep (more sizes, "
                            "longer runs, a wider grid) or pass --force to predict anyway with these warnings recorded")
    notes += [f"WARNING (--force): {p}" for p in problems]
    if isinstance(batch_size, FitResult):
        a, b = batch_size.params["a"], batch_size.params["b"]
        pairs = batch_size.samples
        Ls = L_draws if L_draws is not None and len(L_draws) else np.full(len(pairs), L)
        bs_draws = [s["a"] / rng.choice(Ls) ** s["b"] for s in pairs]
        source = f"fitted batch-size law a={a:.4g}, b={b:.4g} at L={L:.4g}"
        fitted = [o["loss"] for o in batch_size.details.get("optima", []) if o.get("bs_opt") and not o.get("flag")]
        if fitted and not min(fitted) <= L <= max(fitted):
            notes.append(f"L={L:.4g} lies outside the losses the batch-size law was fitted on "
                         f"[{min(fitted):.4g}, {max(fitted):.4g}]: the batch size is an extrapolation (as MiniCPM's "
                         f"own hand-off to 2.4B was); losses must be in the fit's units (tokenizer, eval set)")
    elif isinstance(batch_size, laws.ReferenceLaw):
        a, b = batch_size.params["a"], batch_size.params["b"]
        bs_draws = [a / x ** b for x in L_draws] if L_draws is not None else None
        source = f"reference {batch_size.name} ({batch_size.source}) at L={L:.4g}"
    else:
        raise ConfigError("no batch-size law: give fits with a batch_size law or --reference minicpm")
    bs_tokens = a / L ** b
    if L_draws is None and isinstance(batch_size, laws.ReferenceLaw):
        notes.append("the reference batch-size law carries no interval; it was fitted on C4 nats/token (MiniCPM)")
    numbers["batch_size_tokens"] = _number(bs_tokens, bs_draws, source)
    if bs_tokens < seq_len / 2:  # rounding it up to one sequence would hide a batch the law did not predict
        short = (f"the predicted batch ({bs_tokens:.3g} tokens) is less than half a sequence of --seq-len {seq_len}: "
                 f"a batch this sequence length cannot hold; check --seq-len and the target loss")
        if bs_tokens < 1 or not force:
            raise NotIdentified(short + ("" if bs_tokens < 1 else "; --force rounds it up to one sequence"))
        problems.append(short)
        notes.append(f"WARNING (--force): {short}")
    seqs = max(1, round(bs_tokens / seq_len))
    numbers["batch_size_sequences"] = _number(seqs, [max(1, round(x / seq_len)) for x in (bs_draws or [])],
                                              f"batch_size_tokens / seq_len {seq_len}, rounded")

    if isinstance(lr, FitResult) and lr.form in ("hyper_power_law", "step_law"):
        p = lr.params
        base_lr = p.get("c", 1.0) * n ** p.get("e_N", 0.0) * tokens ** p.get("e_D", 0.0)
        draws = [s.get("c", 1.0) * n ** s.get("e_N", 0.0) * tokens ** s.get("e_D", 0.0) for s in lr.samples]
        numbers["lr"] = _number(base_lr, draws or None, f"fitted lr* = c N^e_N{' D^e_D' if 'e_D' in p else ''} "
                                                        f"at N={n:.3g}, D={tokens:.3g}")
    elif isinstance(lr, FitResult):
        base_lr = lr.params["lr_star"]
        numbers["lr"] = {**_number(base_lr, None, "fitted LR optimum, transferred across width (muP)"),
                         "interval": lr.intervals.get("lr_star")}
    elif isinstance(lr, laws.ReferenceLaw):
        base_lr = lr.params["value"]
        numbers["lr"] = _number(base_lr, None, f"reference {lr.name} ({lr.source})")
    else:
        raise ConfigError("no LR law: give fits with an lr law or --reference minicpm")
    if isinstance(lr, FitResult):  # an optimum read off a coarse LR grid is known to about half a step only
        main = lr.details.get("parametrization", "")
        notes += [f"LR: {w}" for w in coarse_grid_warnings([c for c in lr.details.get("optima", [])
                                                            if c["param"] == main])]
        notes += shape_warnings(lr.details.get("proxy_shape") or {}, target)
    m = target.width_mult
    numbers["lr_hidden"] = _number(base_lr / m, None, f"muP: lr / m, m = {target.d_model}/{target.dim_model_base}"
                                   if target.parametrization == "mup" else "SP: one LR")
    numbers["lr_embedding"] = _number(base_lr, None, "muP: embedding and norms keep the base LR")

    batch = seqs * seq_len
    steps = whole_steps(tokens, batch)
    total = steps * batch
    decay = DECAY_FRAC * total
    numbers["steps"] = _number(steps, None, "tokens / batch")
    if steps < MIN_STEPS:  # e.g. a law fitted on another corpus's loss scale read at this one's loss
        notes.append(f"WARNING: only {steps} optimizer steps: a {batch:.4g}-token batch for {total:.4g} tokens leaves "
                     f"the warmup and the decay a few steps each; check the batch law's units and the loss it is read "
                     f"at (a law fitted on another corpus or tokenizer does not carry its losses over)")
    numbers["warmup_tokens"] = _number(round(WARMUP_FRAC * total), None, "1% of tokens (MiniCPM does not state it)")
    numbers["decay_tokens"] = _number(round(decay), None, "WSD decay = 10% of tokens (MiniCPM 4.3)")
    half_life = round(schedule.half_life_tokens(ScheduleConfig(), total))
    numbers["half_life_tokens"] = _number(half_life, None, f"exp decay half-life = schedule.half_life_frac = "
                                                           f"{ScheduleConfig().half_life_frac:g} of tokens")
    trial = compose_record({"name": f"{target.name}-predicted", "model": to_dict(target)}, [
        override("optim.lr", float(base_lr)), "schedule.kind=wsd", "schedule.decay_kind=exp",
        override("schedule.warmup_tokens", int(numbers["warmup_tokens"]["value"])),
        override("schedule.decay_tokens", int(numbers["decay_tokens"]["value"])),
        override("schedule.half_life_tokens", half_life), override("train.total_tokens", int(total)),
        override("train.batch_size_tokens", int(batch)), override("train.seq_len", seq_len),
        "train.micro_batch_size=1", "train.eval_points=30",
        *([override("model.max_seq_len", seq_len)] if target.max_seq_len < seq_len else [])])
    return Prediction(target=target, tokens=float(total), numbers=numbers, trial=trial, notes=notes,
                      extrapolation=reach, warnings=problems)


callable_module(__name__, predict)
