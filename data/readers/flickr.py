"""Readers for Flickr8k and Flickr30k in their original distribution formats.

    records = load_dataset("flickr8k", "../shared/datasets/flickr8k")
    records = load_dataset("flickr30k", "path/to/flickr30k")

Caption files (one caption a line):

- token format: ``<file name>#<0-4><TAB><raw sentence>`` (``Flickr8k.token.txt``, ``results_20130124.token``);
- CSV format: ``image_name| comment_number| comment`` with a header line (``results.csv``). A line whose
  number and comment lost their separator (``x.jpg| 4 A dog ...``, a known defect of one distribution) is read.

Splits:

- flickr8k: ``Flickr_8k.{train,dev,test}Images.txt`` (dev -> "val"), whichever are present. Images of the
  caption file in none of the present split files are skipped (one warning with the count); images of a split
  file without captions are skipped (warned). With no split file at all, the deterministic split below is used.
- flickr30k: Karpathy's ``dataset_flickr30k.json`` if present (or given as `split_json`), else split files
  ``train.txt`` / ``val.txt`` / ``test.txt`` (image ids, as in Flickr30k Entities), else a deterministic split:
  the image ids are sorted and shuffled with ``random.Random(0)``; the first 1000 are val, the next 1000 test,
  the rest train (`common.deterministic_split`; datasets under 5000 images hold out n // 5 each instead).

Ids are file stems; sentence ids are unique over the dataset (caption-file order, from 0). Images are looked
for under ``images/``, ``Flicker8k_Dataset/``, ``Flickr8k_Dataset/`` (8k) or ``flickr30k-images/``,
``flickr30k_images/`` (30k), or `images_dir`. Sizes are left None unless ``read_sizes=True``.

What is dropped is counted by reason in `report` (``empty_sentence``, ``no_split``, ``no_captions``,
``unknown_split``, ``missing_image``, ``size_unreadable``); ``strict=True`` raises DataError on the first.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..catalog import register
from ..records import SPLITS, DataError, ImageRecord, Sentence
from ..text import tokenize
from .common import (
    abspath,
    check_image_files,
    deterministic_split,
    fill_sizes,
    find_image_dir,
    read_json,
    read_lines,
    read_split_file,
    scaled_holdout,
    warn,
)
from .report import ReadReport, ensure, finish

Caption = tuple[int, str]  # (sentence id, raw)

_NUM_TEXT = re.compile(r"\s*(\d+)\s+(\S.*)$")


def read_captions(path: str | os.PathLike, report: ReadReport | None = None) -> dict[str, list[Caption]]:
    """file name -> [(sentence id, raw)] in file order (ids count the kept captions from 0). Empty captions
    are dropped with one warning naming the lines (counted ``empty_sentence`` in `report`); a malformed line
    raises DataError(path, ..., line)."""
    path = Path(path)
    csv = path.suffix == ".csv"
    out: dict[str, list[Caption]] = {}
    empty: list[int] = []
    sid = 0
    for n, line in read_lines(path):
        if csv:
            parts = line.split("|", 2)
            if parts[0].strip() == "image_name":
                continue
            if len(parts) == 2 and _NUM_TEXT.match(parts[1]):
                m = _NUM_TEXT.match(parts[1])
                parts = [parts[0], m.group(1), m.group(2)]
            if len(parts) != 3 or not parts[1].strip().isdigit():
                raise DataError(path, "expected 'image_name| comment_number| comment'", n)
            name, raw = parts[0].strip(), parts[2].strip()
        else:
            if "\t" not in line:
                raise DataError(path, "expected '<image file>#<number><TAB><sentence>' (no tab)", n)
            key, raw = line.split("\t", 1)
            name, hash_, num = key.strip().rpartition("#")
            if not hash_ or not name or not num.isdigit():
                raise DataError(path, f"expected '<image file>#<number>' before the tab, got {key!r}", n)
            raw = raw.strip()
        if not tokenize(raw):
            if report is not None:
                report.add("empty_sentence", path, name, f"caption {raw!r} has no word",
                           line=n)
            empty.append(n)
            continue
        out.setdefault(name, []).append((sid, raw))
        sid += 1
    if empty:
        warn(path, "empty caption(s) dropped (no word after tokenizing)", empty)
    return out


def _records(
    captions: dict[str, list[Caption]],
    split_of: dict[str, str],
    image_dir: Path,
    source: Path,
    report: ReadReport,
) -> list[ImageRecord]:
    """One record per image that has both captions and a split; the rest is reported."""
    no_split = [name for name in captions if name not in split_of]
    for name in no_split:
        report.add("no_split", source, name, "has captions but is in no split")
    no_caps = [name for name in split_of if name not in captions]
    for name in no_caps:
        report.add("no_captions", source, name, "is in the split files but has no caption")
    if no_split:
        warn(source, f"{len(no_split)} image(s) with captions are in no split and are skipped, e.g. {no_split[:3]}")
    no_caps = [name for name in split_of if name not in captions]
    if no_caps:
        warn(source, f"{len(no_caps)} image(s) of the split files have no caption and are skipped, e.g. {no_caps[:3]}")
    records, seen = [], {}
    for name, caps in captions.items():
        if name not in split_of:
            continue
        if split_of[name] not in SPLITS:
            report.add("unknown_split", source, name, f"unknown split {split_of[name]!r}")
            continue
        image_id = Path(name).stem
        if image_id in seen:
            raise DataError(source, f"images {seen[image_id]!r} and {name!r} share the id {image_id!r}")
        seen[image_id] = name
        sentences = [Sentence(id=s, raw=raw, tokens=tokenize(raw)) for s, raw in caps]
        records.append(ImageRecord(id=image_id, path=abspath(image_dir / name), split=split_of[name],
                                   sentences=sentences))
    return records


def _split_files(files: list[tuple[Path, str]], key=lambda s: s) -> dict[str, str]:
    """name -> split from the split files that exist; an image in two files is an error."""
    split_of: dict[str, str] = {}
    for f, split in files:
        if not f.is_file():
            continue
        for name in read_split_file(f):
            name = key(name)
            if name in split_of and split_of[name] != split:
                raise DataError(f, f"{name!r} is in both the {split_of[name]} and the {split} split")
            split_of[name] = split
    return split_of


def _default_split(captions: dict[str, list[Caption]]) -> dict[str, str]:
    n = scaled_holdout(len(captions))
    return deterministic_split(captions, n, n)


def _finish(records, check_images, read_sizes, source, report, owned):
    records = check_image_files(records, check_images, source, report)
    if read_sizes:
        fill_sizes(records, report)
    finish(report, owned, len(records))
    return records


@register("flickr8k")
def read_flickr8k(
    root: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    check_images: bool | str = False,
    read_sizes: bool = False,
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Flickr8k from ``Flickr8k.token.txt`` and the ``Flickr_8k.*Images.txt`` split files under `root`."""
    report, owned = ensure(report, strict, "flickr8k")
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "Flickr8k root folder not found")
    token = root / "Flickr8k.token.txt"
    report.source(token)
    captions = read_captions(token, report)
    files = [(root / f"Flickr_8k.{s}Images.txt", split) for s, split in (("train", "train"), ("dev", "val"),
                                                                            ("test", "test"))]
    if any(f.is_file() for f, _ in files):
        split_of = _split_files(files)
    else:
        split_of = _default_split(captions)
    probe = next(iter(captions), None)
    image_dir = Path(images_dir) if images_dir else find_image_dir(
        root, ["images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Images"], probe)
    return _finish(_records(captions, split_of, image_dir, token, report), check_images, read_sizes, token,
                   report, owned)


