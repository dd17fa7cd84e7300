"""Distributed training helpers: every call also works without torch.distributed initialised, so the
trainer has one code path for a single process and for torchrun (DDP)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world() -> int:
    return dist.get_world_size() if is_distributed() else 1


def setup_distributed(device: str) -> torch.device:
    """Initialise the process group only when torchrun says there are several processes."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        if dev.index is None:  # set_device needs an index; a bare "cuda" means the current one
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def shutdown() -> None:
    """Leave the process group (if any) so torchrun sees a clean exit."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, device) -> bool:
    """True when the flag is set on any process, so all processes take the same branch."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around a module with trainable parameters when several processes train; as it is otherwise."""
    if world() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DDP) else module


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (exact resume without re-decoding)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self):
        return self.num_samples - self.start
