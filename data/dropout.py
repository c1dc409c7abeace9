"""Dropout with its mask drawn from uniform floats: the layer every network of dvsa uses.

    drop = Dropout(0.5)      # an nn.Dropout: same p, same train / eval behaviour, same expected value
    y = drop(x)              # train mode: x * (u < 1 - p) / (1 - p), u ~ U[0, 1) elementwise

`torch.nn.Dropout` draws its CPU mask with `bernoulli_`, which on a 2-core CPU took 17% of an alignment step and
about 14% of a generator step (torch profiler, docs/experiments.md). Comparing `torch.rand` against 1 - p gives
the same distribution (P(u < 1 - p) = 1 - p exactly, u uniform on [0, 1)) at about half the cost, forward and
backward (`dvsa bench train`'s rows, `tests/test_dropout.py`). On CUDA the fused kernel of `nn.functional.dropout`
is kept. The masks drawn differ from nn.Dropout's for the same seed: a seeded run is reproducible, but not
mask for mask the run nn.Dropout would give.
"""
from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """`nn.Dropout` (same constructor, `p`, and eval-mode identity) whose CPU mask comes from `torch.rand`.

    x float [...] -> float [...] of the same shape; `inplace` is not supported (it is False)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p, inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.is_cuda or self.p == 1:
            return super().forward(x)
        keep = 1.0 - self.p
        scale = torch.rand_like(x).lt_(keep).mul_(1.0 / keep)  # [...] 0 or 1 / keep, one buffer
        return x * scale
