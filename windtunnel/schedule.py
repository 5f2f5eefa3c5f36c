"""The learning-rate factor as a pure function of the step (multiply by the base LR and a group's lr_scale).

Step s is the 0-based index of the optimizer update that uses the factor. With W warmup steps, T total
steps and a WSD decay of D steps starting at S = T - D:

  warmup    s < W:        (s + 1) / W                      (linear, never exactly 0)
  wsd       W <= s < S:   1                                (stable)
            S <= s:       g(p), p = (s - S) / D            decay shapes g below
  cosine    W <= s:       floor + (1 - floor) * (1 + cos(pi * (s - W) / (T - W))) / 2   (floor 0.1 = MiniCPM's baseline)
  constant  W <= s:       1

Decay shapes g: linear 1 - p; cosine (1 + cos(pi p)) / 2; 1-sqrt 1 - sqrt(p) (Hagele et al. 2024) --
these end at 0 and a floor blends in as floor + (1 - floor) g; exp 0.5 ** ((s - S) / H) with half-life H
(MiniCPM-2.4B: H = 5000 steps = 20B tokens), which the floor clamps from below. Past T every kind holds
its end value, so a run may be extended.
"""
import math
from dataclasses import dataclass, replace

from .config import ScheduleConfig, TrialConfig, override, phase_steps


@dataclass
class SchedulePlan:
    """A ScheduleConfig resolved into steps for one run."""
    kind: str
    decay_kind: str
    total: int  # T, optimizer steps of the run
    warmup: int  # W
    decay_start: int  # S = T - D (wsd); T otherwise
    half_life: float  # H in steps (exp decay)
    floor: float  # min factor after warmup

    @property
    def decays(self) -> bool:
        """True when the LR decays within the run (cosine, or a WSD decay that starts before the end)."""
        return self.kind == "cosine" or self.decay_start < self.total


def default_floor(cfg: ScheduleConfig) -> float:
    """min_factor < 0 means "the kind's default": 0.1 for cosine (the paper's baseline), 0 otherwise."""
    if cfg.min_factor >= 0:
        return cfg.min_factor
    return 0.1 if cfg.kind == "cosine" else 0.0


def half_life_tokens(cfg: ScheduleConfig, total_tokens: int) -> float:
    """The exp decay's half-life in tokens: schedule.half_life_tokens, else schedule.half_life_frac of the run's
    tokens. The one rule for every run: a trial, a decay branch of a stable run, a launched decay, a
    prediction (each pins it in tokens with this function, so it does not change with the run's length)."""
    return cfg.half_life_tokens if cfg.half_life_tokens > 0 else cfg.half_life_frac * total_tokens


def plan(cfg: ScheduleConfig, total_steps: int, batch_size_tokens: int) -> SchedulePlan:
    """Resolve lengths given as fractions of the run or in tokens (tokens win when > 0) into steps; a warmup
    may also be given in steps (wins over both): config.phase_steps, the one rule."""
    warmup, decay = phase_steps(cfg, total_steps, batch_size_tokens)
    half_life = half_life_tokens(cfg, total_steps * batch_size_tokens) / batch_size_tokens
    return SchedulePlan(kind=cfg.kind, decay_kind=cfg.decay_kind, total=total_steps, warmup=warmup,
                        decay_start=max(warmup, total_steps - decay), half_life=max(half_life, 1e-12),
                        floor=default_floor(cfg))


def _decay_shape(kind: str, p: float) -> float:
    if kind == "linear":
        return 1.0 - p
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if kind == "1-sqrt":
        return 1.0 - math.sqrt(p)
    raise ValueError(f"unknown decay kind {kind!r}")


def lr_factor(step: int, p: SchedulePlan) -> float:
    """The LR multiplier for optimizer update `step` (see the module docstring for the formulas)."""
    if step < p.warmup:
        return (step + 1) / p.warmup
    if p.kind == "constant":
        return 1.0
    if p.kind == "cosine":
        span = max(p.total - p.warmup, 1)
        progress = min((step - p.warmup) / span, 1.0)
        return p.floor + (1 - p.floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if p.kind != "wsd":
        raise ValueError(f"unknown schedule kind {p.kind!r}")
    if step < p.decay_start:
        return 1.0
    if p.decay_kind == "exp":
        return max(0.5 ** ((step - p.decay_start) / p.half_life), p.floor)
    length = max(p.total - p.decay_start, 1)
    progress = min((step - p.decay_start) / length, 1.0)
    return p.floor + (1 - p.floor) * _decay_shape(p.decay_kind, progress)


def decay_overrides(cfg: TrialConfig, step: int, decay_steps: int, checkpoint: str) -> list[str]:
    """The overrides that turn trial `cfg` into its continuation from a stable-phase checkpoint at `step` with a
    WSD decay of decay_steps (MiniCPM's continuous training): the same warmup in tokens, the half-life rule
    above, the tokens of the stable part plus the decay. compose.compose_record(cfg, these) builds it, for the
    decay branches of a stable run and for a decay launched from any checkpoint."""
    s, t = cfg.schedule, cfg.train
    batch, total = t.batch_size_tokens, step + decay_steps
    warmup = plan(replace(s, decay_frac=0.0), cfg.total_steps, batch).warmup
    return ["schedule.kind=wsd", override("schedule.warmup_tokens", warmup * batch), "schedule.warmup_frac=0.0",
            "schedule.warmup_steps=0", override("schedule.decay_tokens", decay_steps * batch),
            override("schedule.half_life_tokens", round(half_life_tokens(s, total * batch))),
            override("train.total_tokens", total * batch), "train.tokens_per_param=0.0", "train.branch_at_n=[]",
            override("train.init_from", checkpoint), "train.keep_checkpoint=false"]
