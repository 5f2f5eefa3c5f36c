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
from .core import autocast_for, compile_mode, compiled, heldout_nats, loss_and_bpb
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

    def evaluate(self) -> list[tuple[float, float]]:
        """[(held-out nats/token, bits/byte)] per trial on the fixed held-out windows."""

    def freeze(self, i: int) -> None:
        """Trial i diverged: stop updating it (the others go on)."""

    def save(self, path: Path, meta: dict) -> None:
        """Write a checkpoint directory (atomically) with `meta` in its meta.json."""

    def load(self, path: Path) -> dict:
        """Restore a checkpoint directory; returns its meta."""


class ModuleEngine:
    """One trial (K = 1): every rank under torchrun builds the same model from train.seed and trains its
    share of each global batch."""
    k = 1
    checkpoints = True

    def __init__(self, cfg: TrialConfig, dist: Dist, source, windows: torch.Tensor, n_bytes: int):
        t, device = cfg.train, dist.device
        self.dist, self.windows, self.n_bytes, self.micro = dist, windows, n_bytes, cfg.micro_batch
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

    def evaluate(self) -> list[tuple[float, float]]:
        """[(held-out nats/token, bits/byte)] on the fixed windows; ranks split the windows and sum."""
        was_training = self.forward.training
        self.forward.eval()

        def loss(x, y):
            with self.autocast():
                return self.forward(x, y)
        total = heldout_nats(loss, self.windows, self.micro, self.dist.device, self.dist.rank, self.dist.world)
        self.forward.train(was_training)
        return [loss_and_bpb(self.dist.sum(total).item(), self.windows, self.n_bytes)]

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

    def __init__(self, cfgs: list[TrialConfig], dist: Dist, source, windows: torch.Tensor, n_bytes: int):
        cfg, t, device = cfgs[0], cfgs[0].train, dist.device
        self.k, self.device, self.windows, self.n_bytes, self.micro = len(cfgs), device, windows, n_bytes, cfg.micro_batch
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

    def evaluate(self) -> list[tuple[float, float]]:
        nats = heldout_nats(self.model.losses, self.windows, self.micro, self.device).tolist()  # (K,): one sync
        return [loss_and_bpb(n, self.windows, self.n_bytes) for n in nats]

    def freeze(self, i: int) -> None:
        self.model.freeze(i)

    def save(self, path: Path, meta: dict) -> None:
        raise NotImplementedError("a pack keeps no checkpoints (checkpoints = False): it restarts from step 0")

    def load(self, path: Path) -> dict:
        raise NotImplementedError("a pack keeps no checkpoints (checkpoints = False): it restarts from step 0")
