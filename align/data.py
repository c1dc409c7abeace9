"""Training pairs for the alignment model: (image in a FeatureStore, one of its sentences), and their batches.

Every sentence of an image is one pair (Flickr/COCO: 5 pairs per image). Sentences of images that are not in
the store are skipped and counted, never silently. Batches come from a permutation that depends only on
(seed, epoch), so a resumed run sees exactly the batches the uninterrupted run would have seen.

A batch is either collated from the store when it is needed (`collate`: one store read per pair) or taken by
indexing from tensors that hold the whole split, collated once (`precollate`, `PairTensors.batch`: the same
tensors, no Python per pair). `batch_source` picks the second when it fits in the memory allowed.

Dimension glossary: P pairs, N images, B pairs in a batch, R regions, D feature size, T words.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from dvsa.align.retrieval import pad_tokens
from dvsa.data.text import Vocabulary


@dataclass
class PairSet:
    image_ids: list[str]  # images that have features, in record order
    pair_image: np.ndarray  # int64 [P]: index into image_ids of each pair's image
    tokens: list[list[int]]  # word ids of each pair's sentence (cut at max_words), never empty
    sentence_ids: list[int]
    missing_images: int  # images of the records that are not in the store
    skipped_sentences: int  # sentences skipped: their image is missing, or they have no words

    def __len__(self) -> int:
        return len(self.tokens)


def build_pairs(records, store, vocab: Vocabulary, max_words: int | None = None) -> PairSet:
    """All (image, sentence) pairs of `records` whose image is in `store`; words encoded with `vocab` (UNK kept)."""
    ids, pair_image, tokens, sids = [], [], [], []
    missing = skipped = 0
    for rec in records:
        if rec.id not in store:
            missing += 1
            skipped += len(rec.sentences)
            continue
        k = len(ids)
        used = False
        for s in rec.sentences:
            if not s.tokens:
                skipped += 1
                continue
            enc = vocab.encode(s.tokens)
            tokens.append(enc[:max_words] if max_words else enc)
            pair_image.append(k)
            sids.append(s.id)
            used = True
        if used:
            ids.append(rec.id)
    return PairSet(ids, np.asarray(pair_image, dtype=np.int64), tokens, sids, missing, skipped)


def epoch_batches(n_pairs: int, batch_size: int, epoch: int, seed: int) -> list[np.ndarray]:
    """The global batches of one epoch: a permutation of 0..n_pairs-1 drawn from (seed, epoch), cut in batches.

    The last, smaller batch is kept unless it has a single pair (eq. 9 has no negative for it).
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n_pairs, generator=g).numpy()
    out = [perm[i : i + batch_size] for i in range(0, n_pairs, batch_size)]
    return [b for b in out if len(b) > 1]


