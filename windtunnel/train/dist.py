"""One process or many: the process group, model wrapping (DDP or FSDP2), reductions, sharded evals and
checkpoints. Under torchrun every rank runs the same trial; rank 0 alone writes the run directory.

Data parallelism never changes the numbers: the global batch of a step is micro-batches 0 .. W*A-1 of
TokenBatches (a pure function of seed, step and index); rank r trains micro-batches r*A .. r*A+A-1 of it,
and DDP / FSDP average gradients over ranks, so W processes reproduce one process with the same global batch.

A checkpoint is a directory (its layout: runs/run.py): meta.json (step, tokens, model shape, format: readable
without torch) and either state.pt (full state, single process or DDP; written by rank 0) or
distributed-checkpoint shards (FSDP2, every rank writes its own). Directories are replaced atomically (write
aside, then rename).
"""
import json
import os
import pickle
import shutil
from pathlib import Path

import torch
import torch.distributed as torch_dist

from ..config import ConfigError
from ..runs import UnreadableCheckpoint, has_weights, read_meta, weights_file
from ..runs.run import META
from .core import resolve_device


class Dist:
    def __init__(self, device: str, parallel: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        self.owns_group = self.world > 1 and not torch_dist.is_initialized()  # (a decay branch reuses its run's)
        if self.owns_group:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch_dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.parallel = ("ddp" if self.world > 1 else "none") if parallel == "auto" else parallel
        if self.parallel != "none" and self.world == 1 and not torch_dist.is_initialized():
            self.parallel = "none"  # ddp/fsdp asked for, but one process: nothing to wrap
        self.is_main = self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.parallel == "fsdp"

    def wrap(self, model):
        """The module to call for training. Call before building the optimizer: FSDP2 replaces parameters
        with sharded ones (names and shapes unchanged, so the model's muP groups come out the same)."""
        if self.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel
            return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.parallel == "fsdp":
            from torch.distributed.fsdp import fully_shard
            for block in model.blocks:  # bottom-up: each block, then the root (embedding, final norm)
                fully_shard(block)
            fully_shard(model)
        return model

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            torch_dist.all_reduce(t)
            t /= self.world
        return t

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            torch_dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says so (a stop decided on rank 0 reaches all)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch_dist.all_reduce(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        """Tear the process group down before the interpreter exits: left to exit, gloo's threads are
        destroyed while joinable and the process aborts ("terminate called without an active exception")."""
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------------------- checkpoints

    def save(self, path: Path, model, opt, meta: dict) -> None:
        tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        if self.sharded:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict
            model_state, optim_state = get_state_dict(model, opt)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
        elif self.is_main:
            torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp / "state.pt")
        self.barrier()
        if self.is_main:
            (tmp / META).write_text(json.dumps({**meta, "format": "dcp" if self.sharded else "full",
                                                "world_size": self.world}, indent=1))
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        self.barrier()

    def load(self, path: Path, model, opt) -> dict:
        meta = read_meta(path)
        if not has_weights(path):
            raise ConfigError(f"checkpoint {path} has its meta.json but not its weights ({weights_file(meta)}; e.g. "
                              f"copied with --exclude='*.pt'): copy them too, or start without it")
        if (meta.get("format") == "dcp") != self.sharded:
            raise ConfigError(f"checkpoint {path} was written {'sharded (FSDP2)' if meta.get('format') == 'dcp' else 'whole'}"
                              f"; resume it with train.parallel={'fsdp' if meta.get('format') == 'dcp' else 'ddp or none'}")
        try:
            if self.sharded:
                import torch.distributed.checkpoint as dcp
                from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
                model_state, optim_state = get_state_dict(model, opt)
                state = {"model": model_state, "optim": optim_state}
                dcp.load(state, checkpoint_id=str(path))
                set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
            else:
                try:
                    state = torch.load(path / "state.pt", map_location=self.device, weights_only=True)  # no code runs
                except (RuntimeError, EOFError, OSError) as err:  # a truncated or corrupt file, not a wrong shape
                    raise UnreadableCheckpoint(f"checkpoint file {path / 'state.pt'} is unreadable (truncated or "
                                               f"corrupt: {str(err).splitlines()[0][:160]})") from None
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optim"])
        except pickle.UnpicklingError as err:
            raise ConfigError(f"checkpoint {path} holds more than tensors and plain values (refused: loading it "
                              f"could run code): {str(err).splitlines()[0][:200]}") from None
        except RuntimeError as err:
            raise ConfigError(f"checkpoint {path} does not fit this model: {str(err)[:300]}") from None
        return meta


