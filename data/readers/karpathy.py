"""Reader for Karpathy's split JSON (`dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`).

    records = load_dataset("karpathy", "path/to/dataset_coco.json", images_dir="path/to/coco")

Format: ``{"dataset": NAME, "images": [{"filename", "filepath"?, "imgid", "split", "sentids", "sentences":
[{"raw", "tokens", "imgid", "sentid"}], "cocoid"?}]}``; split is one of train / val / test / restval
(`select_split(records, "train")` includes restval).

- `root` is the JSON file, or a folder holding exactly one ``dataset_*.json`` (or exactly one ``*.json``).
- Image paths: ``<images_dir>/<filepath>/<filename>`` (COCO: ``filepath`` = ``val2014`` etc.) or
  ``<images_dir>/<filename>``; `images_dir` defaults to the JSON's folder, whose ``images/`` sub-folder is
  also tried. The layout is probed on the first images and then used for all.
- Ids: ``str(cocoid)`` when present, else the file stem. Sentence ids: the file's ``sentid``; a missing,
  non-integer or duplicate sentid gets a fresh id after the largest one (counted ``bad_sentence_id`` /
  ``duplicate_sentence_id``). Images with no ``filename``, an unknown split or an id already used are dropped
  (``missing_filename``, ``unknown_split``, ``duplicate_image_id``); ``strict=True`` raises on each instead.
- Tokens are recomputed from ``raw`` with `data.text.tokenize` so every reader tokenizes alike.
- Sizes are not in the file: width/height stay None unless ``read_sizes=True`` (reads image headers).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..catalog import register
from ..records import SPLITS, DataError, ImageRecord, Sentence
from ..text import tokenize
from .common import abspath, check_image_files, expect, fill_sizes, read_json, warn
from .report import REPAIRED, ReadReport, ensure, finish


def find_split_json(root: str | os.PathLike) -> Path:
    """The Karpathy JSON named by `root`, or the one inside the folder `root`."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(root, "no such file or folder")
    for pattern in ("dataset_*.json", "*.json"):
        found = sorted(root.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(root, f"several split files {[p.name for p in found]}: pass the JSON file itself")
    raise DataError(root, "no Karpathy split JSON (dataset_*.json) in this folder")


def _layout(entries: list[tuple[str, str]], bases: list[Path]) -> tuple[Path, bool]:
    """(base folder, use filepath?) under which the first images exist; defaults to (bases[0], True)."""
    options = [(b, True) for b in bases] + [(b, False) for b in bases]
    for filepath, filename in entries[:20]:
        for base, with_fp in options:
            if (base / filepath / filename if with_fp else base / filename).is_file():
                return base, with_fp
    return bases[0], True


def _int_id(v) -> int | None:
    """An id as int: ints, integral floats and digit strings; None for anything else (bools too)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


@register("karpathy")
def read_karpathy(
    root: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    check_images: bool | str = False,
    read_sizes: bool = False,
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Records of a Karpathy split JSON (see the module docstring). Raises DataError on malformed input;
    what is dropped or repaired is counted in `report` (``strict=True``: a DataError on the first)."""
    report, owned = ensure(report, strict, "karpathy")
    path = find_split_json(root)
    report.source(path)
    data = read_json(path)
    images = expect(data, "images", path, "top level")
    if not isinstance(images, list):
        raise DataError(path, "'images' must be a list")

    entries = []
    for k, img in enumerate(images):
        if not isinstance(img, dict):
            raise DataError(path, f"images[{k}]: expected an object, got {type(img).__name__}")
        filename = img.get("filename")
        if filename is None or not str(filename).strip():
            report.add("missing_filename", path, f"images[{k}]", "image entry without a 'filename'")
            entries.append(None)
            continue
        entries.append((str(img.get("filepath", "") or ""), str(filename)))
    bases = [Path(images_dir)] if images_dir is not None else [path.parent, path.parent / "images"]
    base, with_fp = _layout([e for e in entries if e is not None], bases)

    records: list[ImageRecord] = []
    seen_ids: dict[str, int] = {}
    seen_imgids: dict[int, int] = {}
    seen_sids: set[int] = set()
    pending: list[Sentence] = []  # sentences without a (usable) sentid, numbered after the others
    empty: list[str] = []
    for k, (img, entry) in enumerate(zip(images, entries)):
        if entry is None:
            continue
        filepath, filename = entry
        what = f"images[{k}] ({filename})"
        split = img.get("split", "train")
        if split not in SPLITS:
            report.add("unknown_split", path, what, f"unknown split {split!r}; expected one of {SPLITS}")
            continue
        if "imgid" in img:
            imgid = _int_id(img["imgid"])
            if imgid is None:
                report.add("bad_image_id", path, what, f"imgid {img['imgid']!r} is not an integer (ignored)")
            elif imgid in seen_imgids:
                report.add("duplicate_image_id", path, what,
                           f"imgid {imgid} already used by images[{seen_imgids[imgid]}] (ignored)", kind=REPAIRED)
            else:
                seen_imgids[imgid] = k
        image_id = Path(filename).stem
        if img.get("cocoid") is not None:
            cocoid = _int_id(img["cocoid"])
            if cocoid is None:
                report.add("bad_image_id", path, what,
                           f"cocoid {img['cocoid']!r} is not an integer (file stem {image_id!r} used)")
            else:
                image_id = str(img["cocoid"])
        if image_id in seen_ids:
            report.add("duplicate_image_id", path, what,
                       f"image id {image_id!r} already used by images[{seen_ids[image_id]}] (dropped)")
            continue
        seen_ids[image_id] = k
        sentences = []
        for j, s in enumerate(img.get("sentences", []) or []):
            if not isinstance(s, dict):
                raise DataError(path, f"images[{k}].sentences[{j}]: expected an object")
            raw = s.get("raw")
            if raw is None:
                raw = " ".join(s.get("tokens", []) or [])
            tokens = tokenize(str(raw))
            sid = s.get("sentid")
            if not tokens:
                report.add("empty_sentence", path, f"{what}.sentences[{j}]",
                           f"sentence {raw!r} (sentid {sid}) has no word")
                empty.append(f"{filename} sentid {sid}")
                continue
            sent = Sentence(id=-1, raw=str(raw), tokens=tokens)
            if sid is None:
                pending.append(sent)
            else:
                num = _int_id(sid)
                if num is None:
                    report.add("bad_sentence_id", path, f"{what}.sentences[{j}]",
                               f"sentid {sid!r} is not an integer (renumbered)")
                    pending.append(sent)
                elif num in seen_sids:
                    report.add("duplicate_sentence_id", path, f"{what}.sentences[{j}]",
                               f"duplicate sentid {num} (renumbered)")
                    pending.append(sent)
                else:
                    seen_sids.add(num)
                    sent.id = num
            sentences.append(sent)
        p = base / filepath / filename if with_fp else base / filename
        records.append(ImageRecord(id=image_id, path=abspath(p), split=split, sentences=sentences))

    nxt = max(seen_sids, default=-1) + 1
    for n, sent in enumerate(pending):
        sent.id = nxt + n
    if empty:
        warn(path, f"{len(empty)} empty caption(s) dropped (no word after tokenizing): {', '.join(empty[:10])}")
    bad = {r: report.count(r) for r in ("missing_filename", "unknown_split", "bad_image_id", "duplicate_image_id",
                                         "bad_sentence_id", "duplicate_sentence_id") if report.count(r)}
    if bad:
        warn(path, "bad entries dropped or repaired: " + ", ".join(f"{n} {r}" for r, n in bad.items()))
    records = check_image_files(records, check_images, path, report)
    if read_sizes:
        fill_sizes(records, report)
    finish(report, owned, len(records))
    return records