def rank_slice(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """The contiguous share of a global batch that one rank computes (ranks in order = the global order)."""
    bounds = np.linspace(0, len(batch), world + 1).round().astype(int)
    return batch[bounds[rank] : bounds[rank + 1]]


def collate(pairs: PairSet, idx: np.ndarray, store) -> dict[str, torch.Tensor]:
    """One batch of pairs: feats float [B, R, D], boxes float [B, R, 4], rmask bool [B, R], tokens long [B, T],
    lengths long [B], image long [B] (index of each pair's image, so pairs sharing an image are not taken as negatives)."""
    image = pairs.pair_image[idx]
    feats, boxes, rmask = store.padded([pairs.image_ids[i] for i in image])
    tokens, lengths = pad_tokens([pairs.tokens[i] for i in idx])
    return {
        "feats": torch.from_numpy(feats),
        "boxes": torch.from_numpy(boxes),
        "rmask": torch.from_numpy(rmask),
        "tokens": tokens,
        "lengths": lengths,
        "image": torch.from_numpy(image),
    }


@dataclass
class PairTensors:
    """A PairSet with its images' regions collated once (`precollate`); `batch(idx)` equals
    `collate(pairs, idx, store)` (same keys, shapes, dtypes and values), by indexing alone."""

    feats: torch.Tensor  # float32 [N, R, D]: region features of every image of the PairSet, R = the most regions
    boxes: torch.Tensor  # float32 [N, R, 4]
    rmask: torch.Tensor  # bool [N, R] (True = real region)
    n_regions: torch.Tensor  # long [N] real regions per image
    tokens: torch.Tensor  # long [P, T] word ids of each pair's sentence, 0 after its end, T = the longest
    lengths: torch.Tensor  # long [P]
    pair_image: torch.Tensor  # long [P] index of each pair's image

    def batch(self, idx) -> dict[str, torch.Tensor]:
        """The batch of pairs `idx` (int [B]), padded as `collate` pads: regions to the batch's most regions,
        words to its longest sentence."""
        idx = np.asarray(idx, dtype=np.int64)
        image = self.pair_image.numpy()[idx]  # [B]
        r = int(self.n_regions.numpy()[image].max())
        t = max(1, int(self.lengths.numpy()[idx].max()))
        return {
            "feats": _take(self.feats, image, r),  # [B, r, D]
            "boxes": _take(self.boxes, image, r),
            "rmask": _take(self.rmask, image, r),
            "tokens": _take(self.tokens, idx, t),  # [B, t]
            "lengths": torch.from_numpy(self.lengths.numpy()[idx]),
            "image": torch.from_numpy(image),
        }


def _take(x: torch.Tensor, rows: np.ndarray, n: int) -> torch.Tensor:
    """x[rows, :n] as a new tensor, gathered by numpy (one pass on one thread: torch's parallel gather is slower
    on a busy CPU)."""
    return torch.from_numpy(x.numpy()[rows, :n])


def precollate_bytes(pairs: PairSet, store) -> int:
    """Bytes `precollate(pairs, store)` will hold (reads only the boxes' counts)."""
    r = max((len(store.regions(i)[0]) for i in pairs.image_ids), default=1)
    t = max((len(x) for x in pairs.tokens), default=1)
    return len(pairs.image_ids) * r * (4 * store.dim + 16 + 1) + 8 * len(pairs.image_ids) + len(pairs) * 8 * (t + 2)


def precollate(pairs: PairSet, store) -> PairTensors:
    """Every image of `pairs` read once from `store` into padded tensors, every sentence padded (`PairTensors`)."""
    counts = np.array([len(store.regions(i)[0]) for i in pairs.image_ids], dtype=np.int64)  # [N]
    n, r = len(counts), max(1, int(counts.max(initial=0)))
    feats = np.zeros((n, r, store.dim), np.float32)
    boxes = np.zeros((n, r, 4), np.float32)
    for k, image_id in enumerate(pairs.image_ids):
        b, f = store.regions(image_id)
        feats[k, : len(b)], boxes[k, : len(b)] = f, b
    tokens, lengths = pad_tokens(pairs.tokens)
    return PairTensors(
        feats=torch.from_numpy(feats),
        boxes=torch.from_numpy(boxes),
        rmask=torch.from_numpy(np.arange(r)[None, :] < counts[:, None]),
        n_regions=torch.from_numpy(counts),
        tokens=tokens,
        lengths=lengths,
        pair_image=torch.from_numpy(pairs.pair_image),
    )


def batch_source(pairs: PairSet, store, max_gb: float) -> tuple[Callable[[np.ndarray], dict], str]:
    """(idx -> batch, how): batches by indexing `precollate`d tensors when they take at most `max_gb` GB,
    else `collate` from the store per batch. `how` is "precollated" or "per batch" (for the log)."""
    if max_gb > 0 and precollate_bytes(pairs, store) <= max_gb * 1e9:
        return precollate(pairs, store).batch, "precollated"
    return (lambda idx: collate(pairs, idx, store)), "per batch"
