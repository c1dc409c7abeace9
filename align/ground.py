"""Phrase grounding on real photographs: the aligner beside box baselines, IoU and pointing accuracy.

Items: the phrases of the records that are linked to at least one ground-truth box (Flickr8k / Flickr30k
Entities phrases; on COCO, whose captions have no phrases, every caption word naming a category with an
instance in the image, `data.coco_words`: a one-word (or multi-word name) phrase whose ground truth is every
instance of that category). Phrases without a box (notvisual, scene, nobox) are counted apart
(``n_phrases_no_box``) and not scored. Every method picks ONE kept region (a row of the feature store; row 0 is
the whole image) per item, and is scored on the same items by

- **IoU accuracy**: the chosen box has IoU >= `iou` (0.5) with some ground-truth box of the item;
- **pointing accuracy**: the CENTRE of the chosen box lies inside some ground-truth box (edges included). The
  standard pointing game takes the maximum of a score map; our methods choose boxes, so their point is the
  chosen box's centre.

Methods:

- ``mrf``: the MRF snippets at the run's beta (`align.mrf.chain_mrf`); a phrase's box is the region most of
  its content words are on (`align.grounding.vote`, ties by summed score, then the lowest row);
- ``argmax``: the same vote over the per-word argmax (beta = 0, the paper's eq. 8 alignment);
- ``whole_image``: row 0 (the whole image) for every item;
- ``largest_box``: the largest kept region other than the whole image (the whole image when there is none);
- ``random_box``: a uniformly random kept region (whole image included), as an EXPECTED value: the mean over
  the regions of their hit (no draw);
- ``best_box``: the bound any method choosing among these regions can reach: for IoU, some region reaches the
  IoU; for pointing, some region's centre is inside a ground-truth box.

``mrf`` / ``argmax`` need an aligner; without one (``model=None``) only the baselines are computed.

Reported per phrase (``phrases``), per content word (``words``: each content word of a phrase — not in
`align.grounding.STOPWORDS` — is an item with the phrase's boxes; ``mrf`` / ``argmax`` use that word's own
region, the baselines are the phrase's) and per type (``by_type``: the phrase's `Phrase.types`, the Entities
types people / clothing / bodyparts / animals / vehicles / instruments / scene / other, or the COCO
category; a phrase with two types counts in both). ``box_recall``: of the distinct ground-truth boxes of the
evaluated images (every region of their records), the fraction that some kept region reaches at IoU >= `iou`
(``recall``; ``recall_proposals`` without the whole-image row), overall and by COCO size class of the box area
in the ORIGINAL annotation's pixels (`Region.source_area` when the box was rescaled, else the box's area):
small < 32², medium 32²..96², large >= 96². All accuracies are fractions 0..1.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from dvsa.align.grounding import STOPWORDS, phrase_boxes, sentence_phrases, vote
from dvsa.align.mrf import chain_mrf
from dvsa.align.snippets import score_pairs, sentence_pairs
from dvsa.data.coco_words import with_category_phrases
from dvsa.data.records import ImageRecord, Sentence
from torchvision.ops import box_iou

MODEL_METHODS = ("mrf", "argmax")
BASELINES = ("whole_image", "largest_box", "random_box", "best_box")
METHODS = MODEL_METHODS + BASELINES
SIZE_CLASSES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))
LABELS = {"mrf": "MRF snippets", "argmax": "per-word argmax (beta 0)", "whole_image": "whole image",
          "largest_box": "largest kept box", "random_box": "random kept box (expected)",
          "best_box": "best kept box (bound)"}


def _hits(boxes: torch.Tensor, gt: list[list[float]], iou: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(IoU hit bool [R], centre-inside bool [R]) of the kept boxes [R, 4] against the ground truth."""
    g = torch.tensor(gt, dtype=torch.float64)
    b = boxes.double()
    hit = box_iou(b, g).amax(1) >= iou
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    inside = ((cx[:, None] >= g[None, :, 0]) & (cx[:, None] <= g[None, :, 2])
              & (cy[:, None] >= g[None, :, 1]) & (cy[:, None] <= g[None, :, 3])).any(1)
    return hit, inside


def largest_row(boxes: torch.Tensor) -> int:
    """The largest region other than row 0 (the whole image); 0 when there is no other (ties: lowest row)."""
    if len(boxes) < 2:
        return 0
    area = (boxes[1:, 2] - boxes[1:, 0]) * (boxes[1:, 3] - boxes[1:, 1])
    return 1 + int(torch.argmax(area))


def size_class(area: float) -> str:
    return next(name for name, lo, hi in SIZE_CLASSES if lo <= area < hi)


