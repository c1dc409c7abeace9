"""The bidirectional max-margin objective of eq. 9 on a batch's image-sentence score matrix.

    C = sum_k [ sum_l max(0, S_kl - S_kk + m)  +  sum_l max(0, S_lk - S_kk + m) ]

Rows (S_kl, image k against every sentence l) rank sentences for an image; columns (S_lk, sentence k against
every image l) rank images for a sentence. Choices, documented here because the paper leaves them open:
- the true pair l = k is left out of both sums (it would only add the constant m);
- pairs that share an image (two sentences of one image in the same batch) are not negatives: pass `same`;
- "hardest" (VSE++) keeps only the largest hinge of each row and each column;
- reduction "mean" divides by the batch size B (so the learning rate does not depend on B), "sum" does not.
"""
from __future__ import annotations

import torch


def max_margin_loss(
    scores: torch.Tensor,
    margin: float = 1.0,
    hardest: bool = False,
    same: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """scores float [B, B] with S[k, l] = image k vs sentence l, true pairs on the diagonal.

    same: optional bool [B, B], True where (k, l) must not count as a negative (the diagonal always is).
    Returns a scalar.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square [B, B], got {list(scores.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    b = scores.shape[0]
    diag = scores.diagonal()  # [B]
    skip = torch.eye(b, dtype=torch.bool, device=scores.device)
    if same is not None:
        skip = skip | same.to(scores.device).bool()
    rows = (scores - diag[:, None] + margin).clamp_min(0).masked_fill(skip, 0)  # [B, B] image k, sentence l
    cols = (scores - diag[None, :] + margin).clamp_min(0).masked_fill(skip, 0)  # [B, B] image l, sentence k
    if hardest:
        total = rows.amax(1).sum() + cols.amax(0).sum() if b else scores.sum() * 0
    else:
        total = rows.sum() + cols.sum()
    return total / max(b, 1) if reduction == "mean" else total


def max_margin_loss_slow(scores, margin=1.0, hardest=False, same=None, reduction="mean") -> float:
    """The obvious twin of `max_margin_loss`: two loops over k and l, eq. 9 as written."""
    b = scores.shape[0]
    total = 0.0
    for k in range(b):
        row, col = [0.0], [0.0]
        for l in range(b):
            if l == k or (same is not None and bool(same[k, l])):
                continue
            row.append(max(0.0, float(scores[k, l] - scores[k, k]) + margin))
        for l in range(b):
            if l == k or (same is not None and bool(same[l, k])):
                continue
            col.append(max(0.0, float(scores[l, k] - scores[k, k]) + margin))
        total += (max(row) + max(col)) if hardest else (sum(row) + sum(col))
    return total / max(b, 1) if reduction == "mean" else total
