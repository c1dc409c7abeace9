"""Image-sentence retrieval: R@1, R@5, R@10 and median rank, in both directions, under the paper's protocols.

Image annotation (image -> sentences): the rank of the first correct sentence among all sentences of the
evaluation set. Image search (sentence -> images): the rank of the sentence's image among all images.
Ranks are 1-based; a tie is counted against the correct item (rank = 1 + number of wrong items scoring at
least as high), so a model that gives every pair the same score ranks last, not first.

Protocols: "1k" the first 1,000 images of the split (Flickr8K/30K: the whole test split), "5k" the first
5,000 images (COCO 5K), "coco1k" the average over consecutive folds of 1,000 images (COCO 1K: 5 folds),
"all" every image. Each image keeps its first `sentences_per_image` (5) sentences.

Dimension glossary: N images, S sentences, R regions, T words, H embedding size.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from dvsa.align import hubness
from dvsa.align.model import lengths_mask
from dvsa.align.scores import image_sentence_scores_packed
from dvsa.data.progress import progress as progress_bar

RECALLS = (1, 5, 10)
PROTOCOLS = ("1k", "5k", "coco1k", "all")


def _ranks_summary(ranks: np.ndarray) -> dict:
    out = {f"r{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALLS}
    out["medr"] = float(np.median(ranks))
    out["meanr"] = float(np.mean(ranks))
    return out


def retrieval_ranks(scores, sentence_image, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """scores float [N, S] (image k vs sentence l), sentence_image long [S] (the image of each sentence).

    Returns (annotation ranks int [N], search ranks int [S]), 1-based. Every image needs a sentence.
    Reference: the paper's protocol (Karpathy & Fei-Fei, CVPR 2015, sec. 4.1), as the Kiros et al. VSE
    `i2t` / `t2i` evaluation code computes it: an image's annotation rank is the best rank of any of its
    sentences (5) among all S sentences; a sentence's search rank is the rank of its image among all N images.
    That code ranks by argsort, so ties fall in sort order; here a tie counts against the correct item (the
    numbers agree whenever the scores have no ties).
    """
    scores = torch.as_tensor(scores).float()
    owner = torch.as_tensor(np.asarray(sentence_image), dtype=torch.long)
    n, s = scores.shape
    if owner.shape != (s,) or (s and (owner.min() < 0 or owner.max() >= n)):
        raise ValueError(f"sentence_image must be [S={s}] indices into {n} images")
    if s and torch.bincount(owner, minlength=n).min() == 0:
        raise ValueError("every image needs at least one sentence")
    pos = scores[owner, torch.arange(s)]  # [S] score of each sentence with its own image
    best = torch.full((n,), float("-inf")).scatter_reduce(0, owner, pos, "amax")  # [N] best correct sentence
    ann = torch.empty(n, dtype=torch.long)
    search = torch.ones(s, dtype=torch.long)
    for i0 in range(0, n, chunk):
        block = scores[i0 : i0 + chunk]  # [c, S]
        rows = torch.arange(i0, i0 + block.shape[0])
        wrong = owner[None, :] != rows[:, None]  # [c, S] sentences of other images
        ann[i0 : i0 + chunk] = 1 + ((block >= best[i0 : i0 + chunk, None]) & wrong).sum(1)
        search += ((block >= pos[None, :]) & wrong).sum(0)
    return ann.numpy(), search.numpy()


def retrieval_metrics(scores, sentence_image, search_scores=None) -> dict:
    """{"annotation": {"r1", "r5", "r10", "medr", "meanr"}, "search": {...}, "rsum"}; recalls in percent.
    `search_scores` float [N, S]: rank the images for each sentence by these instead of `scores` (a correction
    that differs by direction, `align.hubness`).

    Reference: the paper's protocol (see `retrieval_ranks`): R@K = 100 * fraction of 1-based ranks <= K;
    Med r = median of the 1-based ranks (numpy's median: the mean of the middle two for an even count; the
    VSE / VSE++ code's floor(median(0-based ranks)) + 1 can be 0.5 lower then); mean r the mean rank; rsum the
    sum of the six recalls.
    """
    ann, search = retrieval_ranks(scores, sentence_image)
    if search_scores is not None:
        search = retrieval_ranks(search_scores, sentence_image)[1]
    out = {"annotation": _ranks_summary(ann), "search": _ranks_summary(search)}
    out["rsum"] = recall_sum(out["annotation"]) + recall_sum(out["search"])
    return out


def recall_sum(direction: dict) -> float:
    """R@1 + R@5 + R@10 of one direction's metrics (half of rsum)."""
    return sum(direction[f"r{k}"] for k in RECALLS)


def retrieval_metrics_slow(scores, sentence_image) -> dict:
    """The obvious twin: sort every row and column (wrong items first among ties), find the first correct item."""
    scores = np.asarray(scores, dtype=np.float64)
    owner = np.asarray(sentence_image)
    ann = []
    for i in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda j: (-scores[i, j], owner[j] == i))
        ann.append(1 + next(p for p, j in enumerate(order) if owner[j] == i))
    search = []
    for j in range(scores.shape[1]):
        order = sorted(range(scores.shape[0]), key=lambda k: (-scores[k, j], k == owner[j]))
        search.append(1 + order.index(owner[j]))
    out = {"annotation": _ranks_summary(np.array(ann)), "search": _ranks_summary(np.array(search))}
    out["rsum"] = sum(out[d][f"r{k}"] for d in ("annotation", "search") for k in RECALLS)
    return out


