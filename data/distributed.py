"""The one process-group set-up of every multi-process run (torchrun or any launcher that sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT): the aligner, the generators and feature extraction all join through
`init_process_group`.

Rule: nccl only when the run's device is CUDA (and nccl exists), gloo otherwise, so a CPU run on a GPU machine
uses gloo; with nccl the process's CUDA device is set from LOCAL_RANK first. `resolve_device` maps "auto" and a
bare "cuda" to ``cuda:LOCAL_RANK`` so that every rank has its own GPU and ``device.index`` is never None.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_world_size() -> int:
    """WORLD_SIZE as the launcher set it (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """"auto" / None: the GPU of this rank when CUDA exists, else the CPU. A bare "cuda" gets this rank's index
    (LOCAL_RANK, 0 without a launcher). Asking for CUDA without a GPU is a clear RuntimeError."""
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name} asked for, but torch sees no GPU; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank())
    return device


def backend_for(device: str | torch.device) -> str:
    """nccl for a CUDA run (where nccl exists), gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"


def init_process_group(device: str | torch.device) -> bool:
    """Join the launcher's process group when WORLD_SIZE > 1 and no group exists yet; True when this call joined
    (the caller then owns `cleanup`). `device` is the run's device (after `resolve_device`)."""
    if not dist.is_available() or dist.is_initialized() or launched_world_size() <= 1:
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend)
    return True


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
