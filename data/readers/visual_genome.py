"""Reader for Visual Genome region descriptions (dense captioning data).

    records = load_dataset("visual_genome", "path/to/vg")

Files under `root`:

- ``region_descriptions.json`` (required): ``[{"id": image id, "regions": [{"region_id", "image_id",
  "phrase", "x", "y", "width", "height"}, ...]}, ...]``;
- ``image_data.json`` (optional): ``[{"image_id" (or "id"), "width", "height", "url"}, ...]`` -> sizes;
- ``densecap_splits.json`` (optional, or `split_file`): ``{"train": [ids], "val": [ids], "test": [ids]}``
  as in DenseCap. Without it: the deterministic split of `common.deterministic_split` with 5000 val and 5000
  test images (n // 5 each below 25000 images). Images of the dataset in no list of a split file are skipped.

Images: ``root/images/<id>.jpg``, ``root/VG_100K/<id>.jpg`` or ``root/VG_100K_2/<id>.jpg`` (whichever holds
the file; `images_dir` overrides). Records have no sentences: each region is
``Region(box=[x, y, x + width, y + height], text=phrase, id=str(region_id))``. Regions with an empty phrase or
a NaN / inf coordinate, no area or lying entirely outside the image (size from ``image_data.json``) are
skipped with one warning that counts them; boxes partly outside are clipped to the image. A repeated image id
keeps the first entry. Each is counted by reason in `report` (``empty_phrase``, ``box_not_finite``,
``box_empty``, ``box_outside``, ``box_clipped``, ``duplicate_image_id``, ``no_split``, ``no_captions`` for
split-file ids with no entry); ``strict=True`` raises on the first. `limit` keeps the first n images (sorted
by id).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..catalog import register
from ..records import DataError, ImageRecord, Region
from .common import (
    abspath,
    check_image_files,
    deterministic_split,
    expect,
    read_json,
    scaled_holdout,
    warn,
)
from .report import ReadReport, check_box, ensure, finish

_IMAGE_DIRS = ("images", "VG_100K", "VG_100K_2")


def _sizes(path: Path) -> dict[str, tuple[int, int]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(path, "expected a list of images")
    out = {}
    for k, im in enumerate(data):
        iid = im.get("image_id", im.get("id")) if isinstance(im, dict) else None
        if iid is None:
            raise DataError(path, f"[{k}]: missing field 'image_id'")
        try:
            out[str(iid)] = (int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(path, f"[{k}] (image {iid}): missing or bad field {e}") from None
    return out


def _splits(path: Path) -> dict[str, str]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "expected {'train': [ids], 'val': [ids], 'test': [ids]}")
    out = {}
    for split in ("train", "val", "test"):
        for iid in data.get(split, []):
            if str(iid) in out:
                raise DataError(path, f"image {iid} is in both the {out[str(iid)]} and the {split} split")
            out[str(iid)] = split
    return out


@register("visual_genome")
def read_visual_genome(
    root: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    limit: int | None = None,
    check_images: bool | str = False,
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Records with described regions (see the module docstring)."""
    report, owned = ensure(report, strict, "visual_genome")
    root = Path(root)
    desc_path = root / "region_descriptions.json"
    report.source(desc_path)
    data = read_json(desc_path)
    if not isinstance(data, list):
        raise DataError(desc_path, "expected a list of {'id', 'regions'} objects")
    sizes = _sizes(root / "image_data.json") if (root / "image_data.json").is_file() else {}

    split_path = Path(split_file) if split_file else root / "densecap_splits.json"
    items, first = [], {}
    for k, entry in enumerate(data):
        iid = entry.get("id", entry.get("image_id")) if isinstance(entry, dict) else None
        if iid is None:  # some releases only carry the id inside the regions
            regions = entry.get("regions") if isinstance(entry, dict) else None
            iid = regions[0].get("image_id") if regions and isinstance(regions[0], dict) else None
        if iid is None:
            raise DataError(desc_path, f"[{k}]: missing field 'id'")
        if str(iid) in first:
            report.add("duplicate_image_id", desc_path, f"[{k}] (image {iid})",
                       f"image id already given by [{first[str(iid)]}] (dropped)")
            continue
        first[str(iid)] = k
        items.append((str(iid), k, entry))
    items.sort(key=lambda t: (len(t[0]), t[0]))  # numeric order for numeric ids
    if limit is not None:
        for iid, k, _ in items[limit:]:
            report.add("limit", desc_path, f"[{k}] (image {iid})")
        items = items[:limit]
    if split_file or split_path.is_file():
        report.source(split_path)
        split_of = _splits(split_path)
        for iid in split_of:
            if iid not in first:
                report.add("no_captions", split_path, f"image {iid}",
                           f"in the split file but has no entry in {desc_path.name}")
    else:
        n = scaled_holdout(len(items), 5000)
        split_of = deterministic_split((i for i, _, _ in items), n, n)

    dirs = [Path(images_dir)] if images_dir else [root / d for d in _IMAGE_DIRS if (root / d).is_dir()]
    records, skipped, unlisted = [], 0, 0
    for iid, k, entry in items:
        if iid not in split_of:
            report.add("no_split", split_path, f"image {iid}", "in no split of this file")
            unlisted += 1
            continue
        width, height = sizes.get(iid, (None, None))
        regions = []
        for j, reg in enumerate(expect(entry, "regions", desc_path, f"[{k}] (image {iid})") or []):
            where = f"[{k}].regions[{j}] (image {iid})"
            values = [expect(reg, f, desc_path, where) for f in ("x", "y", "width", "height")]
            try:
                x, y, w, h = (float(v) for v in values)
            except (TypeError, ValueError):
                raise DataError(desc_path, f"{where}: box fields must be numbers") from None
            phrase = str(reg.get("phrase") or "").strip()
            rid = reg.get("region_id", reg.get("id"))
            where = f"[{k}].regions[{j}] (region {rid}, image {iid})"
            if not phrase:
                report.add("empty_phrase", desc_path, where, "region with an empty phrase")
                skipped += 1
                continue
            box = check_box([x, y, x + w, y + h], width, height, report, desc_path, where)
            if box is None:
                skipped += 1
                continue
            regions.append(Region(box=box, text=phrase, id=None if rid is None else str(rid)))
        name = f"{iid}.jpg"
        folder = next((d for d in dirs if (d / name).is_file()), dirs[0] if dirs else root / "images")
        records.append(ImageRecord(id=iid, path=abspath(folder / name), width=width, height=height,
                                   split=split_of[iid], regions=regions))
    if skipped:
        warn(desc_path, f"{skipped} region(s) with an empty phrase or no area skipped "
                        "(NaN and off-image boxes included)")
    n_clipped = report.count("box_clipped")
    if n_clipped:
        warn(desc_path, f"{n_clipped} region box(es) partly outside the image clipped to it")
    n_dup = report.count("duplicate_image_id")
    if n_dup:
        warn(desc_path, f"{n_dup} repeated image entr(y/ies) dropped")
    if unlisted:
        warn(split_path, f"{unlisted} image(s) are in no split of this file and are skipped")
    records = check_image_files(records, check_images, desc_path, report)
    finish(report, owned, len(records))
    return records
