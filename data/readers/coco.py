"""Reader for MS-COCO's official annotation files (read through pycocotools).

    records = load_dataset("coco", "../shared/datasets/coco-mini", split_name="train2017", split="train")

Files under `root`: ``annotations/captions_<split_name>.json`` (required) and
``annotations/instances_<split_name>.json`` (optional; without it records have no regions). Images:
``root/<split_name>/<file_name>`` (also ``root/images/<split_name>/`` or `images_dir`).

- Ids: ``str(image id)``; sentence ids: the caption annotation ids; sizes from the annotation file.
- Sentences are ordered by annotation id; empty captions are dropped with a warning naming them.
- Instances become `Region(box=[x, y, x + w, y + h], label=<category name>, id=str(annotation id),
  text=None)`; crowd annotations (``iscrowd=1``) are skipped unless ``crowd=True``; boxes with no area are
  skipped (warned).
- Every record gets the split `split` (COCO's own split files are one split each; for Karpathy's 5000/5000
  split of COCO use the ``karpathy`` reader with ``dataset_coco.json``).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from ..catalog import register
from ..records import SPLITS, DataError, ImageRecord, Region, Sentence
from ..text import tokenize
from .common import abspath, check_image_files, find_image_dir, read_json, warn


def _coco(path: Path):
    """A pycocotools COCO index of the JSON at `path` (parsed by us, so malformed files name themselves)."""
    from pycocotools.coco import COCO

    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(path, "not a COCO annotation file (no 'images' list)")
    if not isinstance(data.get("annotations", []), list):
        raise DataError(path, "'annotations' must be a list")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise DataError(path, f"malformed COCO annotations (missing or bad field {e})") from None
    return coco


@register("coco")
def read_coco(
    root: str | os.PathLike,
    split_name: str = "train2017",
    split: str = "train",
    images_dir: str | os.PathLike | None = None,
    crowd: bool = False,
    check_images: bool | str = False,
) -> list[ImageRecord]:
    """Records of one official COCO split (see the module docstring)."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cap_path = root / "annotations" / f"captions_{split_name}.json"
    if not cap_path.is_file():
        raise DataError(cap_path, "COCO caption file not found")
    caps = _coco(cap_path)
    inst_path = root / "annotations" / f"instances_{split_name}.json"
    inst = _coco(inst_path) if inst_path.is_file() else None

    images = dict(caps.imgs)
    if inst is not None:
        for i, im in inst.imgs.items():
            images.setdefault(i, im)
    some = next(iter(images.values()), {}).get("file_name")
    image_dir = Path(images_dir) if images_dir else find_image_dir(root, [split_name, f"images/{split_name}"], some)

    empty, degenerate, records = [], [], []
    for image_id in sorted(images):
        im = images[image_id]
        try:
            file_name, width, height = im["file_name"], int(im["width"]), int(im["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(cap_path, f"image {image_id}: missing or bad field {e}") from None
        sentences = []
        for a in sorted(caps.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
            raw = str(a.get("caption", "")).strip()
            tokens = tokenize(raw)
            if not tokens:
                empty.append(a["id"])
                continue
            sentences.append(Sentence(id=int(a["id"]), raw=raw, tokens=tokens))
        regions = []
        if inst is not None:
            for a in sorted(inst.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
                if a.get("iscrowd", 0) and not crowd:
                    continue
                try:
                    x, y, w, h = (float(v) for v in a["bbox"])
                    label = inst.cats[a["category_id"]]["name"]
                except (KeyError, TypeError, ValueError) as e:
                    raise DataError(inst_path, f"annotation {a.get('id')}: missing or bad field {e}") from None
                if w <= 0 or h <= 0:
                    degenerate.append(a["id"])
                    continue
                regions.append(Region(box=[x, y, x + w, y + h], label=label, id=str(a["id"])))
        records.append(ImageRecord(id=str(image_id), path=abspath(image_dir / file_name), width=width,
                                   height=height, split=split, sentences=sentences, regions=regions))
    if empty:
        warn(cap_path, f"{len(empty)} empty caption(s) dropped, annotation ids {empty[:10]}")
    if degenerate:
        warn(inst_path, f"{len(degenerate)} box(es) without area skipped, annotation ids {degenerate[:10]}")
    return check_image_files(records, check_images, cap_path)