class GroundingEvaluator:
    """Accumulates IoU and pointing accuracy of every method over items, and the kept boxes' recall."""

    def __init__(self, iou: float = 0.5, stopwords: frozenset[str] = STOPWORDS):
        self.iou, self.stopwords = iou, frozenset(stopwords)
        self.reset()

    def reset(self) -> None:
        # level -> group -> [n, {method: [iou hits, pointing hits]}]; group None = all items
        self.acc: dict[str, dict] = {lvl: defaultdict(lambda: [0, defaultdict(lambda: [0.0, 0.0])])
                                     for lvl in ("phrases", "words")}
        self.no_box = self.sentences = 0
        self.images: set[str] = set()
        self.n_regions = 0
        self.recall = defaultdict(lambda: [0, 0, 0])  # size class / "all" -> [n, reached, reached by proposals]
        self.has_model = False

    def _add(self, level: str, groups, scores: dict[str, tuple[float, float]]) -> None:
        for g in (None, *groups):
            entry = self.acc[level][g]
            entry[0] += 1
            for m, (a, b) in scores.items():
                entry[1][m][0] += a
                entry[1][m][1] += b

    def add_image(self, record: ImageRecord, boxes: torch.Tensor) -> None:
        """Box recall of the kept boxes [R, 4] (row 0 = whole image) of one image; once per image."""
        if record.id in self.images:
            return
        self.images.add(record.id)
        self.n_regions += len(boxes)
        seen = set()
        for r in record.regions:
            key = tuple(float(v) for v in r.box)
            if key in seen:
                continue
            seen.add(key)
            ious = box_iou(boxes.double(), torch.tensor([key], dtype=torch.float64))[:, 0]
            reached, by_prop = bool((ious >= self.iou).any()), bool((ious[1:] >= self.iou).any())
            area = r.source_area if r.source_area is not None else (key[2] - key[0]) * (key[3] - key[1])
            for k in ("all", size_class(area)):
                e = self.recall[k]
                e[0] += 1
                e[1] += reached
                e[2] += by_prop

    def add(self, record: ImageRecord, sentence: Sentence, boxes: torch.Tensor,
            assigns: dict[str, torch.Tensor] | None = None, unary: torch.Tensor | None = None) -> None:
        """One (image, sentence): `boxes` float [R, 4] the image's kept regions (row 0 = whole image);
        `assigns` {"mrf": long [n], "argmax": long [n]} region row per word and `unary` float [n, R] the
        word-region scores (for the vote's ties), or None for the baselines only."""
        self.add_image(record, boxes)
        self.sentences += 1
        self.has_model = self.has_model or assigns is not None
        n = len(sentence.tokens) if assigns is None else len(next(iter(assigns.values())))
        big = largest_row(boxes)
        phrases, no_box = sentence_phrases(record, sentence.id, n, sentence.tokens, self.stopwords)
        self.no_box += no_box
        for p, gt, span, content in phrases:
            hit, inside = _hits(boxes, gt, self.iou)
            hf, pf = hit.double(), inside.double()
            base = {"whole_image": (float(hf[0]), float(pf[0])), "largest_box": (float(hf[big]), float(pf[big])),
                    "random_box": (float(hf.mean()), float(pf.mean())),
                    "best_box": (float(hit.any()), float(inside.any()))}
            voters = content or span
            scores = dict(base)
            if assigns is not None:
                for m, a in assigns.items():
                    row = vote([int(a[t]) for t in voters], unary[voters])
                    scores[m] = (float(hf[row]), float(pf[row]))
            types = list(dict.fromkeys(p.types)) or [
                lab for lab in {r.label for r in record.regions if r.id in set(p.region_ids) and r.label}]
            self._add("phrases", types, scores)
            for t in content:
                ws = dict(base)
                if assigns is not None:
                    for m, a in assigns.items():
                        row = int(a[t])
                        ws[m] = (float(hf[row]), float(pf[row]))
                self._add("words", types, ws)

    @staticmethod
    def _table(entry) -> dict:
        n, sums = entry
        return {"n": n, **{m: {"iou_accuracy": v[0] / n, "pointing_accuracy": v[1] / n}
                           for m, v in sorted(sums.items(), key=lambda kv: METHODS.index(kv[0]))}}

    def evaluate(self) -> dict:
        """{phrases, words: {n, <method>: {iou_accuracy, pointing_accuracy}}, by_type {type: same},
        words_by_type, box_recall {all/small/medium/large: {n, recall, recall_proposals}}, counts}."""
        if not self.acc["phrases"][None][0]:
            raise ValueError("no phrase with a ground-truth box was evaluated (do the records carry phrases and "
                             "regions, and are their images in the feature store?)")
        methods = [m for m in METHODS if self.has_model or m not in MODEL_METHODS]
        rec = {k: {"n": v[0], "recall": v[1] / v[0] if v[0] else None,
                   "recall_proposals": v[2] / v[0] if v[0] else None}
               for k, v in sorted(self.recall.items(), key=lambda kv: ["all", "small", "medium", "large"].index(kv[0]))}
        return {
            "iou": self.iou,
            "methods": methods,
            "phrases": self._table(self.acc["phrases"][None]),
            "words": self._table(self.acc["words"][None]) if self.acc["words"][None][0] else {"n": 0},
            "by_type": {g: self._table(e) for g, e in sorted(self.acc["phrases"].items(), key=lambda kv: str(kv[0]))
                        if g is not None},
            "words_by_type": {g: self._table(e) for g, e in sorted(self.acc["words"].items(), key=lambda kv: str(kv[0]))
                              if g is not None},
            "box_recall": rec,
            "n_phrases": self.acc["phrases"][None][0],
            "n_words": self.acc["words"][None][0],
            "n_phrases_no_box": self.no_box,
            "n_sentences": self.sentences,
            "n_images": len(self.images),
            "mean_kept_regions": self.n_regions / len(self.images) if self.images else 0.0,
        }


