"""What the Trainer trains, behind one protocol (Engine): one trial as an nn.Module (DDP or FSDP2 under torchrun,
checkpoints), or K same-shape trials as one fused model (train/packed.py). The loop around them (train/trainer.py)
is one and calls nothing else.

The trainer knows nothing about muP: the model hands out AdamW groups that carry `lr_scale`, and every
step sets group["lr"] = optim.lr * lr_factor(step) * group["lr_scale"] (train/step.py, or per trial in
train/packed.py).
"""
from pathlib import Path
from typing import Protocol

import torch

from ..config import TrialConfig
from ..data import Prefetcher, TokenBatches
from ..model import Transformer, build_optimizer
from ..data import HeldOut
from .core import autocast_for, compile_mode, compiled, eval_stats, heldout_sums
from .dist import Dist
from .packed import PackedModel
from .step import TrainStep


class Engine(Protocol):
    """K trials trained in lockstep: the Trainer's whole view of the model, optimizer and data."""
    k: int  # trials trained together
    checkpoints: bool  # whether save/load work (a pack restarts from step 0 instead)

    def train_step(self, step: int, lr_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step at base LR x lr_factor: (K,) or () train losses and grad norms, on the device."""

    def to_host(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> tuple[list[float], list[float]]:
        """The step's losses and grad norms as K floats each (the host sync of a logged step)."""

    def evaluate(self, final: bool = False) -> list[tuple[float, float, float]]:
        """[(held-out nats/token, bits/byte, standard error over windows)] per trial on the fixed held-out windows:
        the curve's, or (final) those runs are compared on."""

    def freeze(self, i: int) -> None:
        """Trial i diverged: stop updating it (the others go on)."""

    def save(self, path: Path, meta: dict) -> None:
        """Write a checkpoint directory (atomically) with `meta` in its meta.json."""

    def load(self, path: Path) -> dict:
        """Restore a checkpoint directory; returns its meta."""


# Held-out windows per eval forward: at least this many tokens (a tiny batch's micro-batch of one 32-token sequence
# would make an 8,192-window eval 8,192 forward calls: seconds per eval on a CPU); a forward without gradients holds
# far less than the training micro-batch's activations, so GPU micro-batches (32k tokens) are kept as they are.
EVAL_FORWARD_TOKENS = 8192


def eval_micro(cfg: TrialConfig) -> int:
    """Sequences per held-out forward: the training micro-batch, or EVAL_FORWARD_TOKENS' worth when that is more."""
    return max(cfg.micro_batch, -(-EVAL_FORWARD_TOKENS // cfg.train.seq_len))


class ModuleEngine:
    """One trial (K = 1): every rank under torchrun builds the same model from train.seed and trains its
    share of each global batch."""
    k = 1
    checkpoints = True

    def __init__(self, cfg: TrialConfig, dist: Dist, source, held_out: HeldOut):
        t, device = cfg.train, dist.device
        self.dist, self.held_out, self.micro, self.eval_micro = dist, held_out, cfg.micro_batch, eval_micro(cfg)
        accum = cfg.accum_per_rank(dist.world)  # micro-batches per rank per step
        torch.manual_seed(t.seed)
        self.model = Transformer(cfg.model).to(device)
        self.wrapped = dist.wrap(self.model)
        self.opt = build_optimizer(self.model, cfg.optim, fused=device.type == "cuda")  # after wrapping: FSDP2 params
        mode = compile_mode(t.compile_mode, device, dist.parallel, accum)
        self.forward = compiled(self.wrapped, mode) if t.compile else self.wrapped
        self.autocast = autocast_for(device, t.dtype)
        self.batches = TokenBatches(source, t.seq_len, self.micro, t.seed)
        self.accum, self.lr, self.grad_clip = accum, cfg.optim.lr, cfg.optim.grad_clip
        self._step = None  # built at the first step (its prefetcher starts loading batches)

    @property
    def state_module(self):
        """What a checkpoint holds: the sharded module under FSDP2, else the plain model."""
        return self.wrapped if self.dist.sharded else self.model

    def train_step(self, step: int, lr_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self._step is None:
            self._step = TrainStep(self.model, self.wrapped, self.forward, self.opt, self.batches, self.dist,
                                   self.autocast, self.accum, self.lr, self.grad_clip)
        return self._step(step, lr_factor)

    def to_host(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> tuple[list[float], list[float]]:
        """The step's mean loss over ranks and grad norm, as [float]: the only host sync of a logged step."""
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2 DTensor
        return [self.dist.mean(loss).item()], [grad_norm.item()]

    def evaluate(self, final: bool = False) -> list[tuple[float, float, float]]:
        """[(held-out nats/token, bits/byte, standard error)] on the fixed windows; ranks split the windows and sum."""
        was_training = self.forward.training
        self.forward.eval()

        def loss(x, y):  # (B,) per-window losses
            with self.autocast():
                return self.forward(x, y, per_row=True)
        windows, n_bytes = self.held_out.get(final)
        sums = heldout_sums(loss, windows, self.eval_micro, self.dist.device, self.dist.rank, self.dist.world)
        self.forward.train(was_training)
        return [eval_stats(self.dist.sum(sums).tolist(), windows, n_bytes)]

    def freeze(self, i: int) -> None:
        """A lone trial that diverges stops: nothing to keep computing."""

    def save(self, path: Path, meta: dict) -> None:
        self.dist.save(path, self.state_module, self.opt, meta)

    def load(self, path: Path) -> dict:
        return self.dist.load(path, self.state_module, self.opt)


class PackedEngine:
    """K trials equal but for optim.lr and train.seed as one fused model, in one process. A shared seed
    means one data stream for all (a paired comparison of LRs); else each trial draws its own batches."""
    checkpoints = False  # a killed pack restarts its unfinished trials from step 0

    def __init__(self, cfgs: list[TrialConfig], dist: Dist, source, held_out: HeldOut):
        cfg, t, device = cfgs[0], cfgs[0].train, dist.device
        self.k, self.device, self.held_out, self.micro = len(cfgs), device, held_out, cfg.micro_batch
        self.eval_micro = eval_micro(cfg)
        accum = cfg.accum_per_rank(1)
        seeds = [c.train.seed for c in cfgs]
        self.shared = len(set(seeds)) == 1
        self.model = PackedModel(cfg.model, cfg.optim, [c.optim.lr for c in cfgs], seeds, device,
                                 autocast_for(device, t.dtype), self.shared, compile=t.compile,
                                 compile_mode=compile_mode(t.compile_mode, device, "none", accum))
        self.loaders = [Prefetcher(TokenBatches(source, t.seq_len, self.micro, s), 0, accum, device)
                        for s in (seeds[:1] if self.shared else seeds)]

    def train_step(self, step: int, lr_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        micro_batches = []
        for batch in zip(*(loader.get(step) for loader in self.loaders)):  # one (x, y) per data stream
            micro_batches.append(batch[0] if self.shared else (torch.stack([b[0] for b in batch]),  # (K, B, T)
                                                               torch.stack([b[1] for b in batch])))
        return self.model.train_step(micro_batches, lr_factor)  # (K,) losses, (K,) grad norms

    def to_host(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> tuple[list[float], list[float]]:
        return loss.tolist(), grad_norm.tolist()

    def evaluate(self, final: bool = False) -> list[tuple[float, float, float]]:
        windows, n_bytes = self.held_out.get(final)
        sums = heldout_sums(self.model.losses, windows, self.eval_micro, self.device).tolist()  # (K, 2): one sync
        return [eval_stats(s, windows, n_bytes) for s in sums]

    def freeze(self, i: int) -> None:
        self.model.freeze(i)

    def save(self, path: Path, meta: dict) -> None:
        raise NotImplementedError("a pack keeps no checkpoints (checkpoints = False): it restarts from step 0")

    def load(self, path: Path) -> dict:
        raise NotImplementedError("a pack keeps no checkpoints (checkpoints = False): it restarts from step 0")
