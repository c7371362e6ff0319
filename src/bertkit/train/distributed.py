"""The one module that knows about ranks: process-group setup from torchrun's environment, and the
wrappers (DDP, FSDP2) applied to a model written for one device.

Single process: no process group, rank 0 of 1. Under `torchrun --nproc-per-node N`: RANK, WORLD_SIZE
and LOCAL_RANK come from the environment; gloo on CPU, NCCL on GPU. Multi-node works through
torchrun's own rendezvous flags; nothing here is cluster-specific.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bertkit.device import default_device


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> World:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = default_device(device)
    if dev.type == "cuda":  # one GPU per rank
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return World(rank, world_size, local_rank, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """DDP: every rank holds the whole model; gradients are averaged over ranks in backward.
    (FSDP2 sharding is not offered yet: checkpoints and evaluation would need gathered state dicts.)"""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.local_rank] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Sum a few scalars over ranks (for logging)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
