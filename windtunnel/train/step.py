"""One optimizer step of one trial, the hot path: this rank's micro-batches, clipping, AdamW. No host sync:
the loss and grad norm come back as device tensors, read only at logged steps."""
from contextlib import nullcontext

import torch

from ..data import Prefetcher


class TrainStep:
    def __init__(self, model, wrapped, forward, opt, batches, dist, autocast, accum: int, base_lr: float,
                 grad_clip: float):
        self.model, self.wrapped, self.forward, self.opt = model, wrapped, forward, opt
        self.dist, self.autocast, self.accum, self.base_lr, self.grad_clip = dist, autocast, accum, base_lr, grad_clip
        # this rank's share of the global batch: micro-batches rank*accum ... rank*accum+accum-1
        self.data = Prefetcher(batches, dist.rank * accum, accum, dist.device)
        # CUDA graphs (compile mode reduce-overhead) reuse output buffers across replays: mark each step
        self.mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None) if dist.device.type == "cuda" else None

    def __call__(self, step: int, lr_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Train step `step` at LR factor `lr_factor`; returns (mean micro-batch loss, grad norm) on device."""
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr * lr_factor * group["lr_scale"]
        loss_sum = torch.zeros((), device=self.dist.device)
        for i, (x, y) in enumerate(self.data.get(step)):  # x, y: (B, T)
            sync = self.dist.parallel != "ddp" or i == self.accum - 1  # DDP: all-reduce once per step
            if self.mark_step is not None:
                self.mark_step()
            with nullcontext() if sync else self.wrapped.no_sync():
                with self.autocast():
                    loss = self.forward(x, y)
                (loss / self.accum).backward()
            loss_sum += loss.detach()
        if self.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.model.parameters()]))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss_sum / self.accum, grad_norm
