"""Hubness correction of retrieval scores with a bank of training items (the inverted softmax).

Some sentences score high with almost any image ("a man is standing in front of a building"), and some images
with almost any sentence: they are hubs, and they take the first rank from the right answer. The inverted softmax
(Smith et al., ICLR 2017; with the bank of queries drawn from the training set, as QB-Norm does: Bogolin et al.,
CVPR 2022) divides each candidate's exp-score by how well it scores against a fixed bank of training items of
the query's kind, so a hub loses what it gets from everyone:

    annotation (image i ranks sentences j):  s'(i, j) = s(i, j) - (1/beta) log sum_b exp(beta s(b, j)),
                                             b over the bank's images
    search (sentence j ranks images i):      s'(i, j) = s(i, j) - (1/beta) log sum_b exp(beta s(i, b)),
                                             b over the bank's sentences

with s the model's image-sentence score (eq. 8). The correction of a candidate depends only on the candidate and
the bank, never on the other test queries, so every query is answered on its own. Each direction has its own
beta, chosen on validation images (the pipeline's retrieval stage); the bank is `HubnessConfig.images` training
images and the first `HubnessConfig.sentences_per_image` sentences of each.

Glossary: N images, S sentences being ranked; Nb bank images, Sb bank sentences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class HubnessConfig:
    """Every default of the bank correction."""

    # training images in the bank; 0: the plain eq. 8 scores. On the Flickr8k pipeline's 500 held-out train photos
    # (its aligner), R@K sum 287.7 plain, 316.9 with a bank of 500 and 318.7 with 1,000 (beta 1 both ways)
    images: int = 1000
    # the bank's sentences: the first this many of each bank image. 1 ranked the held-out photos' images as well
    # as 5 (search R@K sum 149.4 against 148.9 at beta 1) for a fifth of the scoring
    sentences_per_image: int = 1
    # None: for each direction, the beta of `betas` with the best R@K sum of that direction on the validation
    # images (no correction in a direction none of them improves); a number: that beta for both directions
    beta: float | None = None
    betas: tuple = (0.5, 0.7, 1.0, 1.5, 2.0)  # the betas tried on the validation images
    seed: int = 0  # which training images form the bank


def correction(bank_scores, beta: float | None, dim: int) -> torch.Tensor | float:
    """(1/beta) logsumexp(beta s) of `bank_scores` over the bank's axis `dim`, in float64; 0 when beta is None
    (no correction)."""
    if beta is None:
        return 0.0
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return torch.logsumexp(beta * torch.as_tensor(bank_scores).double(), dim) / beta


def corrected(scores, bank_image_scores, bank_sentence_scores, beta: float | None,
              search_beta: float | None = ...) -> tuple[torch.Tensor, torch.Tensor]:
    """(annotation scores float [N, S], search scores float [N, S]) of `scores` [N, S] (module doc), from the
    bank's images against the S sentences (`bank_image_scores` [Nb, S]) and the N images against the bank's
    sentences (`bank_sentence_scores` [N, Sb]). `beta` corrects the annotation direction and `search_beta` the
    search direction (the same as `beta` when not given); None leaves a direction as it is."""
    search_beta = beta if search_beta is ... else search_beta
    s = torch.as_tensor(scores).double()
    col = correction(bank_image_scores, beta, 0)  # [S] per sentence
    row = correction(bank_sentence_scores, search_beta, 1)  # [N] per image
    col = col[None, :] if torch.is_tensor(col) else col
    row = row[:, None] if torch.is_tensor(row) else row
    return (s - col).float(), (s - row).float()


def bank_records(train_records: list, store, n: int, seed: int = 0) -> list:
    """`n` training records with features in `store`, drawn with `seed`, in reader order (all when fewer)."""
    usable = [r for r in train_records if r.id in store and r.sentences]
    if n >= len(usable):
        return usable
    pick = np.sort(np.random.default_rng(seed).choice(len(usable), n, replace=False))
    return [usable[i] for i in pick]
