"""Import precomputed bottom-up-attention features (Anderson et al. 2018) into a feature store.

The TSV has one image per line, tab-separated, no header, fields ``image_id, image_w, image_h, num_boxes,
boxes, features``: `boxes` is base64 of float32 [num_boxes, 4] ``[x1, y1, x2, y2]`` pixels, `features` base64 of
float32 [num_boxes, D] (36 x 2048 in the usual release). The feature fields are far longer than the csv
module's default field limit (128 KiB), which is raised here.

Store rows: row 0 is the whole image (box [0, 0, w, h]) with the mean of the region features as its feature (the
usual "image feature" of bottom-up models); the image's boxes follow in file order. Import is resumable like
any store (images already stored are skipped).
"""
from __future__ import annotations

import base64
import csv
import sys
from pathlib import Path

import numpy as np
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import DataError

FIELDS = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]


def _raise_field_limit() -> None:
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32-bit on some platforms
            limit //= 2


def read_bottomup_tsv(path: str | Path):
    """Yield (image_id str, width, height, boxes float32 [N, 4], features float32 [N, D]) per line."""
    _raise_field_limit()
    path = Path(path)
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f, delimiter="\t", fieldnames=FIELDS), start=1):
            try:
                n = int(row["num_boxes"])
                w, h = int(float(row["image_w"])), int(float(row["image_h"]))
                boxes = np.frombuffer(base64.b64decode(row["boxes"]), np.float32).reshape(n, 4)
                feats = np.frombuffer(base64.b64decode(row["features"]), np.float32)
                if n == 0 or feats.size % n:
                    raise ValueError(f"{feats.size} feature values do not split into {n} boxes")
                feats = feats.reshape(n, -1)
            except (KeyError, TypeError, ValueError, base64.binascii.Error) as e:
                raise DataError(str(path), f"bad bottom-up record ({type(e).__name__}: {e})", line) from None
            yield str(row["image_id"]), w, h, boxes, feats


def import_bottomup(tsv: str | Path, out_dir: str | Path, dtype: str = "float32", part_size: int = 1024,
                    progress: bool = True) -> FeatureStore:
    """Write the TSV's images into the store at `out_dir` (created or resumed); returns the store."""
    writer = None
    n_new = 0
    for image_id, w, h, boxes, feats in progress_bar(read_bottomup_tsv(tsv), desc="bottom-up", unit="img",
                                                     enabled=progress):
        if writer is None:
            meta = {"producer": "bottomup", "dim": int(feats.shape[1]), "dtype": dtype, "whole_image_row": 0,
                    "whole_image": "mean of the region features", "box_format": "xyxy pixels of the original image"}
            writer = FeatureStoreWriter(out_dir, meta, part_size=part_size, tag="bottomup")
        if writer.done(image_id):
            continue
        whole = feats.mean(0)
        all_boxes = np.concatenate([np.array([[0, 0, w, h]], np.float32), boxes])
        writer.add(image_id, all_boxes, np.concatenate([whole[None], feats]), whole, (w, h))
        n_new += 1
    if writer is None:
        raise DataError(str(tsv), "no records")
    writer.close()
    print(f"{out_dir}: imported {n_new} images from {tsv}", file=sys.stderr)
    return FeatureStore(out_dir)
