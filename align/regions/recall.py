"""Box recall by object size: how many annotated objects some box reaches at IoU >= `iou`.

Glossary: G annotated boxes of one image, P candidates (every proposal scored, before the cut), R kept boxes
(the whole image row 0 included, as the feature store holds them). Size classes are COCO's, on the box area
in the ORIGINAL annotation's pixels (`Region.source_area` when a reader rescaled the box, e.g. Flickr8k's
224 x 224 copies, else the box's own area): small < 32², medium 32²..96², large >= 96²; ``>=32²`` is medium
and large together. Duplicate annotated boxes of an image (Entities repeats a box per phrase) count once.
"""
from __future__ import annotations

import numpy as np
import torch
from dvsa.align.ground import SIZE_CLASSES, size_class
from dvsa.data.records import ImageRecord
from torchvision.ops import box_iou

CLASSES = ("all", "small", "medium", "large", ">=32²")


def image_objects(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """(distinct annotated boxes float32 [G, 4] in the record's pixels, their areas [G] in the original
    annotation's pixels)."""
    seen: dict[tuple, float] = {}
    for r in record.regions:
        key = tuple(float(v) for v in r.box)
        if key not in seen:
            seen[key] = r.source_area if r.source_area is not None else (key[2] - key[0]) * (key[3] - key[1])
    boxes = np.asarray(list(seen), np.float32).reshape(-1, 4)
    return boxes, np.asarray(list(seen.values()), np.float64)


def reached(gt: np.ndarray, boxes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """bool [G]: some box of `boxes` [P, 4] has IoU >= `iou` with annotated box g (float64, so the threshold is
    exact for hand-made boxes)."""
    if len(gt) == 0 or len(boxes) == 0:
        return np.zeros(len(gt), bool)
    m = box_iou(torch.from_numpy(np.asarray(gt, np.float64)), torch.from_numpy(np.asarray(boxes, np.float64)))
    return (m.amax(1) >= iou - 1e-12).numpy()


def classes_of(area: float) -> tuple[str, ...]:
    """The size classes an object of this area counts in ("all" and ">=32²" included)."""
    c = size_class(area)
    return ("all", c) + ((">=32²",) if area >= SIZE_CLASSES[1][1] else ())


class BoxRecall:
    """Accumulates, per size class, objects and how many the candidates and the kept boxes reach."""

    def __init__(self, iou: float = 0.5):
        self.iou = iou
        self.counts = {c: [0, 0, 0] for c in CLASSES}  # class -> [objects, reached by candidates, by kept boxes]
        self.images = 0

    def add(self, gt: np.ndarray, areas: np.ndarray, candidates: np.ndarray, kept: np.ndarray) -> None:
        """One image: gt [G, 4], areas [G], candidates [P, 4], kept [R, 4] (all in the same pixels)."""
        by_cand, by_kept = reached(gt, candidates, self.iou), reached(gt, kept, self.iou)
        for a, hc, hk in zip(areas, by_cand, by_kept):
            for c in classes_of(float(a)):
                e = self.counts[c]
                e[0], e[1], e[2] = e[0] + 1, e[1] + int(hc), e[2] + int(hk)
        self.images += 1

    def result(self) -> dict:
        """{class: {"n", "candidates", "kept"}} with recalls as fractions (None for a class with no object)."""
        return {c: {"n": n, "candidates": hc / n if n else None, "kept": hk / n if n else None}
                for c, (n, hc, hk) in self.counts.items()}
