"""Image-sentence scores from region and word embeddings: eq. 8 (each word takes its best region) and the
DeFrag score of eq. 7. One batched computation over every (image, sentence) pair, in chunks so memory stays
bounded whatever the collection size. Differentiable (used for training batches too).

Training (eq. 8 with a gradient): the gradient of a max is one-hot, so `WordMax` keeps only each word's best
region per image (long [B, W]) and its backward sends the gradient to that region alone, as two fused
gather-and-sum passes (`embedding_bag`) instead of autograd's dense products over every region; with bf16 dot
products, as two bf16 products with the one-hot matrix of the winners (faster than the gathers on a CPU with AMX).
`sparse_grad=False` keeps plain autograd through the blocks (the old path, for tests and ``dvsa bench train``).

Dimension glossary: B images, R regions, S sentences, T words of a padded sentence, W real words of all
sentences together (padding removed), H embedding size.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

CHUNK = 1 << 24  # the default bound on the elements of each block of dot products (and of WordMax's one-hot M)


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


def _word_max(v: torch.Tensor, words: torch.Tensor, chunk: int,
              dot_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every image and word the best region: (values float [B, W], region indices long [B, W]), computed in
    blocks of about `chunk` dot products. v float [B, R, H] (every row counts), words float [W, H].
    dot_dtype: the dtype of the dot products (None = v's); the values come back in v's dtype."""
    b, r, h = v.shape
    n_words = words.shape[0]
    best = v.new_empty(b, n_words)
    if dot_dtype is not None:
        v, words = v.to(dot_dtype), words.to(dot_dtype)
    arg = torch.empty(b, n_words, dtype=torch.long, device=v.device)
    bi = max(1, min(b, chunk // (r * max(1, n_words))))  # images per block, every word at once if it fits
    bw = max(1, min(n_words, chunk // (r * bi)))  # words per block
    for i0 in range(0, b, bi):
        vi = v[i0 : i0 + bi].reshape(-1, h)  # [bi * R, H]
        nb = vi.shape[0] // r
        for w0 in range(0, n_words, bw):
            dots = (vi @ words[w0 : w0 + bw].T).view(nb, r, -1)  # [bi, R, w]
            best[i0 : i0 + nb, w0 : w0 + bw], arg[i0 : i0 + nb, w0 : w0 + bw] = dots.max(1)
    return best, arg


class WordMax(torch.autograd.Function):
    """best[k, t] = max_i v[k, i] . words[t] (eq. 8 before the sum over a sentence's words), differentiable.

    Forward: v float [B, R, H], words float [W, H], chunk int -> float [B, W]; only the winning region's index
    (long [B, W]) is kept for the backward. Backward, with g = dL/dbest [B, W] and i* the winner:
    dL/dwords[t] = sum_k g[k, t] v[k, i*(k, t)] and dL/dv[k, i] = sum over words t won by region i of
    g[k, t] words[t]: B x W x H multiply-adds each, not the B x R x W x H of a dense backward. A tie goes to one
    of the tied regions (autograd's amax would split it between them; equal for ties of measure zero).
    dot_dtype: see `image_sentence_scores`. None: the backward in v's dtype, as two gather-and-sum passes
    (`embedding_bag`). bfloat16: as the backward of a linear layer under autocast, two bf16 matrix products (fp32
    accumulation, bf16 results) with the one-hot matrix M [W, B x R] that holds g[k, t] at (t, row of i*(k, t)):
    dL/dwords = M v, dL/dv = M^T words, when M has at most `chunk` elements (else the gather-and-sum passes).
    The gradients come back in v's dtype, rounded to bf16 as the autocast forward's own cast would round them.
    """

    @staticmethod
    def uses_products(n_words: int, n_images: int, n_regions: int, chunk: int = CHUNK,
                      dot_dtype: torch.dtype | None = None) -> bool:
        """Whether the backward is the bf16 products with M (else the gathers): bf16 dot products, and M's
        n_words x n_images x n_regions elements at most `chunk`."""
        return dot_dtype is not None and n_words * n_images * n_regions <= chunk

    @staticmethod
    def forward(ctx, v, words, chunk, dot_dtype=None):
        ctx.dense = WordMax.uses_products(words.shape[0], v.shape[0], v.shape[1], chunk, dot_dtype)
        ctx.dtype = v.dtype
        if ctx.dense:  # the products' operands, cast once for both passes
            v, words = v.to(dot_dtype), words.to(dot_dtype)
        best, arg = _word_max(v, words, chunk, dot_dtype)
        ctx.save_for_backward(v, words, arg)
        return best.to(ctx.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        v, words, arg = ctx.saved_tensors
        b, r, h = v.shape
        g = g.to(v.dtype).contiguous()
        rows = arg + torch.arange(b, device=arg.device)[:, None] * r  # [B, W] row of v.view(B * R, H)
        grad_v = grad_words = None
        if ctx.dense:  # M [W, B * R]: g[k, t] at (t, rows[k, t]); one entry per (t, k). v, words: bf16 here
            m = g.new_zeros(words.shape[0], b * r).scatter_(1, rows.T, g.T)  # g is in v's bf16 already
            if ctx.needs_input_grad[1]:
                grad_words = (m @ v.reshape(b * r, h)).to(ctx.dtype)  # [W, H]
            if ctx.needs_input_grad[0]:
                grad_v = (m.T @ words).to(ctx.dtype).view(b, r, h)  # [B, R, H]
            return grad_v, grad_words, None, None
        if ctx.needs_input_grad[1]:
            # every word is a bag of its B winning region rows, weighted by g
            grad_words = F.embedding_bag(rows.T.contiguous(), v.reshape(b * r, h), mode="sum",
                                         per_sample_weights=g.T.contiguous())  # [W, H]
        if ctx.needs_input_grad[0]:
            # every region row is a bag of the words it won: sort each image's words by their winner
            won, order = torch.sort(arg, dim=1, stable=True)  # [B, W]
            counts = torch.bincount((won + torch.arange(b, device=arg.device)[:, None] * r).reshape(-1),
                                    minlength=b * r)  # [B * R] words per region row
            offsets = torch.cumsum(counts, 0) - counts
            grad_v = F.embedding_bag(order.reshape(-1), words, offsets, mode="sum",
                                     per_sample_weights=g.gather(1, order).reshape(-1)).view(b, r, h)
        return grad_v, grad_words, None, None


def image_sentence_scores(
    v: torch.Tensor,
    rmask: torch.Tensor,
    s: torch.Tensor,
    wmask: torch.Tensor,
    kind: str = "max",
    chunk: int = CHUNK,
    norm: str = "none",
    sparse_grad: bool = True,
    dot_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Scores S_kl of every image k against every sentence l: float [B, S].

    v float [B, R, H] region embeddings, rmask bool [B, R] (True = real region; every image needs one),
    s float [S, T, H] word embeddings, wmask bool [S, T] (True = real word).
    kind "max" (eq. 8): S_kl = sum_t max_i v_i.s_t; "defrag" (eq. 7): S_kl = sum_t sum_i max(0, v_i.s_t).
    Padded words are removed first (no work is spent on them); padded regions never win the max (eq. 8) and
    add nothing (eq. 7). `chunk` bounds the elements of each [images*R, words] block of dot products.
    norm "none": the sums as written; "words": each sentence's score divided by its number of words (a
    sentence's ranking of images does not change; long sentences stop dominating the loss).
    A sentence with no real word scores 0. sparse_grad: with kind "max" and a gradient to compute, `WordMax`
    (the gradient of each max reaches its winning region only; no block is kept for the backward); False =
    autograd through every block (the old path: the same values and, without ties, the same gradients).
    dot_dtype: the dtype of the dot products of eq. 8's `WordMax` (None = v's). Training under bf16 autocast
    passes bfloat16: v and s are then bf16 values already, so a bf16 matrix product (fp32 accumulation) gives their
    dot products with only each word's best value rounded to bf16, at a third of an fp32 product's time on a CPU
    with native bf16. The sums over words and regions stay in v's dtype; `WordMax`'s backward is then two bf16
    products too (its gradients rounded to bf16, as the cast out of autocast rounds them anyway).
    """
    b, r, h = v.shape
    n_sent, t = s.shape[:2]
    if rmask.shape != (b, r) or wmask.shape != (n_sent, t) or s.shape[2] != h:
        raise ValueError(
            f"shapes do not match: v {list(v.shape)}, rmask {list(rmask.shape)}, s {list(s.shape)}, wmask {list(wmask.shape)}"
        )
    wmask = wmask.to(s.device).bool()
    return image_sentence_scores_packed(v, rmask, s[wmask], wmask.sum(1), kind=kind, chunk=chunk, norm=norm,
                                        sparse_grad=sparse_grad, dot_dtype=dot_dtype)


def image_sentence_scores_packed(
    v: torch.Tensor,
    rmask: torch.Tensor,
    words: torch.Tensor,
    counts: torch.Tensor,
    kind: str = "max",
    chunk: int = CHUNK,
    norm: str = "none",
    sparse_grad: bool = True,
    dot_dtype: torch.dtype | None = None,
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
    if kind == "max" and sparse_grad and torch.is_grad_enabled() and (v.requires_grad or words.requires_grad):
        best = WordMax.apply(v, words, chunk, dot_dtype)  # [B, W]
        scores = best.new_zeros(b, n_sent).index_add(1, owner, best)  # [B, S]
        return scores / counts.clamp_min(1).to(scores.dtype)[None, :] if norm == "words" else scores
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
    """The obvious twin of `image_sentence_scores`: loops over images, sentences, words and regions. Returns
    float64 [B, S], differentiable (autograd through the loops: the reference for `WordMax`'s gradients)."""
    b, n_sent = v.shape[0], s.shape[0]
    rows = []
    for k in range(b):
        regions = [v[k, i].double() for i in range(v.shape[1]) if rmask[k, i]]
        row = []
        for l in range(n_sent):
            total = torch.zeros((), dtype=torch.float64)
            for t in range(s.shape[1]):
                if not wmask[l, t]:
                    continue
                dots = torch.stack([ri @ s[l, t].double() for ri in regions])
                total = total + (dots.max() if kind == "max" else dots.clamp_min(0).sum())
            n_words = int(sum(bool(x) for x in wmask[l]))
            row.append(total / max(1, n_words) if norm == "words" else total)
        rows.append(torch.stack(row) if row else torch.zeros(0, dtype=torch.float64))
    return torch.stack(rows) if rows else torch.zeros(0, n_sent, dtype=torch.float64)
