"""Consensus re-ranking of the beam's captions by the captions of the nearest training images.

    bank = CaptionBank.from_data(train)                  # training inputs [M, Din] and their reference captions
    bank.save(run / "bank.pt"); bank = CaptionBank.load(run / "bank.pt")
    best = bank.rerank(feats, candidates, k=10)          # one caption index per image

The beam search gives every image a few finished captions. Each is scored by CIDEr-D (`generate.cider_reward`,
with the document frequencies of the bank's captions) against the pooled reference captions of the image's `k`
nearest bank images, plus `weight` x its log-probability per word (END counted); the best score is the caption.
Neighbours are ranked by the cosine similarity of the inputs after centring on the bank's mean. This is the
consensus re-ranking of Devlin et al. 2015 ("Exploring Nearest Neighbor Approaches for Image Captioning"), here
over the generator's own candidates rather than over the neighbours' captions: the caption is still generated,
the training captions only vote among the beam's answers. On the Flickr8k pipeline's 500 held-out train photos
(beam 7) it raised CIDEr from 40.1 to 46.1 (docs/experiments.md).

In a run folder the run's alignment model votes too (`generate.align_vote`): each candidate's consensus score
gains `GenConfig.align_vote` x the aligner's hub-corrected score of (image, caption), so that among captions the
neighbours agree on, the one that fits this photo more than most wins (held-out photos, beam 15: CIDEr 49.4).

`train_generator` writes ``bank.pt`` beside a full-frame model (`GenConfig.consensus_k` > 0 uses it; the
pipeline's captions stage, `dvsa caption` and `dvsa generate eval` find it next to the checkpoint).

Dimensions: M bank images, Din input size, B images being captioned, C candidates of an image.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from dvsa.data.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dvsa.generate.align_vote import AlignVote
from dvsa.generate.cider_reward import CiderReward

BANK_FILE = "bank.pt"


class CaptionBank:
    """Training inputs (centred and unit-length, float32 [M, Din]), their mean (float32 [Din]) and their
    reference captions (M lists of space-joined token strings); `vote`, when set, the run's aligner
    (`generate.align_vote.AlignVote`), which `pick` adds to the consensus at `GenConfig.align_vote`."""

    def __init__(self, feats: np.ndarray, mean: np.ndarray, captions: list[list[str]]):
        feats = np.asarray(feats, np.float32)
        if feats.ndim != 2 or feats.shape[0] != len(captions) or mean.shape != (feats.shape[1],):
            raise ValueError(f"bank feats {list(feats.shape)}, mean {list(mean.shape)} and {len(captions)} caption "
                             "lists do not match")
        if not len(captions):
            raise ValueError("an empty caption bank")
        self.feats, self.mean, self.captions = feats, np.asarray(mean, np.float32), captions
        self.vote: AlignVote | None = None

    @cached_property
    def reward(self) -> CiderReward:
        """CIDEr-D with the bank captions' document frequencies, keyed by str(row); built on first use (saving a
        bank needs none of it)."""
        return CiderReward({str(i): caps for i, caps in enumerate(self.captions)})

    @classmethod
    def build(cls, feats: np.ndarray, captions: list[list[str]]) -> CaptionBank:
        """From raw inputs float [M, Din] and their captions; inputs without a caption are left out."""
        keep = [i for i, c in enumerate(captions) if c]
        feats = np.asarray(feats, np.float32)[keep]
        mean = feats.mean(0) if len(feats) else np.zeros(feats.shape[1], np.float32)
        return cls(_unit(feats - mean), mean, [captions[i] for i in keep])

    @classmethod
    def from_data(cls, data) -> CaptionBank:
        """From a full-frame `generate.data.CaptionData` (feats [F, Din], refs by key)."""
        return cls.build(data.feats, [data.refs.get(k, []) for k in data.keys])

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically, loadable with weights_only (features stored as float16)."""
        save_checkpoint(path, {"kind": "caption_bank", "feats": torch.from_numpy(self.feats).half(),
                               "mean": torch.from_numpy(self.mean), "captions": self.captions})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaptionBank:
        ck = load_checkpoint(path, kind="caption_bank", required=("feats", "mean", "captions"))
        try:
            return cls(ck["feats"].float().numpy(), ck["mean"].float().numpy(), list(ck["captions"]))
        except (ValueError, AttributeError, TypeError) as e:
            raise CheckpointError(f"{path}: not a readable caption bank ({e})") from None

    def neighbours(self, feats: np.ndarray, k: int) -> np.ndarray:
        """Indices long [B, k'] (k' = min(k, M)) of the bank images nearest to each input of feats [B, Din]."""
        q = np.asarray(feats, np.float32).reshape(len(feats), -1)
        if q.shape[1] != self.feats.shape[1]:
            raise ValueError(f"inputs of size {q.shape[1]} for a bank of size {self.feats.shape[1]}")
        q = _unit(q - self.mean)
        sim = q @ self.feats.T  # [B, M]
        k = min(k, len(self.feats))
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, 1), axis=1, kind="stable")
        return np.take_along_axis(top, order, 1)

    def consensus(self, caption: str, neighbours) -> float:
        """CIDEr-D of one caption against the pooled captions of bank images `neighbours`."""
        return self.reward.score_against(caption, [v for j in neighbours for v in self.reward.refs[str(int(j))]])

    def rerank(self, feats: np.ndarray, candidates: list[list[tuple[str, float, int]]], k: int,
               weight: float = 0.0, extra: list[np.ndarray] | None = None) -> list[int]:
        """For each image (feats [B, Din]) the index of its best candidate (caption text, logprob, tokens):
        consensus + weight x logprob / (tokens + 1) + extra (per image, one value per candidate: the aligner's
        vote). Ties keep the beam's order."""
        if len(candidates) != len(feats) or (extra is not None and len(extra) != len(feats)):
            raise ValueError(f"{len(candidates)} candidate lists for {len(feats)} inputs")
        nbrs = self.neighbours(feats, k)
        best = []
        for b, (cands, nb) in enumerate(zip(candidates, nbrs)):
            scores = [self.consensus(c, nb) + (weight * lp / (n + 1) if weight else 0.0) for c, lp, n in cands]
            if extra is not None:
                scores = [x + float(e) for x, e in zip(scores, extra[b])]
            best.append(int(np.argmax(scores)) if scores else 0)
        return best


