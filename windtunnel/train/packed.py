"""K trials of one shape as one fused model: the packed step.

Tiny models at small batches leave a GPU mostly idle (launch-bound), so an LR grid (or a set of seeds) of
one shape and batch size trains as one model whose every parameter is stacked, (K, *shape), and whose
forward is the unchanged Transformer under torch.func.vmap. Each trial computes what it would alone:
  - the K losses are independent (vmap of grad per trial: no term mixes trials, a NaN stays in its trial);
  - AdamW runs per trial with its own LR (a (K,) tensor) through the model's own muP groups (lr_scale,
    weight decay), with torch AdamW's exact update order;
  - gradient clipping uses each trial's own global norm.
A trial that diverges is frozen (weights, moments zeroed, LR 0): its slot keeps computing a finite
constant loss, so shapes and compiled graphs never change, and it no longer updates.
"""
import copy
import warnings
from contextlib import nullcontext

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import ModelConfig, OptimConfig
from ..model import Transformer
from .core import compiled


warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule for aten::_scaled_dot_product.*")


class PackedModel:
    def __init__(self, model_cfg: ModelConfig, optim: OptimConfig, lrs: list[float], seeds: list[int], device,
                 autocast, shared_data: bool, compile: bool = False, compile_mode: str = "default"):
        self.k, self.device, self.autocast, self.optim = len(lrs), device, autocast, optim
        models = []
        for seed in seeds:  # each trial's init is exactly the one a lone run with this seed draws
            torch.manual_seed(seed)
            models.append(Transformer(model_cfg))
        names = {id(p): n for n, p in models[0].named_parameters()}
        self.names = list(names.values())
        # the model's own muP groups: per tensor, its LR multiple and weight decay
        self.lr_scale, self.weight_decay = {}, {}
        for group in models[0].param_groups(optim):
            for p in group["params"]:
                self.lr_scale[names[id(p)]], self.weight_decay[names[id(p)]] = group["lr_scale"], group["weight_decay"]
        stacked, buffers = stack_module_state(models)
        self.params = {n: stacked[n].detach().to(device) for n in self.names}  # each (K, *shape)
        self.buffers = {n: b[0].to(device) for n, b in buffers.items()}  # RoPE tables: the same for all trials
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.base = copy.deepcopy(models[0]).to("meta")  # the code, without storage
        self.base_lr = torch.tensor(lrs, dtype=torch.float32, device=device)  # (K,)
        self.active = torch.ones(self.k, device=device)  # (K,) 0 = frozen (diverged) trial
        self.lr_factor = torch.zeros((), device=device)  # schedule factor; a tensor so compiled code never
        self.step_count = torch.zeros((), device=device)  # specialises on its value
        # vmap has batching rules for the flash and memory-efficient SDPA kernels, not for cuDNN's (it
        # raises) or the CPU flash kernel (a slow per-trial loop, bit-identical to a lone run: kept on CPU)
        self.attention = nullcontext
        if torch.device(device).type == "cuda":
            backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
            self.attention = lambda: sdpa_kernel(backends)
        data_dim = None if shared_data else 0  # one batch for all trials (same seed), or (K, B, T)
        grads = vmap(grad_and_value(self._loss), in_dims=(0, data_dim, data_dim))
        losses = vmap(self._row_losses, in_dims=(0, None, None))
        if compile:
            for p in self.params.values():  # CUDA graphs may read these in place instead of copying them
                torch._dynamo.mark_static_address(p)
            grads = compiled(grads, compile_mode)
            losses = compiled(losses)
        self._grads, self._losses = grads, losses
        # CUDA graphs (mode reduce-overhead) reuse output buffers across replays: mark each step
        self.mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None) \
            if compile and compile_mode == "reduce-overhead" else None
        self._update = compiled(_adamw) if compile else _adamw

    def _loss(self, params: dict, x, y):  # one trial: x, y (B, T) -> mean next-token loss
        with self.autocast():
            return functional_call(self.base, (params, self.buffers), (x, y))

    def _row_losses(self, params: dict, x, y):  # one trial: x, y (B, T) -> (B,) per-sequence mean losses
        with self.autocast():
            return functional_call(self.base, (params, self.buffers), (x, y), {"per_row": True})

    def grads(self, x, y) -> tuple[dict, torch.Tensor]:
        """Per-trial gradients {name: (K, *shape)} and losses (K,) of one micro-batch."""
        with self.attention():  # entered outside the compiled function: global flags, read when it traces
            return self._grads(self.params, x, y)

    def train_step(self, micro_batches: list, lr_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this step's micro-batches [(x, y)], x and y (B, T) shared by all trials or
        (K, B, T) one per trial. Returns the (K,) mean losses and grad norms, on device (no host sync)."""
        acc, loss_sum, n = None, None, len(micro_batches)
        for x, y in micro_batches:
            if self.mark_step is not None:
                self.mark_step()
            grads, losses = self.grads(x, y)  # {name: (K, *shape)}, (K,)
            if n == 1:
                acc, loss_sum = grads, losses
            elif acc is None:  # copies: CUDA graphs overwrite their outputs on the next replay
                acc, loss_sum = {name: g.clone() for name, g in grads.items()}, losses.clone()
            else:
                torch._foreach_add_(list(acc.values()), list(grads.values()))
                loss_sum += losses
        if n > 1:
            torch._foreach_div_(list(acc.values()), n)
        return loss_sum / n, self.step(acc, lr_factor)

    @torch.no_grad()
    def losses(self, x, y) -> torch.Tensor:
        """(K, B) per-sequence mean losses of every trial on one shared batch x, y (B, T) (held-out evals)."""
        with self.attention():
            return self._losses(self.params, x, y)

    @torch.no_grad()
    def step(self, grads: dict, lr_factor: float) -> torch.Tensor:
        """Clip each trial's gradient to optim.grad_clip and take one AdamW step; returns the (K,) grad norms
        before clipping."""
        self.lr_factor.fill_(lr_factor)
        o = self.optim
        return self._update([self.params[n] for n in self.names], [grads[n] for n in self.names],
                            [self.exp_avg[n] for n in self.names], [self.exp_avg_sq[n] for n in self.names],
                            [self.lr_scale[n] for n in self.names], [self.weight_decay[n] for n in self.names],
                            self.base_lr * self.active, self.lr_factor, self.step_count,
                            o.beta1, o.beta2, o.eps, o.grad_clip)

    @torch.no_grad()
    def freeze(self, i: int) -> None:
        """Stop trial i for good: zero weights (its forward stays finite: uniform logits), moments and LR."""
        self.active[i] = 0.0
        for n in self.names:
            self.params[n][i].zero_()
            self.exp_avg[n][i].zero_()
            self.exp_avg_sq[n][i].zero_()


def _adamw(params, grads, exp_avgs, exp_avg_sqs, lr_scales, weight_decays, base_lr, lr_factor, step,
           beta1: float, beta2: float, eps: float, grad_clip: float):
    """torch.optim.AdamW's update (decoupled decay first, then moments, then the bias-corrected step), with
    a (K,) learning rate; tensors are (K, *shape). Returns the (K,) global grad norms before clipping."""
    k = base_lr.shape[0]
    norm = torch.stack([g.float().pow(2).reshape(k, -1).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
    # as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) where that is below 1
    clip = (grad_clip / (norm + 1e-6)).clamp(max=1.0) if grad_clip > 0 else torch.ones_like(norm)
    step.add_(1)
    bias1, bias2_sqrt = 1 - beta1 ** step, (1 - beta2 ** step).sqrt()
    for p, g, m, v, scale, wd in zip(params, grads, exp_avgs, exp_avg_sqs, lr_scales, weight_decays):
        shape = (k,) + (1,) * (p.ndim - 1)
        lr = (base_lr * lr_factor * scale).view(shape)  # ### muP: lr_scale = 1/m on hidden matrices
        g = g * clip.view(shape)
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(lr / bias1 * m / (v.sqrt() / bias2_sqrt + eps))
    return norm
