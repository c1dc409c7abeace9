"""Image-sentence scores from region and word embeddings: eq. 8 (each word takes its best region) and the
DeFrag score of eq. 7. One batched computation over every (image, sentence) pair, in chunks so memory stays
bounded whatever the collection size. Differentiable (used for training batches too).

Dimension glossary: B images, R regions, S sentences, T words of a padded sentence, W real words of all
sentences together (padding removed), H embedding size.
"""
from __future__ import annotations

import torch


def _sentence_groups(counts: torch.Tensor, max_words: int) -> list[tuple[int, int]]:
    """Split sentences 0..S-1 into consecutive groups of at most `max_words` real words (at least one sentence)."""
    ends = torch.cumsum(counts, 0).tolist()
    groups, start, base = [], 0, 0
    for j, e in enumerate(ends):
        if e - base > max_words and j > start:
            groups.append((start, j))
            start, base = j, ends[j - 1]
    groups.append((start, len(ends)))
    return groups


def image_sentence_scores(
    v: torch.Tensor,
    rmask: torch.Tensor,
    s: torch.Tensor,
    wmask: torch.Tensor,
    kind: str = "max",
    chunk: int = 1 << 24,
    norm: str = "none",
) -> torch.Tensor:
    """Scores S_kl of every image k against every sentence l: float [B, S].

    v float [B, R, H] region embeddings, rmask bool [B, R] (True = real region; every image needs one),
    s float [S, T, H] word embeddings, wmask bool [S, T] (True = real word).
    kind "max" (eq. 8): S_kl = sum_t max_i v_i.s_t; "defrag" (eq. 7): S_kl = sum_t sum_i max(0, v_i.s_t).
    Padded words are removed first (no work is spent on them); padded regions never win the max (eq. 8) and
    add nothing (eq. 7). `chunk` bounds the elements of each [images*R, words] block of dot products.
    norm "none": the sums as written; "words": each sentence's score divided by its number of words (a
    sentence's ranking of images does not change; long sentences stop dominating the loss).
    A sentence with no real word scores 0.
    """
    b, r, h = v.shape
    n_sent, t = s.shape[:2]
    if rmask.shape != (b, r) or wmask.shape != (n_sent, t) or s.shape[2] != h:
        raise ValueError(
            f"shapes do not match: v {list(v.shape)}, rmask {list(rmask.shape)}, s {list(s.shape)}, wmask {list(wmask.shape)}"
        )
    wmask = wmask.to(s.device).bool()
    return image_sentence_scores_packed(v, rmask, s[wmask], wmask.sum(1), kind=kind, chunk=chunk, norm=norm)


def image_sentence_scores_packed(
    v: torch.Tensor,
    rmask: torch.Tensor,
    words: torch.Tensor,
    counts: torch.Tensor,
    kind: str = "max",
    chunk: int = 1 << 24,
    norm: str = "none",
) -> torch.Tensor:
    """`image_sentence_scores` with the sentences packed: words float [W, H] (every real word, sentence by
    sentence), counts long [S] (words per sentence, summing to W). Returns float [B, S]."""
    if kind not in ("max", "defrag"):
        raise ValueError(f"kind must be 'max' or 'defrag', got {kind!r}")
    if norm not in ("none", "words"):
        raise ValueError(f"norm must be 'none' or 'words', got {norm!r}")
    b, r, h = v.shape
    counts = counts.to(words.device).long()
    n_sent = counts.shape[0]
    if words.dim() != 2 or words.shape[1] != h or int(counts.sum()) != words.shape[0]:
        raise ValueError(f"words {list(words.shape)} and counts (sum {int(counts.sum())}) do not match H={h}")
    rmask = rmask.to(v.device).bool()
    if b and not bool(rmask.any(1).all()):
        raise ValueError("every image needs at least one real region")
    owner = torch.repeat_interleave(torch.arange(n_sent, device=words.device), counts)  # [W] sentence of each word
    offsets = torch.cumsum(counts, 0) - counts  # [S] first word of each sentence in `words`
    # Blocks of bi images x (words of whole sentences): about `chunk` dot products each.
    n_words = max(1, int(words.shape[0]))
    bi = max(1, min(b, 256, chunk // (r * min(n_words, 4096))))
    max_w = max(1, chunk // (r * bi))
    groups = _sentence_groups(counts.cpu(), max_w)
    if kind == "max" and not bool(rmask.all()):
        # A padded region becomes a copy of the image's first real region: the max is unchanged and no mask
        # pass over the [images*R, words] block is needed.
        first = v[torch.arange(b, device=v.device), rmask.to(torch.int8).argmax(1)]  # [B, H]
        v = torch.where(rmask[..., None], v, first[:, None, :])
    out = v.new_zeros(b, n_sent)
    rows = []
    for i0 in range(0, b, bi):
        vi = v[i0 : i0 + bi]  # [bi, R, H]
        nb = vi.shape[0]
        cols = []
        for s0, s1 in groups:
            w0 = int(offsets[s0]) if s0 < n_sent else 0
            w1 = int(offsets[s1 - 1] + counts[s1 - 1]) if s1 > s0 else w0
            if w1 == w0:
                cols.append(out.new_zeros(nb, s1 - s0))
                continue
            dots = (vi.reshape(nb * r, h) @ words[w0:w1].T).view(nb, r, w1 - w0)  # [bi, R, w]
            if kind == "max":
                per_word = dots.amax(1)  # [bi, w]
            else:
                per_word = (dots.clamp_min(0) * rmask[i0 : i0 + nb, :, None]).sum(1)  # [bi, w]
            # Sum each sentence's words: [bi, w] -> [bi, s1 - s0].
            local = owner[w0:w1] - s0
            cols.append(per_word.new_zeros(nb, s1 - s0).index_add(1, local, per_word))
        rows.append(torch.cat(cols, 1) if cols else out[i0 : i0 + nb])
    scores = torch.cat(rows, 0) if rows else out
    if norm == "words":
        scores = scores / counts.clamp_min(1).to(scores.dtype)[None, :]
    return scores


def image_sentence_scores_slow(v, rmask, s, wmask, kind: str = "max", norm: str = "none") -> torch.Tensor:
    """The obvious twin of `image_sentence_scores`: loops over images, sentences, words and regions."""
    b, n_sent = v.shape[0], s.shape[0]
    out = torch.zeros(b, n_sent, dtype=torch.float64)
    for k in range(b):
        regions = [v[k, i].double() for i in range(v.shape[1]) if rmask[k, i]]
        for l in range(n_sent):
            total = 0.0
            for t in range(s.shape[1]):
                if not wmask[l, t]:
                    continue
                dots = [float(ri @ s[l, t].double()) for ri in regions]
                total += max(dots) if kind == "max" else sum(max(0.0, d) for d in dots)
            n_words = int(sum(bool(x) for x in wmask[l]))
            out[k, l] = total / max(1, n_words) if norm == "words" else total
    return out