_30K_CAPTIONS = ("results_20130124.token", "results.token", "results.csv", "flickr30k_images/results.csv")
_30K_IMAGES = ("flickr30k-images", "flickr30k_images/flickr30k_images", "flickr30k_images", "images", "Images")


@register("flickr30k")
def read_flickr30k(
    root: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    split_json: str | os.PathLike | None = None,
    check_images: bool | str = False,
    read_sizes: bool = False,
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Flickr30k from ``results_20130124.token`` (or ``results.csv``) under `root`; splits as documented above."""
    report, owned = ensure(report, strict, "flickr30k")
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "Flickr30k root folder not found")
    source = next((root / c for c in _30K_CAPTIONS if (root / c).is_file()), None)
    if source is None:
        raise DataError(root, f"no Flickr30k caption file (looked for {', '.join(_30K_CAPTIONS)})")
    report.source(source)
    captions = read_captions(source, report)

    js = Path(split_json) if split_json else root / "dataset_flickr30k.json"
    if split_json or js.is_file():
        data = read_json(js)
        try:
            split_of = {str(im["filename"]): str(im["split"]) for im in data["images"]}
        except (KeyError, TypeError) as e:
            raise DataError(js, f"not a Karpathy split JSON (missing {e})") from None
    elif any((root / f"{s}.txt").is_file() for s in ("train", "val", "test")):
        stem_split = _split_files([(root / f"{s}.txt", s) for s in ("train", "val", "test")],
                                  key=lambda s: Path(s).stem)
        name_of = {Path(name).stem: name for name in captions}
        split_of = {name_of.get(stem, f"{stem}.jpg"): split for stem, split in stem_split.items()}
    else:
        split_of = _default_split(captions)
    probe = next(iter(captions), None)
    image_dir = Path(images_dir) if images_dir else find_image_dir(root, _30K_IMAGES, probe)
    return _finish(_records(captions, split_of, image_dir, source, report), check_images, read_sizes, source,
                   report, owned)
