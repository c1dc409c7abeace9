"""Tiny stand-ins shared by the snippet / grounding / picture tests: a feature store on disk and a model with
the alignment model's scoring interface (word_region_scores, embed_regions, embed_words)."""
from __future__ import annotations

import numpy as np
import torch
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Phrase, Region, Sentence
from dvsa.data.text import Vocabulary


class FakeAligner:
    """s_t = table[token], v_i = region feature: scores are dot products, like the real model's."""

    def __init__(self, table: torch.Tensor):
        self.table = table.float()  # [V, D]
        self.training = False

    def eval(self):
        return self

    def embed_regions(self, feats, boxes=None):
        return feats.float()

    def embed_words(self, tokens, lengths):
        mask = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
        return self.table[tokens] * mask[..., None]

    def word_region_scores(self, feats, region_mask, tokens, lengths, boxes=None):
        s = self.embed_words(tokens, lengths)  # [B, T, D]
        dots = torch.einsum("btd,brd->btr", s, feats.float())
        dots = dots.masked_fill(~region_mask[:, None, :], float("-inf"))
        mask = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
        return dots.masked_fill(~mask[..., None], 0.0)


WORDS = ["a", "the", "red", "blue", "circle", "square", "left", "of", "on", "big"]


def random_world(tmp_path, n_images=6, dim=8, seed=0, max_regions=5):
    """Records with random sentences over WORDS, a store with random features, and a random FakeAligner."""
    g = np.random.default_rng(seed)
    vocab = Vocabulary(WORDS)
    records = []
    writer = FeatureStoreWriter(tmp_path / "store", {"dim": dim, "producer": "test"}, part_size=4)
    sid = 0
    for k in range(n_images):
        w, h = 64 + 8 * k, 48
        r = int(g.integers(1, max_regions + 1))
        boxes = [[0, 0, w, h]] + [sorted2(g, w, h) for _ in range(r - 1)]
        writer.add(f"im{k}", np.array(boxes), g.normal(size=(r, dim)), g.normal(size=dim), (w, h))
        sents = []
        for _ in range(3):
            n = int(g.integers(0, 8))
            toks = [WORDS[i] for i in g.integers(0, len(WORDS), n)] + (["zebra"] if g.random() < 0.3 else [])
            sents.append(Sentence(sid, " ".join(toks), toks))
            sid += 1
        records.append(ImageRecord(f"im{k}", f"im{k}.png", w, h, "train", sents))
    writer.close()
    model = FakeAligner(torch.from_numpy(g.normal(size=(len(vocab), dim))))
    return records, FeatureStore(tmp_path / "store"), model, vocab


def sorted2(g, w, h):
    x = np.sort(g.uniform(0, w, 2))
    y = np.sort(g.uniform(0, h, 2))
    return [x[0], y[0], x[1] + 1, y[1] + 1]


COLORS, SHAPES = ["red", "blue"], ["circle", "square"]


def shape_words(extra_dims: int = 0) -> tuple[Vocabulary, torch.Tensor]:
    """The vocabulary of the grounded scenes' sentences and a FakeAligner table over region features laid out as
    [colour one-hot, shape one-hot, `extra_dims` features no word reads, whole-image marker]. Function words
    prefer the whole image a little (0.6), as a trained model's do; without that the MRF has exact ties."""
    vocab = Vocabulary(["a", "the", "left", "of"] + COLORS + SHAPES)
    table = torch.zeros(len(vocab), len(COLORS) + len(SHAPES) + extra_dims + 1)
    for w in ("a", "the", "left", "of"):
        table[vocab.stoi[w], -1] = 0.6
    for i, c in enumerate(COLORS):
        table[vocab.stoi[c], i] = 1.0
    for i, s in enumerate(SHAPES):
        table[vocab.stoi[s], len(COLORS) + i] = 1.0
    return vocab, table


def grounded_world(tmp_path, n_images=5, noise=0.0, seed=0):
    """Scenes of coloured shapes with ground-truth phrases, and a FakeAligner that knows which word names which
    object kind (plus `noise`). Region row r+1 of the store is object r's box (row 0 = whole image).

    Sentence: "a <color> <shape> left of the <color> <shape>"; phrases cover tokens 0-3 and 5-8. Function words
    prefer the whole image a little (0.6), as a trained model's do; without that the MRF has exact ties.
    """
    g = np.random.default_rng(seed)
    kinds = [(c, s) for c in COLORS for s in SHAPES]
    colors, shapes = COLORS, SHAPES
    vocab, table = shape_words(extra_dims=0)
    dim = table.shape[1]
    writer = FeatureStoreWriter(tmp_path / "store", {"dim": dim, "producer": "test"}, part_size=3)
    records, sid = [], 0
    for k in range(n_images):
        w, h = 100, 80
        objs = [kinds[i] for i in g.permutation(len(kinds))[:2]]
        boxes = [[5, 5, 45, 45], [55, 30, 95, 75]]
        feats = np.zeros((3, dim))
        feats[0, -1] = 1.0
        for r, (c, s) in enumerate(objs):
            feats[r + 1, colors.index(c)] = 1.0
            feats[r + 1, len(colors) + shapes.index(s)] = 1.0
        feats += noise * g.normal(size=feats.shape)
        writer.add(f"s{k}", np.array([[0, 0, w, h]] + boxes), feats, feats[0], (w, h))
        toks = ["a", objs[0][0], objs[0][1], "left", "of", "the", objs[1][0], objs[1][1]]
        sent = Sentence(sid, " ".join(toks), toks)
        regions = [Region(list(map(float, boxes[r])), f"{c} {s}", s, str(r)) for r, (c, s) in enumerate(objs)]
        phrases = [Phrase(sid, 0, 3, " ".join(toks[0:3]), ["0"]), Phrase(sid, 5, 8, " ".join(toks[5:8]), ["1"])]
        records.append(ImageRecord(f"s{k}", f"s{k}.png", w, h, "test", [sent], regions, phrases))
        sid += 1
    writer.close()
    return records, FeatureStore(tmp_path / "store"), FakeAligner(table), vocab
