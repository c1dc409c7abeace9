"""MRF snippets: every training sentence cut into runs of words that talk about one region (eqs. 10-12).

    scores   = model.word_region_scores(...)        # unary terms, float [B, T, R] per (image, sentence) pair
    beta     = calibrate_beta(batches, target_len)  # or a fixed value
    assign   = chain_mrf(scores, lengths, mask, beta)
    snippets = runs of equal regions -> JSON lines

One JSON line per snippet (the Snippets contract)::

    {"image_id": str, "sentence_id": int, "start": int, "end": int (exclusive, into Sentence.tokens),
     "text": "space-joined tokens", "region": int (row in the store's regions of that image),
     "box": [x1, y1, x2, y2] (pixels of the original image), "score": float}

`score` is the SUM of the snippet's words' unary scores v_{region} . s_t (the snippet's share of eq. 8);
`SnippetConfig.score = "mean"` gives the per-word mean instead. Everything streams in batches of pairs, so the
whole training set never sits in memory.

Dimension glossary: B pairs, T words, R regions, D region features, H embedding size.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from dvsa.align.mrf import chain_mrf, runs, snippet_counts
from dvsa.data.io import atomic_open, check_writable
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import DataError, ImageRecord, Sentence

SNIPPET_KEYS = ("image_id", "sentence_id", "start", "end", "text", "region", "box", "score")


@dataclass
class SnippetConfig:
    # beta of eq. 12. None = chosen by bisection so that snippets of a sample of training sentences have mean
    # length `target_len`.
    beta: float | None = None
    # Mean snippet length (words) that calibration aims at. 2.5: a caption of ~11 words (Flickr8k/COCO mean)
    # becomes ~4-5 pieces: its 2-3 noun phrases with their determiners and adjectives ("a black dog",
    # "the grass") and the verb / preposition pieces between them ("runs on"). Longer targets merge objects with
    # the relations between them; shorter ones approach the per-word argmax (beta = 0, mean ~1).
    target_len: float = 2.5
    calib_sentences: int = 2000  # sentences sampled (seeded) for calibration
    calib_iters: int = 30  # at most this many bisection steps (they stop at a relative precision of 1e-4)
    batch_size: int = 256  # (image, sentence) pairs scored at once
    score: str = "sum"  # snippet score: "sum" or "mean" of its words' unary scores
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        if self.score not in ("sum", "mean"):
            raise ValueError(f"SnippetConfig.score must be 'sum' or 'mean', got {self.score!r}")
        if self.beta is not None and not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"SnippetConfig.beta must be finite and >= 0, got {self.beta}")
        if not self.target_len >= 1:
            raise ValueError(f"SnippetConfig.target_len must be >= 1 word, got {self.target_len}")


@dataclass
class PairBatch:
    """Scores of a batch of (image, sentence) pairs, on the CPU.

    unary float [B, T, R] (v_i . s_t; ignore padded words / regions), lengths long [B], region_mask bool [B, R],
    boxes float [B, R, 4] ([x1, y1, x2, y2] pixels), and per pair its record and sentence.
    """

    records: list[ImageRecord]
    sentences: list[Sentence]
    unary: torch.Tensor
    lengths: torch.Tensor
    region_mask: torch.Tensor
    boxes: torch.Tensor


def sentence_pairs(records: Iterable[ImageRecord], store, report: list | None = None) -> list[tuple[ImageRecord, Sentence]]:
    """(record, sentence) for every sentence of every record whose image is in the store.

    Images missing from the store (failed extraction) are skipped and their ids appended to `report`.
    """
    out = []
    for r in records:
        if r.id not in store:
            if report is not None:
                report.append(r.id)
            continue
        out.extend((r, s) for s in r.sentences)
    return out


@torch.inference_mode()
def score_pairs(model, vocab, store, pairs: list[tuple[ImageRecord, Sentence]], batch_size: int = 256,
                device: str = "cpu") -> Iterator[PairBatch]:
    """Unary scores of `pairs` in batches: yields `PairBatch`es in the order of `pairs`.

    Sentences are encoded with `vocab` (unknown words -> UNK, so every token of `Sentence.tokens` gets a
    score); a sentence with no tokens gets length 0 (no snippets). The model runs in eval mode.
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for b0 in range(0, len(pairs), batch_size):
            chunk = pairs[b0 : b0 + batch_size]
            recs = [r for r, _ in chunk]
            sents = [s for _, s in chunk]
            feats, boxes, mask = store.padded([r.id for r in recs])  # [B, R, D], [B, R, 4], [B, R]
            ids = [vocab.encode(s.tokens) for s in sents]
            lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
            T = max(1, int(lengths.max()))
            tokens = torch.zeros(len(ids), T, dtype=torch.long)
            for k, x in enumerate(ids):
                tokens[k, : len(x)] = torch.tensor(x, dtype=torch.long)
            # The model's BRNN wants >= 1 word; empty sentences get one PAD word and length 0 afterwards.
            u = model.word_region_scores(
                torch.from_numpy(feats).to(device), torch.from_numpy(mask).to(device),
                tokens.to(device), lengths.clamp_min(1).to(device), torch.from_numpy(boxes).to(device),
            )  # [B, T, R]
            if tuple(u.shape) != (len(chunk), T, mask.shape[1]):
                raise ValueError(f"word_region_scores returned {list(u.shape)}, expected {[len(chunk), T, mask.shape[1]]}")
            yield PairBatch(recs, sents, u.float().cpu(), lengths, torch.from_numpy(mask), torch.from_numpy(boxes))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def stack_batches(batches: list[PairBatch]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs of `batches` as one (unary [B, T, R], lengths [B], region_mask [B, R]), padded to the largest
    T and R (padded regions masked), so each trial beta of the calibration is a single MRF call."""
    B = sum(len(b.lengths) for b in batches)
    T = max((b.unary.shape[1] for b in batches), default=1)
    R = max((b.unary.shape[2] for b in batches), default=1)
    unary = torch.zeros(B, T, R)
    mask = torch.zeros(B, R, dtype=torch.bool)
    lengths = torch.zeros(B, dtype=torch.long)
    b0 = 0
    for b in batches:
        n, t, r = b.unary.shape
        unary[b0 : b0 + n, :t, :r] = b.unary.masked_fill(~b.region_mask[:, None, :], 0.0)
        mask[b0 : b0 + n, :r] = b.region_mask
        lengths[b0 : b0 + n] = b.lengths
        b0 += n
    return unary, lengths, mask


def mean_snippet_length(batches: list[PairBatch] | tuple, beta: float) -> float:
    """Mean words per snippet over all pairs of `batches` (or a `stack_batches` triple) at this beta (0 when
    there are no words)."""
    unary, lengths, mask = batches if isinstance(batches, tuple) else stack_batches(batches)
    if len(lengths) == 0:
        return 0.0
    words, snips = snippet_counts(chain_mrf(unary, lengths, mask, beta).assign, lengths)
    return words / snips if snips else 0.0


def calibrate_beta(batches: list[PairBatch], target_len: float, iters: int = 30) -> tuple[float, float]:
    """Smallest beta (to bisection precision) whose mean snippet length reaches `target_len`: (beta, length).

    The number of neighbouring pairs kept together by the optimum never decreases as beta grows (the optimal
    value is a maximum of functions linear in beta, the slope being that number), so the mean length is a
    non-decreasing step function of beta and bisection applies. The result is 0 when the per-word argmax is
    already long enough; when the target exceeds the mean sentence length (one snippet per sentence) the beta
    that reaches one snippet per sentence is returned.
    """
    stacked = stack_batches(batches)
    lo_len = mean_snippet_length(stacked, 0.0)
    if lo_len >= target_len or lo_len == 0.0:
        return 0.0, lo_len
    lengths = stacked[1]
    target = min(target_len, int(lengths.sum()) / int((lengths > 0).sum()))  # the longest possible mean
    lo, hi = 0.0, 1.0
    hi_len = mean_snippet_length(stacked, hi)
    for _ in range(60):  # grow hi until it reaches the target
        if hi_len >= target - 1e-9:
            break
        lo, lo_len = hi, hi_len
        hi *= 2.0
        hi_len = mean_snippet_length(stacked, hi)
    else:
        raise RuntimeError(f"no beta up to {hi} reaches mean snippet length {target}")
    for _ in range(iters):
        if hi - lo <= 1e-4 * hi:  # beta to 4 significant digits is plenty
            break
        mid = 0.5 * (lo + hi)
        m = mean_snippet_length(stacked, mid)
        if m >= target - 1e-9:
            hi, hi_len = mid, m
        else:
            lo, lo_len = mid, m
    # The length is a step function: report the side closer to the target.
    return (hi, hi_len) if abs(hi_len - target) <= abs(lo_len - target) else (lo, lo_len)


def calibration_batches(model, vocab, store, records: list[ImageRecord], cfg: SnippetConfig) -> list[PairBatch]:
    """Scores of a seeded sample of `cfg.calib_sentences` sentences of `records` (kept in memory)."""
    pairs = sentence_pairs(records, store)
    rng = random.Random(cfg.seed)
    if len(pairs) > cfg.calib_sentences:
        pairs = rng.sample(pairs, cfg.calib_sentences)
    return list(score_pairs(model, vocab, store, pairs, cfg.batch_size, cfg.device))


def snippet_beta(model, vocab, store, records: list[ImageRecord], cfg: SnippetConfig) -> tuple[float, float | None]:
    """(beta, calib_len): `cfg.beta` when fixed (calib_len None), else the beta calibrated on a seeded sample of
    `records` (`calibration_batches`) to `cfg.target_len`, and the sample's mean snippet length at it."""
    if cfg.beta is not None:
        return float(cfg.beta), None
    beta, calib_len = calibrate_beta(calibration_batches(model, vocab, store, records, cfg), cfg.target_len,
                                     cfg.calib_iters)
    return float(beta), calib_len


def batch_snippets(batch: PairBatch, assign: torch.Tensor, score: str = "sum") -> Iterator[dict]:
    """Snippet dicts (the contract above) of one scored batch and its assignment long [B, T]."""
    for k, (rec, sent) in enumerate(zip(batch.records, batch.sentences)):
        n = int(batch.lengths[k])
        for start, end, region in runs(assign[k], n):
            word_scores = batch.unary[k, start:end, region]
            s = float(word_scores.sum()) if score == "sum" else float(word_scores.mean())
            yield {
                "image_id": rec.id,
                "sentence_id": int(sent.id),
                "start": start,
                "end": end,
                "text": " ".join(sent.tokens[start:end]),
                "region": int(region),
                "box": [round(float(x), 2) for x in batch.boxes[k, region]],
                "score": round(s, 6),
            }


def write_snippets(model, vocab, store, records: list[ImageRecord], out: str | os.PathLike,
                   cfg: SnippetConfig | None = None, calib_records: list[ImageRecord] | None = None,
                   progress: bool = False) -> dict:
    """Snippets of every sentence of `records` into the JSON-lines file `out` (written atomically).

    beta is `cfg.beta`, or calibrated on a sample of `calib_records` (default `records`) to `cfg.target_len`.
    Returns a summary: beta, mean_snippet_len (over everything written), n_snippets, n_sentences, n_words,
    calib_len (the sample's mean length at beta, when calibrated), length_hist ({"1": snippets of 1 word, ...}),
    whole_image_fraction (snippets on row 0, the whole image), missing_images (ids absent from the store).
    """
    cfg = cfg or SnippetConfig()
    check_writable(out, "file")  # before the calibration and scoring, not after them
    beta, calib_len = snippet_beta(model, vocab, store, calib_records or records, cfg)
    summary: dict = {"beta": beta, "target_len": None if calib_len is None else cfg.target_len,
                     "calib_len": calib_len}
    missing: list[str] = []
    pairs = sentence_pairs(records, store, missing)
    out = Path(out)
    words = snips = sentences = whole = 0
    hist: Counter[int] = Counter()  # snippets by length in words
    bar = progress_bar(total=len(pairs), desc="snippets", unit="sent", enabled=progress)
    with atomic_open(out) as f:  # the file appears whole, or not at all
        for batch in score_pairs(model, vocab, store, pairs, cfg.batch_size, cfg.device):
            res = chain_mrf(batch.unary, batch.lengths, batch.region_mask, beta)
            for d in batch_snippets(batch, res.assign, cfg.score):
                f.write(json.dumps(d) + "\n")
                hist[d["end"] - d["start"]] += 1
                whole += d["region"] == 0
            w, s = snippet_counts(res.assign, batch.lengths)
            words, snips, sentences = words + w, snips + s, sentences + int((batch.lengths > 0).sum())
            bar.update(len(batch.records))
    bar.close()
    summary.update(mean_snippet_len=words / snips if snips else 0.0, n_snippets=snips, n_sentences=sentences,
                   n_words=words, length_hist={str(n): hist[n] for n in sorted(hist)},
                   whole_image_fraction=whole / snips if snips else 0.0, missing_images=missing)
    return summary


def read_snippets(path: str | os.PathLike) -> list[dict]:
    """Read a snippets JSON-lines file (one JSON object per line, keys `SNIPPET_KEYS`).

    `image_id` comes back as a str and each dict gains `_line` (its 1-based line number, for later errors).
    A missing file or a malformed line raises DataError naming the file (and line)."""
    if not os.path.isfile(path):
        raise DataError(str(path), "snippets file not found")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), f"not JSON ({e.msg})", n) from None
            if not isinstance(d, dict):
                raise DataError(str(path), "a snippet must be a JSON object", n)
            missing = [k for k in SNIPPET_KEYS if k not in d]
            if missing:
                raise DataError(str(path), f"snippet lacks {missing}", n)
            if not (0 <= d["start"] < d["end"]) or len(d["box"]) != 4:
                raise DataError(str(path), f"bad span [{d['start']}, {d['end']}) or box {d['box']}", n)
            if not isinstance(d["text"], str) or not isinstance(d["region"], int) or d["region"] < 0:
                raise DataError(str(path), "snippet needs a string 'text' and a row number 'region' >= 0", n)
            d["image_id"] = str(d["image_id"])
            d["_line"] = n
            out.append(d)
    return out

