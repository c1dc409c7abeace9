"""Training data of the generator: (input vector, sentence) pairs from the feature store.

Two sources, one container (`CaptionData`):
* full frames: every sentence of every image of a split, with the image's whole-frame input vector;
* region snippets: the JSON lines written by `align.snippets`, one per snippet::

      {"image_id": str, "sentence_id": int, "start": int, "end": int, "text": "space-joined tokens",
       "region": int (row in the store's regions of that image), "box": [x1, y1, x2, y2], "score": float}

Input vectors are stored once per image (or region) and shared by its sentences. Batches of token ids are
padded with PAD (0): inputs START w1 .. wn, targets w1 .. wn END.

With input "regions" (the attention model) every input is a padded set of region vectors: feats [F, R, D] and
masks [F, R] (True on real rows).

Dimensions: N items (pairs), F input vectors, Din input size, R regions of a set, B batch, T longest sentence + 1.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from dvsa.data.records import DataError, ImageRecord, select_split
from dvsa.data.text import END_ID, PAD_ID, START_ID, UNK, Vocabulary
from dvsa.generate.inputs import full_frame_features, input_features, region_sets


@dataclass
class CaptionData:
    """feats float32 [F, Din] (or [F, R, D] with masks bool [F, R] for input "regions"); items (feature row,
    token ids without START/END); keys[f] names feature row f (an image id, or "image_id#region"); refs[key] are
    the reference sentences (space-joined tokens) used to score a caption of that row."""

    feats: np.ndarray
    items: list[tuple[int, list[int]]]
    keys: list[str]
    refs: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # images absent from the store
    masks: np.ndarray | None = None  # bool [F, R], input "regions" only: True on real region rows

    def __len__(self) -> int:
        return len(self.items)

    def target_counts(self, vocab: Vocabulary) -> dict[str, int]:
        """Counts the vocabulary does not keep: UNK targets (for the output-bias initialisation)."""
        return {UNK: sum(t.count(vocab.stoi[UNK]) for _, t in self.items)}


def build_vocab(records: list[ImageRecord] | None, min_count: int, snippets: list[dict] | None = None) -> Vocabulary:
    """Vocabulary of the training split's sentences (paper); from snippet texts only when there are no records."""
    if records is not None:
        return Vocabulary.build((s.tokens for r in select_split(records, "train") for s in r.sentences), min_count)
    if snippets is None:
        raise ValueError("need records or snippets to build a vocabulary")
    return Vocabulary.build((s["text"].split() for s in snippets), min_count)


def full_frame_data(records: list[ImageRecord], store, vocab: Vocabulary, mode: str = "image") -> CaptionData:
    """All sentences of `records` with their image's whole-frame input; images missing from the store are skipped
    (listed in `.skipped`)."""
    have = [r for r in records if r.id in store]
    skipped = [r.id for r in records if r.id not in store]
    masks = None
    if mode == "regions":
        feats, masks = region_sets(store, [r.id for r in have]) if have else (np.zeros((0, 1, store.dim), np.float32),
                                                                               np.zeros((0, 1), bool))
    else:
        feats = full_frame_features(store, [r.id for r in have], mode)
    items, refs = [], {}
    for f, r in enumerate(have):
        refs[r.id] = [" ".join(s.tokens) for s in r.sentences if s.tokens]
        items += [(f, vocab.encode(s.tokens)) for s in r.sentences if s.tokens]
    return CaptionData(feats, items, [r.id for r in have], refs, skipped, masks)


def snippet_data(snippets: list[dict], store, vocab: Vocabulary, mode: str = "region+image",
                 image_ids: set[str] | None = None, path: str = "<snippets>") -> CaptionData:
    """(region input, snippet) pairs; `image_ids` keeps only those images (a split). Snippets of images absent
    from the store are skipped; a region row the image does not have raises DataError (file, line)."""
    if mode == "regions":
        raise ValueError("input 'regions' (the attention generator) trains on full frames, not on snippets")
    groups: dict[str, list[dict]] = defaultdict(list)
    skipped = set()
    for s in snippets:
        if image_ids is not None and s["image_id"] not in image_ids:
            continue
        if s["image_id"] not in store:
            skipped.add(s["image_id"])
            continue
        if not s["text"].split():
            continue
        groups[f"{s['image_id']}#{s['region']}"].append(s)
    keys = sorted(groups)
    dim = store.dim * (2 if mode == "region+image" else 1)
    feats = np.zeros((len(keys), dim), np.float32)
    items, refs = [], {}
    for f, key in enumerate(keys):
        first = groups[key][0]
        try:
            feats[f] = input_features(store, first["image_id"], [first["region"]], mode)[0]
        except IndexError as e:
            raise DataError(path, str(e), first["_line"]) from None
        refs[key] = [s["text"] for s in groups[key]]
        items += [(f, vocab.encode(s["text"].split())) for s in groups[key]]
    return CaptionData(feats, items, keys, refs, sorted(skipped))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, world: int = 1) -> list[np.ndarray]:
    """A shuffled partition of range(n) into global batches, the same in every process (seeded by seed, epoch).

    A last batch smaller than `world` is dropped so every process gets at least one item.
    """
    g = np.random.default_rng([seed, epoch])
    perm = g.permutation(n)
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= world]


def collate(data: CaptionData, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items idx -> feats float32 [B, Din], inputs long [B, T] (START w..), targets long [B, T] (w.. END), PAD 0."""
    seqs = [data.items[i][1] for i in idx]
    T = max(len(s) for s in seqs) + 1
    inp = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    tgt = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    for b, s in enumerate(seqs):
        inp[b, : len(s) + 1] = torch.tensor([START_ID] + s)
        tgt[b, : len(s) + 1] = torch.tensor(s + [END_ID])
    feats = torch.from_numpy(data.feats[[data.items[i][0] for i in idx]])
    return feats, inp, tgt


def collate_mask(data: CaptionData, idx) -> torch.Tensor | None:
    """Items idx -> the region masks bool [B, R] of their inputs (input "regions"), else None."""
    if data.masks is None:
        return None
    return torch.from_numpy(data.masks[[data.items[i][0] for i in idx]])


def n_targets(data: CaptionData, idx) -> int:
    """Real target tokens (words + END) of items idx."""
    return sum(len(data.items[i][1]) + 1 for i in idx)
