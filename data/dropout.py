"""Dropout with its mask drawn from 16-bit uniform integers: the layer every network of dvsa uses.

    drop = Dropout(0.5)      # an nn.Dropout: same p, same train / eval behaviour, same expected value
    y = drop(x)              # train mode: x * (u < k) * 2^16 / k, u uniform on {0, ..., 2^16 - 1} elementwise,
                             # k = round((1 - p) * 2^16)

`torch.nn.Dropout` draws its CPU mask with `bernoulli_`, which on a 2-core CPU took 17% of an alignment step and
about 14% of a generator step (torch profiler, docs/experiments.md); `torch.rand` compared against 1 - p took half
that. A large mask now comes from 64-bit words of a PCG64 stream (numpy's generator, seeded from torch's global
generator, so `torch.manual_seed` still fixes every mask and a resumed run draws the same ones), four 16-bit
draws per word: the [100, 20, 1349] mask of the aligner's region features takes about 4 ms instead of 8. A
small one (fewer than `STREAM_MIN` entries, where seeding a stream costs more than it saves) comes from
`torch.randint`. The keep probability is 1 - p rounded to a multiple of 2^-16 (p = 0.2 keeps 0.800003) and the
scale is its inverse, so the expected value is exact. On CUDA the fused kernel of `nn.functional.dropout` is
kept. The masks differ from nn.Dropout's for the same seed: a seeded run is reproducible, but not mask for mask
the run nn.Dropout would give.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

LEVELS = 1 << 16  # the draws' range: u in {0, ..., LEVELS - 1}, stored as int16 u - 2^15
STREAM_MIN = 1 << 16  # masks of at least this many entries come from a seeded PCG64 stream


def uniform16(shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """int16 [shape]: independent draws, uniform on [-2^15, 2^15), from torch's global generator (directly, or
    through the seed of a PCG64 stream when there are at least `STREAM_MIN` of them)."""
    n = int(np.prod(shape))
    if n < STREAM_MIN:
        return torch.randint(-(LEVELS // 2), LEVELS // 2, tuple(shape), dtype=torch.int16)
    seed = int(torch.randint(0, 1 << 62, (), dtype=torch.int64))
    words = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((n + 3) // 4)  # uint64 [n / 4]
    return torch.from_numpy(words.view(np.int16)[:n].reshape(tuple(shape)))


def keep_mask(u: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    """The mask of draws u (int16 [...], `uniform16`) for drop rate p in [0, 1): 0 where dropped, 2^16 / k
    where kept (u + 2^15 < k, k = round((1 - p) * 2^16), at least 1), in `dtype`."""
    k = max(1, round((1.0 - p) * LEVELS))
    return (u < k - LEVELS // 2).to(dtype).mul_(LEVELS / k)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same constructor, `p`, and eval-mode identity) whose CPU mask comes from `uniform16`.

    x float [...] -> float [...] of the same shape; `inplace` is not supported (it is False)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p, inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p == 1:
            return super().forward(x)
        return x * keep_mask(uniform16(x.shape), self.p, x.dtype)
