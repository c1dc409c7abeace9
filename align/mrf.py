"""Exact inference in the chain MRF of eqs. 10-12: which region each word of a sentence talks about.

For one (image, sentence) pair with word-region scores U [N, M] (U[j, i] = v_i . s_j), the assignment
a_1..a_N of words to regions maximises

    E(a) = sum_j U[j, a_j] + beta * sum_{j<N} 1[a_j = a_{j+1}]

(the paper writes "minimise the energy"; it means this maximum). beta = 0 is the per-word argmax; a large beta
puts the whole sentence on one region. Runs of consecutive words on the same region are the snippets.

Viterbi, batched over many pairs. With beta >= 0 the transition needs no [R, R] matrix:

    max_i' (prev[i'] + beta * 1[i' = i]) = max(prev[i] + beta, max_i' prev[i'])

so one step costs O(R) per pair.

Ties are broken deterministically: among the optimal assignments the one returned is the smallest when the
sequences are compared from the LAST word backwards ((a_N, a_{N-1}, ..., a_1) lexicographically), which is what
backtracking with "lowest region index among the maximisers" at every step gives.

Dimensions: B pairs, T words (padded), R regions (padded).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class MRFResult:
    """assign long [B, T] (region row per word, -1 at padded words); score [B] = max of E (0 for empty)."""

    assign: torch.Tensor
    score: torch.Tensor


def chain_mrf(
    unary: torch.Tensor,
    lengths: torch.Tensor,
    region_mask: torch.Tensor | None = None,
    beta: float | torch.Tensor = 0.0,
) -> MRFResult:
    """Best word-to-region assignment of each pair.

    unary       float [B, T, R]  word-region scores; values at padded words / masked regions are ignored
    lengths     long  [B]        number of real words of each pair (0 <= lengths <= T)
    region_mask bool  [B, R]     True = real region; None = all real. Every pair needs >= 1 real region.
    beta        float or float [B], >= 0: reward for two neighbouring words on the same region
    """
    if unary.dim() != 3:
        raise ValueError(f"unary must be [B, T, R], got {list(unary.shape)}")
    B, T, R = unary.shape
    device = unary.device
    dtype = unary.dtype if unary.is_floating_point() else torch.float32
    lengths = torch.as_tensor(lengths, device=device).long().reshape(-1)
    if lengths.shape != (B,) or bool((lengths < 0).any()) or bool((lengths > T).any()):
        raise ValueError(f"lengths must be [B={B}] with values in 0..{T}, got {lengths.tolist()}")
    if region_mask is None:
        region_mask = torch.ones(B, R, dtype=torch.bool, device=device)
    region_mask = torch.as_tensor(region_mask, device=device).bool()
    if region_mask.shape != (B, R):
        raise ValueError(f"region_mask must be [B={B}, R={R}], got {list(region_mask.shape)}")
    if R == 0 or not bool(region_mask.any(1).all()):
        raise ValueError("every pair needs at least one real region")
    beta_t = torch.as_tensor(beta, dtype=dtype, device=device).reshape(-1).expand(B).unsqueeze(1)  # [B, 1]
    if bool((beta_t < 0).any()) or not bool(torch.isfinite(beta_t).all()):
        raise ValueError(f"beta must be finite and >= 0, got {beta}")

    u = unary.to(dtype).masked_fill(~region_mask[:, None, :], NEG_INF)  # [B, T, R]
    idx = torch.arange(R, device=device).expand(B, R)  # [B, R]
    if T == 0:
        return MRFResult(torch.empty(B, 0, dtype=torch.long, device=device), torch.zeros(B, dtype=dtype, device=device))

    # dp[b, i] = best score of words 0..t with word t on region i. Pairs with no words start from 0 everywhere.
    empty = (lengths == 0)[:, None]
    zeros = torch.zeros(B, R, dtype=dtype, device=device).masked_fill(~region_mask, NEG_INF)
    dp = torch.where(empty, zeros, u[:, 0])  # [B, R]
    back = torch.empty(B, T, R, dtype=torch.long, device=device)  # back[b, t, i] = region of word t-1
    back[:, 0] = idx
    for t in range(1, T):
        best = dp.amax(dim=1, keepdim=True)  # [B, 1] max_all(prev)
        # its lowest maximiser (torch.max does not promise the first one)
        first = torch.where(dp == best, idx, R).min(dim=1, keepdim=True).values  # [B, 1]
        stay = dp + beta_t  # [B, R]
        bp = torch.where(stay > best, idx, torch.where(stay < best, first.expand(B, R), torch.minimum(idx, first)))
        new = torch.maximum(stay, best) + u[:, t]  # [B, R]
        live = (t < lengths)[:, None]  # padded words carry the state through unchanged
        dp = torch.where(live, new, dp)
        back[:, t] = torch.where(live, bp, idx)

    score, _ = dp.max(dim=1)  # [B]
    cur = torch.where(dp == score[:, None], idx, R).min(dim=1).values  # [B] lowest optimal last region
    assign = torch.empty(B, T, dtype=torch.long, device=device)
    for t in range(T - 1, -1, -1):
        assign[:, t] = cur
        cur = back[:, t].gather(1, cur[:, None]).squeeze(1)
    pos = torch.arange(T, device=device)[None, :]
    assign = assign.masked_fill(pos >= lengths[:, None], -1)
    score = torch.where(lengths == 0, torch.zeros_like(score), score)
    return MRFResult(assign, score)


def argmax_assign(unary: torch.Tensor, lengths: torch.Tensor, region_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's per-word alignment (beta = 0): long [B, T], lowest region index on ties, -1 at padding."""
    return chain_mrf(unary, lengths, region_mask, beta=0.0).assign


def runs(assign: list[int] | torch.Tensor, length: int | None = None) -> list[tuple[int, int, int]]:
    """Snippets of one sentence: maximal runs of consecutive words on the same region, as (start, end, region)
    with `end` exclusive. `assign` is one row of `MRFResult.assign`; padding (-1) and words >= length are dropped.
    """
    a = assign.tolist() if isinstance(assign, torch.Tensor) else list(assign)
    n = len(a) if length is None else int(length)
    a = a[:n]
    if any(x < 0 for x in a):
        raise ValueError(f"assignment has padding inside the first {n} words: {a}")
    out: list[tuple[int, int, int]] = []
    start = 0
    for j in range(1, n + 1):
        if j == n or a[j] != a[start]:
            out.append((start, j, a[start]))
            start = j
    return out


def snippet_counts(assign: torch.Tensor, lengths: torch.Tensor) -> tuple[int, int]:
    """(total words, total snippets) over a batch: mean snippet length = words / snippets."""
    lengths = torch.as_tensor(lengths).long().to(assign.device)
    T = assign.shape[1]
    if T == 0:
        return 0, 0
    pos = torch.arange(1, T, device=assign.device)[None, :]
    breaks = ((assign[:, 1:] != assign[:, :-1]) & (pos < lengths[:, None])).sum()
    nonempty = (lengths > 0).sum()
    return int(lengths.sum()), int(breaks + nonempty)