def grounding_records(records: list[ImageRecord]) -> list[ImageRecord]:
    """The records to ground: COCO-like records (labelled regions, no phrases) get their category-word
    phrases (`data.coco_words.with_category_phrases`); records with a phrase are kept."""
    return [r for r in with_category_phrases(records) if r.phrases]


def has_boxed_phrases(records: list[ImageRecord]) -> bool:
    """Whether `evaluate_grounding` has something to score on `records`."""
    return any(phrase_boxes(r, p) for r in grounding_records(records) for p in r.phrases)


def evaluate_grounding(model, vocab, store, records: list[ImageRecord], beta: float | None = None, *,
                       iou: float = 0.5, stopwords: frozenset[str] = STOPWORDS, batch_size: int = 256,
                       device: str = "cpu") -> dict:
    """Grounding of the MRF at `beta` and of the per-word argmax beside the baselines (module doc) on the
    phrases of `records` whose images are in `store`; `model=None`: the baselines and box recall only."""
    grounded = grounding_records(records)
    if not any(phrase_boxes(r, p) for r in grounded for p in r.phrases):
        raise ValueError("none of the records has a phrase (or COCO category word) linked to a ground-truth box")
    missing: list[str] = []
    pairs = sentence_pairs(grounded, store, missing)
    ev = GroundingEvaluator(iou, stopwords)
    if model is None:
        for rec, sent in pairs:
            ev.add(rec, sent, torch.tensor(store.regions(rec.id)[0]))
    else:
        for batch in score_pairs(model, vocab, store, pairs, batch_size, device):
            a_mrf = chain_mrf(batch.unary, batch.lengths, batch.region_mask, float(beta)).assign
            a_max = chain_mrf(batch.unary, batch.lengths, batch.region_mask, 0.0).assign
            for k, (rec, sent) in enumerate(zip(batch.records, batch.sentences)):
                n, real = int(batch.lengths[k]), batch.region_mask[k]
                boxes = batch.boxes[k][real]
                ev.add(rec, sent, boxes, {"mrf": a_mrf[k, :n], "argmax": a_max[k, :n]}, batch.unary[k, :n][:, real])
    out = ev.evaluate()
    out.update(beta=None if model is None else float(beta), n_missing_images=len(missing))
    return out


def format_grounding_table(res: dict) -> str:
    """Methods x (phrase IoU / pointing, word IoU / pointing) in percent, then per type, then box recall."""
    ph, wd = res["phrases"], res["words"]
    lines = [f"{'method':<28} {'IoU acc':>8} {'pointing':>9} {'word IoU':>9} {'word pt':>8}"]
    for m in res["methods"]:
        name = LABELS[m] + (f" (beta {res['beta']:.3g})" if m == "mrf" and res.get("beta") is not None else "")
        w = wd.get(m, {"iou_accuracy": float("nan"), "pointing_accuracy": float("nan")})
        lines.append(f"{name:<28} {100 * ph[m]['iou_accuracy']:>7.1f}% {100 * ph[m]['pointing_accuracy']:>8.1f}% "
                     f"{100 * w['iou_accuracy']:>8.1f}% {100 * w['pointing_accuracy']:>7.1f}%")
    short = {"mrf": "MRF", "argmax": "argmax", "whole_image": "whole", "largest_box": "largest",
             "random_box": "random", "best_box": "bound"}
    lines.append("per type (phrases; IoU / pointing %):")
    for t, e in res["by_type"].items():
        cells = ", ".join(f"{short[m]} {100 * e[m]['iou_accuracy']:.0f}/{100 * e[m]['pointing_accuracy']:.0f}"
                          for m in res["methods"])
        lines.append(f"  {t} ({e['n']}): {cells}")
    rec = res["box_recall"]
    lines.append(f"kept boxes' recall of the gt boxes at IoU >= {res['iou']:g} (all regions / without the whole "
                 "image):")
    for k, e in rec.items():
        if e["n"]:
            lines.append(f"  {k:<7} {e['n']:>6} boxes: {100 * e['recall']:.1f}% / {100 * e['recall_proposals']:.1f}%")
    lines.append(f"{res['n_phrases']} phrases with a box ({res['n_phrases_no_box']} without, excluded), "
                 f"{res['n_words']} content words, {res['n_images']} images, {res['mean_kept_regions']:.1f} kept "
                 f"regions per image; IoU >= {res['iou']}; pointing = centre of the chosen box inside a gt box")
    return "\n".join(lines)
