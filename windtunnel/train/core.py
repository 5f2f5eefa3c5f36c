"""Small pieces the trainer shares: eval reports for callbacks, devices, eval schedules, autocast."""
import gc
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import sizing
from ..config import ConfigError


@dataclass
class EvalReport:
    """One held-out eval, as a callback (a pruner, a logger) sees it."""
    step: int
    tokens: int
    loss: float
    decayed: bool  # True only at the end of a completed LR decay (a run's end, or a decay branch's end):
    #                the only points where arms with different LRs compare fairly (short-horizon bias)
    branch: str = ""  # the decay branch's run dir name, for reports from branches


EvalCallback = Callable[[EvalReport], None]


class StopTrial(Exception):
    """Raised by an eval callback to end a trial early; the run is recorded with status 'pruned'."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available here; use train.device=cpu or auto")
    if name == "cuda":
        return torch.device("cuda", local_rank)  # one GPU per torchrun rank
    return torch.device(name)


# A trial whose micro-batch costs fewer training FLOPs than this runs on one CPU thread unless train.threads says
# otherwise. benchmarks/threads.py, 2 cores: tiny64 at 16 x 128 tokens (1.8 GFLOP a micro-batch) is 1.3x faster with
# two threads on idle cores and 2x slower beside a busy process per core (OpenMP's threads wait on cores another
# process holds); tiny256 at 32 x 128 (74 GFLOP), above the line, gains 1.5-1.9x from two threads when idle.
ONE_THREAD_FLOPS = 2e9


def cpu_threads(cfg, device: torch.device) -> int:
    """The intra-op threads to set for a trial (0: leave torch's default, one per core): train.threads when > 0; on
    the CPU, 1 for a tiny trial (its micro-batch under ONE_THREAD_FLOPS), where more threads gain little alone and
    lose badly beside other work (a second trial, the test suite, a browser)."""
    if cfg.train.threads > 0:
        return cfg.train.threads
    if device.type != "cpu":
        return 0
    per_micro = sizing.flops_per_token(cfg.model, cfg.train.seq_len, cfg.model.vocab_size or 256) * \
        cfg.micro_batch * cfg.train.seq_len
    return 1 if per_micro < ONE_THREAD_FLOPS else 0


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def eval_steps(total_steps: int, batch_tokens: int, n_points: int, decay_start: int = 0,
               decay_points: int = 0) -> list[int]:
    """Steps (counted after the update) at ~n_points log-spaced token counts from one batch to the end,
    plus step 0 (the initial loss). Dense early, where the loss falls fastest. With decay_points > 0 and a
    decay from step decay_start (< total_steps) to the end: that many more, evenly spaced in it (its last one
    the end), where the log spacing leaves a short WSD decay with two or three."""
    tokens = np.geomspace(batch_tokens, total_steps * batch_tokens, max(min(n_points, total_steps), 2))
    steps = {0, total_steps} | {min(total_steps, max(1, math.ceil(t / batch_tokens - 1e-9))) for t in tokens}
    if decay_points > 0 and 0 < decay_start < total_steps:
        steps |= {round(s) for s in np.linspace(decay_start, total_steps, decay_points + 1)[1:]}
    return sorted(steps)


def _read_int(path: str) -> int | None:
    """The integer in a one-line /proc or /sys file (None: missing, unreadable, or "max", i.e. no limit)."""
    try:
        text = open(path).read().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _proc_kib(path: str, key: str) -> int | None:
    """Bytes of a "Key:  N kB" line of a /proc file (meminfo, PID/status); None when missing or unreadable."""
    try:
        return next(int(line.split()[1]) * 1024 for line in open(path) if line.startswith(key + ":"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def host_memory_free(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup",
                     status: str = "/proc/self/status") -> tuple[int | None, str]:
    """(bytes this process may still allocate, where that bound comes from): the smallest of the host's available
    memory, the cgroup's limit minus its usage (v2 memory.max, or v1 memory.limit_in_bytes; a container or a SLURM
    job's allocation) and the address-space rlimit minus the process's size (ulimit -v). (None, "") when none is known."""
    import resource
    avail = _proc_kib(meminfo, "MemAvailable")
    bounds = [] if avail is None else [(avail, "the host has")]
    for limit, usage in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        cap, used = _read_int(f"{cgroup}/{limit}"), _read_int(f"{cgroup}/{usage}")
        if cap is not None and used is not None and cap < 2 ** 60:  # v1 writes "no limit" as a huge number
            bounds.append((max(cap - used, 0), f"the cgroup's limit ({cgroup}/{limit}) leaves"))
            break
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        bounds.append((max(soft - (_proc_kib(status, "VmSize") or 0), 0), "the address-space limit (ulimit -v) leaves"))
    return min(bounds) if bounds else (None, "")


def check_memory(cfgs: list, vocab_size: int, device: torch.device, world: int = 1, sharded: bool = False) -> None:
    """Refuse a trial whose model states and activations cannot fit, before anything is allocated: sizing's
    memory model (the one `windtunnel launch` sizes micro-batches with) for each of a pack's K trials, states
    over the ranks under FSDP2, one micro-batch of activations, against the device's free memory (on a CPU, the
    smallest of the host's, the cgroup's and the rlimit's: host_memory_free)."""
    cfg = cfgs[0]
    m, t = cfg.model, cfg.train
    params = sizing.total_params(m, m.vocab_size or vocab_size)
    states = sizing.BYTES_PER_PARAM * params / (world if sharded else 1)
    acts = cfg.micro_batch * t.seq_len * sizing.activation_bytes_per_token(m, m.vocab_size or vocab_size)
    need = len(cfgs) * (states + acts)
    if device.type == "cuda":
        # memory this process's caching allocator holds but no tensor uses (a previous trial of the same sweep
        # process: its pack's 70 GB stay reserved) is free to this trial
        gc.collect()
        free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        where = "cuda has"
    else:
        free, where = host_memory_free()
        if free is None:
            return
    if need > 0.9 * free:
        raise ConfigError(f"trial {cfg.name!r} needs about {need / 2**30:.1f} GiB ({params:,} parameters x "
                          f"{sizing.BYTES_PER_PARAM} bytes for weights, gradients and AdamW, plus {acts / 2**30:.2f} GiB of "
                          f"activations for a micro-batch of {cfg.micro_batch} x {t.seq_len} tokens"
                          f"{f', x {len(cfgs)} packed trials' if len(cfgs) > 1 else ''}); {where} "
                          f"{free / 2**30:.1f} GiB free. Use a smaller model or train.micro_batch_size, or a device with "
                          f"more memory")


def autocast_for(device: torch.device, dtype: str):
    """A context factory: bf16 autocast on CUDA (or when asked), plain fp32 otherwise."""
    if dtype == "bf16" or (dtype == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


@torch.no_grad()
def heldout_sums(loss_fn, windows: torch.Tensor, micro_batch: int, device, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Over this rank's share of the held-out windows (n, T+1): the sum of each window's mean next-token loss and
    the sum of its square, float64 (2,), or (K, 2) for a pack; loss_fn(x, y) gives the per-window losses, (B,) or
    (K, B). Ranks add theirs (the standard error needs the second moment, not the windows)."""
    total = torch.zeros(2, device=device, dtype=torch.float64)
    mine = windows[rank::world]
    for i in range(0, len(mine), micro_batch):
        w = mine[i:i + micro_batch].to(device)
        rows = loss_fn(w[:, :-1], w[:, 1:]).double()  # (B,) or (K, B)
        total = total + torch.stack([rows.sum(-1), rows.pow(2).sum(-1)], -1)
    return total


def eval_stats(sums, windows: torch.Tensor, n_bytes: int) -> tuple[float, float, float]:
    """(held-out nats/token, bits/byte, standard error of the nats/token over windows) from heldout_sums's two
    sums over all n windows (every window has T targets, so the loss is the mean of the window means)."""
    s1, s2 = float(sums[0]), float(sums[1])
    n, t = windows.shape[0], windows.shape[1] - 1
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0) * n / (n - 1) if n > 1 else float("nan")
    return mean, s1 * t / (math.log(2) * n_bytes), math.sqrt(var / n)


def is_diverged(train_loss: float, first_loss: float, factor: float) -> bool:
    """A train loss that is NaN/inf or above factor x the run's first logged loss."""
    return not math.isfinite(train_loss) or train_loss > factor * first_loss


def diverged_message(train_loss: float, step: int, first_loss: float, factor: float) -> str:
    return f"train loss {train_loss} at step {step} (first {first_loss:.4g}, limit x{factor})"


def compiled(fn, mode: str = "default"):
    """torch.compile for a sweep: one process trains trial after trial of different shapes. Static shapes
    (dynamic=False): by default the second shape recompiles with symbolic sizes, which vmap's batched tensors
    cannot take (every pack after the first failed so on an H200, torch 2.11), and a shape-specialised graph is
    the fast one anyway. Each new shape is a recompile, so the recompile limit (8 by default, after which
    dynamo silently runs eager) is raised for sweeps of many shapes."""
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 256))
    return torch.compile(fn, mode=mode, dynamic=False)


def compile_mode(mode: str, device: torch.device, parallel: str, accum: int) -> str:
    """train.compile_mode, with "auto" resolved: CUDA graphs ("reduce-overhead": launch-bound tiny models run
    1.5-2x faster) only on CUDA, in one process (they do not mix with DDP's and FSDP's communication hooks),
    with one micro-batch per step (accumulated grads would live in the graph's reused memory); else "default"."""
    if mode != "auto":
        return mode
    return "reduce-overhead" if device.type == "cuda" and parallel == "none" and accum == 1 else "default"