def protocol_folds(n_images: int, protocol: str) -> list[range]:
    """The image index ranges to evaluate (metrics are averaged over them)."""
    if protocol == "all":
        return [range(n_images)]
    if protocol == "1k":
        return [range(min(n_images, 1000))]
    if protocol == "5k":
        return [range(min(n_images, 5000))]
    if protocol == "coco1k":
        if n_images < 1000:
            raise ValueError(f"protocol coco1k needs at least 1000 images, the split has {n_images}")
        return [range(f * 1000, (f + 1) * 1000) for f in range(min(5, n_images // 1000))]
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def average_metrics(folds: list[dict]) -> dict:
    out = {d: {k: float(np.mean([f[d][k] for f in folds])) for k in folds[0][d]} for d in ("annotation", "search")}
    out["rsum"] = float(np.mean([f["rsum"] for f in folds]))
    return out


# --- embedding a collection with a trained model -------------------------------------------------------------


def eval_items(records, store, vocab, sentences_per_image: int | None = 5, max_words: int | None = None):
    """Images of `records` that are in the store, with their sentences.

    Returns (image_ids list[str], token ids list[list[int]], sentence_image int64 [S], sentence ids list[int]).
    Sentences with no words are left out; images left with no sentence are left out.
    """
    ids, tokens, owner, sids = [], [], [], []
    for rec in records:
        if rec.id not in store:
            continue
        sents = [s for s in rec.sentences if s.tokens][:sentences_per_image]
        if not sents:
            continue
        for s in sents:
            enc = vocab.encode(s.tokens)
            tokens.append(enc[:max_words] if max_words else enc)
            owner.append(len(ids))
            sids.append(s.id)
        ids.append(rec.id)
    return ids, tokens, np.asarray(owner, dtype=np.int64), sids


def pad_tokens(token_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of id lists -> (tokens long [S, T] padded with 0, lengths long [S])."""
    lengths = torch.tensor([len(t) for t in token_lists], dtype=torch.long)
    out = torch.zeros(len(token_lists), max(1, int(lengths.max())) if len(token_lists) else 1, dtype=torch.long)
    for i, t in enumerate(token_lists):
        out[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
    return out, lengths


@torch.inference_mode()
def embed_images(model, store, image_ids, batch: int = 256, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """-> (v float [N, R, H], rmask bool [N, R]) for the images, in order (R = the most regions of any)."""
    model.eval()
    vs, masks = [], []
    for i in range(0, len(image_ids), batch):
        feats, boxes, mask = store.padded(image_ids[i : i + batch])
        vs.append(model.embed_regions(torch.from_numpy(feats).to(device), torch.from_numpy(boxes).to(device)).float())
        masks.append(torch.from_numpy(mask).to(device))
    r = max(v.shape[1] for v in vs)
    v = torch.cat([torch.nn.functional.pad(x, (0, 0, 0, r - x.shape[1])) for x in vs])
    m = torch.cat([torch.nn.functional.pad(x, (0, r - x.shape[1])) for x in masks])
    return v, m


@torch.inference_mode()
def embed_sentences(model, token_lists, batch: int = 512, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """-> (words float [W, H] of every real word, sentence by sentence; counts long [S] words per sentence)."""
    model.eval()
    words, counts = [], []
    for i in range(0, len(token_lists), batch):
        tokens, lengths = pad_tokens(token_lists[i : i + batch])
        s = model.embed_words(tokens.to(device), lengths.to(device)).float()  # [b, T, H]
        words.append(s[lengths_mask(lengths.to(device), tokens.shape[1])])
        counts.append(lengths)
    return torch.cat(words), torch.cat(counts)


@torch.inference_mode()
def score_collection(model, store, image_ids, token_lists, kind: str | None = None, device="cpu",
                     sentence_block: int = 2048, chunk: int = 1 << 24, progress: bool = True,
                     desc: str = "scoring") -> torch.Tensor:
    """Scores of every image against every sentence: float [N, S] on the CPU.

    Sentences are embedded and scored `sentence_block` at a time, so memory holds the image embeddings and
    one block of words. `progress`: a bar over the sentences (`dvsa.data.progress`), labelled `desc`.
    """
    kind = kind or model.cfg.score
    v, rmask = embed_images(model, store, image_ids, device=device)
    cols = []
    bar = progress_bar(total=len(token_lists), desc=desc, unit="sent", enabled=progress)
    for j in range(0, len(token_lists), sentence_block):
        words, counts = embed_sentences(model, token_lists[j : j + sentence_block], device=device)
        cols.append(image_sentence_scores_packed(v, rmask, words, counts, kind=kind, chunk=chunk,
                                                 norm=model.cfg.score_norm).cpu())
        bar.update(len(counts))
    bar.close()
    return torch.cat(cols, 1) if cols else torch.zeros(len(image_ids), 0)


def evaluate_retrieval(model, store, records, vocab, protocol: str = "1k", sentences_per_image: int | None = 5,
                       kind: str | None = None, device="cpu", progress: bool = True, keep_scores: bool = False,
                       bank: list | None = None, bank_sentences: int | None = None, betas: tuple = (1.0,)) -> dict:
    """Retrieval metrics of a model on `records` (one split) whose images are in `store`.

    Returns {"annotation": {...}, "search": {...}, "rsum", "protocol", "folds": [...per fold...],
    "n_images", "n_sentences", "missing_images"} with recalls in percent. `progress`: a bar per fold's scoring.
    `keep_scores`: also "scores", the first fold's float [N, S] score matrix (`score_collection` of its N images
    and their S sentences, in `eval_items` order), so a caller that shows examples need not score them again.

    `bank` (training records, `align.hubness.bank_records`; their first `bank_sentences` sentences, default
    `sentences_per_image`): the scores are corrected with the inverted softmax over the bank (`align.hubness`)
    at each element of `betas`, a beta for both directions or an (annotation beta, search beta) pair (None: that
    direction uncorrected); the metrics above are then those of the first element, "plain" holds the
    uncorrected ones and "bank" {"images", "sentences", "rows": [{beta: [annotation, search], annotation,
    search, rsum}]} one row per element; with `keep_scores`, "scores_annotation" / "scores_search" are the first
    fold's corrected matrices at the first element.
    """
    ids, tokens, owner, _ = eval_items(records, store, vocab, sentences_per_image, model.cfg.max_words)
    folds = protocol_folds(len(ids), protocol)
    if not ids:
        raise ValueError("no evaluation image has features in the store")
    if bank is not None:
        bank_ids, bank_tokens, _, _ = eval_items(bank, store, vocab, bank_sentences or sentences_per_image,
                                                 model.cfg.max_words)
        betas = [tuple(b) if isinstance(b, (tuple, list)) else (b, b) for b in betas]
        if not bank_ids:
            raise ValueError("no bank image has features in the store")
    plain, per_beta, kept = [], [[] for _ in betas], {}
    for f, fold in enumerate(folds):
        keep = np.isin(owner, np.asarray(fold))
        fold_tokens = [t for t, k in zip(tokens, keep) if k]
        fold_ids = [ids[i] for i in fold]
        desc = f"retrieval fold {f + 1}/{len(folds)}" if len(folds) > 1 else "retrieval"
        scores = score_collection(model, store, fold_ids, fold_tokens, kind=kind, device=device,
                                  progress=progress, desc=desc)
        fold_owner = owner[keep] - fold.start
        plain.append(retrieval_metrics(scores, fold_owner))
        if keep_scores and f == 0:
            kept["scores"] = scores
        if bank is None:
            continue
        bank_images = score_collection(model, store, bank_ids, fold_tokens, kind=kind, device=device,
                                       progress=progress, desc=desc + ", bank images")  # [Nb, S]
        bank_sentence_scores = score_collection(model, store, fold_ids, bank_tokens, kind=kind, device=device,
                                                progress=progress, desc=desc + ", bank sentences")  # [N, Sb]
        for b, beta in enumerate(betas):
            ann, search = hubness.corrected(scores, bank_images, bank_sentence_scores, *beta)
            per_beta[b].append(retrieval_metrics(ann, fold_owner, search))
            if keep_scores and f == 0 and b == 0:
                kept.update(scores_annotation=ann, scores_search=search)
    out = average_metrics(plain)
    if bank is not None:
        rows = [{"beta": list(beta), **average_metrics(m)} for beta, m in zip(betas, per_beta)]
        out = {**{k: rows[0][k] for k in ("annotation", "search", "rsum")}, "plain": out,
               "bank": {"images": len(bank_ids), "sentences": len(bank_tokens), "rows": rows}}
    out.update(kept)
    n = len(folds[0])
    out.update(protocol=protocol, folds=plain, n_images=n, n_sentences=int(np.isin(owner, np.asarray(folds[0])).sum()),
               n_folds=len(folds), missing_images=sum(r.id not in store for r in records))
    if math.isnan(out["rsum"]):
        raise ValueError("retrieval metrics are not finite")
    return out


def metrics_table(metrics: dict) -> str:
    """A text table of R@1, R@5, R@10, median rank for both directions."""
    head = f"{'':<12}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'Med r':>7}"
    lines = [head]
    for d, name in (("annotation", "annotation"), ("search", "search")):
        m = metrics[d]
        lines.append(f"{name:<12}{m['r1']:>7.1f}{m['r5']:>7.1f}{m['r10']:>7.1f}{m['medr']:>7.1f}")
    lines.append(f"{'R@K sum':<12}{metrics['rsum']:>7.1f}")
    return "\n".join(lines)
