"""Per-dimension standardisation statistics of input features, shared by the alignment model and the generator
(both keep them as buffers, so a checkpoint carries them)."""
from __future__ import annotations

import torch


def standardization(feats, dim: int, eps: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """feats float [N, dim] -> (mean [dim], scale [dim]) with x -> (x - mean) * scale, scale = 1 / sqrt(var + eps^2)."""
    feats = torch.as_tensor(feats, dtype=torch.float32)
    if feats.dim() != 2 or feats.shape[1] != dim:
        raise ValueError(f"feature statistics need [N, {dim}], got {list(feats.shape)}")
    return feats.mean(0), 1.0 / torch.sqrt(feats.var(0, unbiased=False) + eps**2)


def standardize(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x float [..., dim] -> (x - mean) * scale, or x itself while the statistics are still the identity (mean 0,
    scale 1: a model whose `set_feature_norm` was never called), so unnormalised inputs pay no pass over them."""
    if not bool(mean.any()) and bool((scale == 1).all()):
        return x
    return (x - mean.to(x.dtype)) * scale.to(x.dtype)