def reranks(bank: CaptionBank | None, cfg, beam: int) -> bool:
    """Whether a decoder re-ranks its beam: a bank, `cfg.consensus_k` > 0, more than one beam and a full-frame
    (not a region-set) generator."""
    return bank is not None and cfg.consensus_k > 0 and beam > 1 and cfg.input != "regions"


def pick(bank: CaptionBank, vocab, feats: np.ndarray, hyps: list[list[tuple]], cfg) -> list[int]:
    """The consensus choice (`CaptionBank.rerank` with `cfg.consensus_k`, `cfg.consensus_weight`, and the bank's
    aligner vote at `cfg.align_vote` when it has one) among each image's beam hypotheses (tokens, logprob, ...) of
    `generate.decode.beam_search`; feats float [B, Din]."""
    feats = np.asarray(feats, np.float32)
    texts = [[(" ".join(vocab.decode(h[0])), float(h[1]), len(h[0])) for h in cands] for cands in hyps]
    extra = None
    if bank.vote is not None and cfg.align_vote > 0:
        extra = [cfg.align_vote * v for v in bank.vote.scores(feats, [[t for t, _, _ in ts] for ts in texts])]
    return bank.rerank(feats, texts, cfg.consensus_k, cfg.consensus_weight, extra)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def bank_for(checkpoint: str | os.PathLike, cfg, input_dim: int | None = None) -> CaptionBank | None:
    """The caption bank beside a generator checkpoint when its config re-ranks (`consensus_k` > 0) and the file
    is there, else None (plain beam search). A bank that cannot be read, or whose inputs are not of the
    generator's `input_dim`, is a CheckpointError naming it. When the checkpoint is a run folder's
    (RUN/gen_full/model.pt, the run holding align/) and `cfg.align_vote` > 0, the bank carries the run's aligner
    vote (`AlignVote.from_run`: None, with a note, when the run lacks its bank or features)."""
    path = Path(checkpoint).parent / BANK_FILE
    if not getattr(cfg, "consensus_k", 0) or not path.is_file():
        return None
    bank = CaptionBank.load(path)
    if input_dim is not None and bank.feats.shape[1] != input_dim:
        raise CheckpointError(f"{path}: a caption bank of {bank.feats.shape[1]}-d inputs beside a generator of "
                              f"{input_dim}-d inputs (it belongs to another model: move it away or pass "
                              "--consensus-k 0)")
    run = Path(checkpoint).resolve().parent.parent
    if getattr(cfg, "align_vote", 0) > 0 and (run / "align").is_dir():
        bank.vote = AlignVote.from_run(run, cfg.align_vote_beta)
    return bank
