"""Reader for MS-COCO's official annotation files (read through pycocotools).

    records = load_dataset("coco", "../shared/datasets/coco-mini", split_name="train2017", split="train")

Files under `root`: ``annotations/captions_<split_name>.json`` (required) and
``annotations/instances_<split_name>.json`` (optional; without it records have no regions). Images:
``root/<split_name>/<file_name>`` (also ``root/images/<split_name>/`` or `images_dir`).

- Ids: ``str(image id)``; sentence ids: the caption annotation ids; sizes from the annotation file.
- Sentences are ordered by annotation id; empty captions are dropped with a warning naming them.
- Instances become `Region(box=[x, y, x + w, y + h], label=<category name>, id=str(annotation id),
  text=None)`; crowd annotations (``iscrowd=1``) are skipped unless ``crowd=True`` (counted ``crowd_box``);
  boxes with a NaN / inf coordinate, no area or entirely outside the image are dropped, boxes partly
  outside are clipped to it (warned, counted ``box_not_finite`` / ``box_empty`` / ``box_outside`` /
  ``box_clipped``). Captions whose id repeats, or of an image id the file does not define, are dropped
  (``duplicate_sentence_id``, ``orphan_annotation``). ``strict=True`` raises on the first such problem.
- Every record gets the split `split` (COCO's own split files are one split each; for Karpathy's 5000/5000
  split of COCO use the ``karpathy`` reader with ``dataset_coco.json``).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from pycocotools.coco import COCO

from ..catalog import register
from ..records import SPLITS, DataError, ImageRecord, Region, Sentence
from ..text import tokenize
from .common import abspath, check_image_files, find_image_dir, read_json, warn
from .report import ReadReport, check_box, ensure, finish


def _coco(path: Path):
    """A pycocotools COCO index of the JSON at `path` (parsed by us, so malformed files name themselves)."""
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
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Records of one official COCO split (see the module docstring)."""
    report, owned = ensure(report, strict, "coco")
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cap_path = root / "annotations" / f"captions_{split_name}.json"
    if not cap_path.is_file():
        raise DataError(cap_path, "COCO caption file not found")
    report.source(cap_path)
    caps = _coco(cap_path)
    inst_path = root / "annotations" / f"instances_{split_name}.json"
    inst = _coco(inst_path) if inst_path.is_file() else None
    if inst is not None:
        report.source(inst_path)

    images = dict(caps.imgs)
    if inst is not None:
        for i, im in inst.imgs.items():
            images.setdefault(i, im)
    for src, index in ((cap_path, caps), (inst_path, inst)):
        for iid, anns in (index.imgToAnns.items() if index is not None else ()):
            if iid not in images:
                for a in anns:
                    report.add("orphan_annotation", src, f"annotation {a.get('id')}",
                               f"annotation {a.get('id')} of image {iid}, which the file does not define")
    some = next(iter(images.values()), {}).get("file_name")
    image_dir = Path(images_dir) if images_dir else find_image_dir(root, [split_name, f"images/{split_name}"], some)

    empty, degenerate, records, seen_sids = [], [], [], set()
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
                report.add("empty_sentence", cap_path, f"annotation {a['id']} (image {image_id})",
                           f"caption {raw!r} has no word")
                empty.append(a["id"])
                continue
            if int(a["id"]) in seen_sids:
                report.add("duplicate_sentence_id", cap_path, f"annotation {a['id']} (image {image_id})",
                           f"caption id {a['id']} used twice (dropped)", kind="dropped")
                continue
            seen_sids.add(int(a["id"]))
            sentences.append(Sentence(id=int(a["id"]), raw=raw, tokens=tokens))
        regions = []
        if inst is not None:
            for a in sorted(inst.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
                if a.get("iscrowd", 0) and not crowd:
                    report.add("crowd_box", inst_path, f"annotation {a.get('id')} (image {image_id})")
                    continue
                try:
                    x, y, w, h = (float(v) for v in a["bbox"])
                    label = inst.cats[a["category_id"]]["name"]
                except (KeyError, TypeError, ValueError) as e:
                    raise DataError(inst_path, f"annotation {a.get('id')}: missing or bad field {e}") from None
                box = check_box([x, y, x + w, y + h], width, height, report, inst_path,
                                f"annotation {a['id']} (image {image_id})")
                if box is None:
                    degenerate.append(a["id"])
                    continue
                regions.append(Region(box=box, label=label, id=str(a["id"])))
        records.append(ImageRecord(id=str(image_id), path=abspath(image_dir / file_name), width=width,
                                   height=height, split=split, sentences=sentences, regions=regions))
    if empty:
        warn(cap_path, f"{len(empty)} empty caption(s) dropped, annotation ids {empty[:10]}")
    if degenerate:
        warn(inst_path, f"{len(degenerate)} box(es) without area, NaN or outside the image skipped, "
                        f"annotation ids {degenerate[:10]}")
    n_clipped = report.count("box_clipped")
    if n_clipped:
        warn(inst_path, f"{n_clipped} box(es) partly outside the image clipped to it")
    records = check_image_files(records, check_images, cap_path, report)
    finish(report, owned, len(records))
    return records
