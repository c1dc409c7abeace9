"""Multi-process training helpers (torchrun / DistributedDataParallel): gloo on the CPU, nccl on GPUs (the
process group itself is set up by `dvsa.data.distributed`, shared with the generators and feature extraction).

The max-margin loss couples every pair of a batch, so each rank embeds its share of the global batch and
`all_gather_grad` assembles the whole batch on every rank. Every rank then computes the same global loss.
The gather's backward sums the incoming gradients over ranks (each rank holds the same loss, so the sum is
world x the rank's own gradient) and DDP's averaging divides by world again: the parameters receive exactly
the gradient of the single-process loss on the whole batch (up to float summation order).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from dvsa.data.distributed import (  # noqa: F401 (re-exported: the trainers' and scripts' names)
    barrier,
    cleanup,
    init_process_group,
    is_distributed,
    is_main,
    rank,
    resolve_device,
    world_size,
)


def init_distributed(device: str | None = None) -> str:
    """Join the process group torchrun describes (`dvsa.data.distributed.init_process_group`: nccl for a CUDA
    device, gloo otherwise); returns the device to use ("auto" / None: this rank's GPU when CUDA exists).

    Without torchrun's variables this is a no-op for a single process."""
    dev = resolve_device(device)
    init_process_group(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return str(dev)


class _GatherGrad(torch.autograd.Function):
    """all_gather along dim 0 (equal shapes on every rank) whose backward all-reduces and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        r = dist.get_rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


def max_over_ranks(values: list[int], device="cpu") -> list[int]:
    t = torch.tensor(values, dtype=torch.long, device=device)
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather_sizes(n: int, device="cpu") -> list[int]:
    """The first-dim size of every rank's tensor."""
    if not is_distributed():
        return [n]
    parts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(parts, torch.tensor([n], dtype=torch.long, device=device))
    return [int(p) for p in parts]


def all_gather_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's x along dim 0 (ranks in order), differentiably.

    Dims after the first must already be equal on every rank (pad them first); the first dim may differ:
    `sizes` (from `gather_sizes`) says how many rows each rank has.
    """
    if not is_distributed():
        return x
    sizes = sizes or gather_sizes(x.shape[0], x.device)
    n = max(sizes)
    pad = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1) + [0, n - x.shape[0]]) if x.shape[0] < n else x
    full = _GatherGrad.apply(pad) if x.requires_grad else _gather_nograd(pad)
    keep = torch.cat([torch.arange(r * n, r * n + s, device=x.device) for r, s in enumerate(sizes)])
    return full[keep]


def _gather_nograd(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)
