"""Training pairs for the alignment model: (image in a FeatureStore, one of its sentences), and their batches.

Every sentence of an image is one pair (Flickr/COCO: 5 pairs per image). Sentences of images that are not in
the store are skipped and counted, never silently. Batches come from a permutation that depends only on
(seed, epoch), so a resumed run sees exactly the batches the uninterrupted run would have seen.

Dimension glossary: P pairs, B pairs in a batch, R regions, D feature size, T words.
"""
from __future__ import annotations

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
