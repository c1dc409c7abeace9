"""CIDEr-D of single captions against a fixed corpus: the reward of self-critical training (`generate.scst`).

    reward = CiderReward(refs)                       # refs {key: [reference sentence, ...]}, space-joined tokens
    r = reward.scores(keys, captions)                # float64 [N]: captions[i] scored against refs[keys[i]]

The formula is the coco-caption CIDEr-D that `pycocoevalcap.cider` implements (its CiderScorer, followed line for
line): n-grams of 1..4 words, tf-idf vectors with idf = log(number of documents) - log(max(1, document
frequency)), per-n cosine similarity with the hypothesis' weights clipped at the reference's, a Gaussian penalty
exp(-delta^2 / (2 sigma^2)) with sigma 6 on the length difference (the scorer's "length" counts the sentence's
bigrams, and so does this), the mean over n, the mean over references, times 10. One difference, by design: the
document frequencies come from the corpus given here once (the training captions, as in Rennie et al. 2017's
self-critical training with CIDEr-D), not from the references of each scored batch, so a caption's reward does
not depend on which other images share its batch. Scored against the same corpus that it counts, a caption gets
exactly pycocoevalcap's score (tests/test_scst.py). The consensus re-ranking (`generate.consensus`) scores
with it too.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

Vec = tuple[list[dict[tuple, float]], list[float], int]  # per-n tf-idf weights, per-n norms, "length"


def ngram_counts(sentence: str, n: int = 4) -> dict[tuple, int]:
    """Counts of the 1..n-grams of a space-joined sentence (pycocoevalcap's `precook`)."""
    words = sentence.split()
    counts: dict[tuple, int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


class CiderReward:
    """CIDEr-D with the document frequencies of `refs` (module doc). refs: {key: [sentence, ...]}."""

    def __init__(self, refs: dict[str, list[str]], n: int = 4, sigma: float = 6.0):
        if not refs:
            raise ValueError("CiderReward needs a non-empty corpus of references")
        self.n, self.sigma = n, sigma
        cooked = {k: [ngram_counts(s, n) for s in sents] for k, sents in refs.items() if sents}
        df: dict[tuple, float] = defaultdict(float)
        for counts in cooked.values():
            for gram in {g for c in counts for g in c}:
                df[gram] += 1.0
        self.df = dict(df)
        self.log_docs = math.log(float(len(cooked)))
        self.refs = {k: [self._vec(c) for c in counts] for k, counts in cooked.items()}

    def cook(self, sentence: str) -> Vec:
        """A sentence's tf-idf vectors, norms and length under this corpus' document frequencies."""
        return self._vec(ngram_counts(sentence, self.n))

    def _vec(self, counts: dict[tuple, int]) -> Vec:
        vec: list[dict[tuple, float]] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = float(tf) * (self.log_docs - math.log(max(1.0, self.df.get(gram, 0.0))))
            vec[k][gram] = w
            norm[k] += w * w
            if k == 1:  # as the reference scorer: its "length" is the number of bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def similarity(self, hyp: Vec, ref: Vec) -> float:
        """The mean over n of the clipped, length-penalised cosine similarities of two cooked sentences."""
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.exp(-(float(lh - lr) ** 2) / (2 * self.sigma**2))
        total = 0.0
        for k in range(self.n):
            val = 0.0
            rk = vr[k]
            for gram, w in vh[k].items():
                r = rk.get(gram, 0.0)
                val += min(w, r) * r
            if nh[k] != 0 and nr[k] != 0:
                val /= nh[k] * nr[k]
            total += val * penalty
        return total / self.n

    def score(self, key: str, caption: str) -> float:
        """CIDEr-D of one caption against refs[key]."""
        refs = self.refs.get(key)
        if not refs:
            raise KeyError(f"no references for {key!r}")
        return self.score_against(caption, refs)

    def score_against(self, caption: str, refs: list[Vec]) -> float:
        """CIDEr-D of one caption against cooked references (e.g. pooled from several keys of `refs`)."""
        hyp = self.cook(caption)
        return 10.0 * sum(self.similarity(hyp, r) for r in refs) / len(refs)

    def scores(self, keys: list[str], captions: list[str]) -> np.ndarray:
        """float64 [N]: captions[i] against refs[keys[i]]."""
        if len(keys) != len(captions):
            raise ValueError(f"{len(keys)} keys for {len(captions)} captions")
        return np.array([self.score(k, c) for k, c in zip(keys, captions)], dtype=np.float64)
