"""Splitting an extraction across processes started by torchrun (or any launcher that sets the env vars).

Each rank takes ``records[rank::world]`` and writes its own parts (tag ``r<rank>``) into the same store; the
process group (`dvsa.data.distributed.init_process_group`: gloo on CPU, nccl on GPU) is only used for barriers.
"""
from __future__ import annotations

import os

import torch.distributed as dist
from dvsa.data.distributed import barrier, init_process_group

__all__ = ["barrier", "init_if_needed", "rank_world", "shard"]


def rank_world() -> tuple[int, int]:
    """(rank, world size) from an initialised process group or from RANK / WORLD_SIZE; (0, 1) otherwise."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_if_needed(device: str = "cpu") -> bool:
    """Initialise the default process group when launched with WORLD_SIZE > 1; True when this call did it."""
    return init_process_group(device)


def shard(items: list, rank: int, world: int) -> list:
    """The items of one rank: ``items[rank::world]``."""
    return items[rank::world]
