"""Reader for Karpathy's split JSON (`dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`).

    records = load_dataset("karpathy", "path/to/dataset_coco.json", images_dir="path/to/coco")

Format: ``{"dataset": NAME, "images": [{"filename", "filepath"?, "imgid", "split", "sentids", "sentences":
[{"raw", "tokens", "imgid", "sentid"}], "cocoid"?}]}``; split is one of train / val / test / restval
(`select_split(records, "train")` includes restval).

- `root` is the JSON file, or a folder holding exactly one ``dataset_*.json`` (or exactly one ``*.json``).
- Image paths: ``<images_dir>/<filepath>/<filename>`` (COCO: ``filepath`` = ``val2014`` etc.) or
  ``<images_dir>/<filename>``; `images_dir` defaults to the JSON's folder, whose ``images/`` sub-folder is
  also tried. The layout is probed on the first images and then used for all.
- Ids: ``str(cocoid)`` when present, else the file stem. Sentence ids: the file's ``sentid`` (must be unique).
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


@register("karpathy")
def read_karpathy(
    root: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    check_images: bool | str = False,
    read_sizes: bool = False,
) -> list[ImageRecord]:
    """Records of a Karpathy split JSON (see the module docstring). Raises DataError on malformed input."""
    path = find_split_json(root)
    data = read_json(path)
    images = expect(data, "images", path, "top level")
    if not isinstance(images, list):
        raise DataError(path, "'images' must be a list")

    entries = []
    for k, img in enumerate(images):
        filename = expect(img, "filename", path, f"images[{k}]")
        entries.append((str(img.get("filepath", "") or ""), str(filename)))
    bases = [Path(images_dir)] if images_dir is not None else [path.parent, path.parent / "images"]
    base, with_fp = _layout(entries, bases)

    records: list[ImageRecord] = []
    seen_ids: set[str] = set()
    seen_sids: set[int] = set()
    pending: list[Sentence] = []  # sentences without a sentid, numbered after the others
    empty: list[str] = []
    for k, (img, (filepath, filename)) in enumerate(zip(images, entries)):
        split = img.get("split", "train")
        if split not in SPLITS:
            raise DataError(path, f"images[{k}] ({filename}): unknown split {split!r}; expected one of {SPLITS}")
        image_id = str(img["cocoid"]) if img.get("cocoid") is not None else Path(filename).stem
        if image_id in seen_ids:
            raise DataError(path, f"images[{k}]: duplicate image id {image_id!r}")
        seen_ids.add(image_id)
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
                empty.append(f"{filename} sentid {sid}")
                continue
            sent = Sentence(id=-1, raw=str(raw), tokens=tokens)
            if sid is None:
                pending.append(sent)
            else:
                sid = int(sid)
                if sid in seen_sids:
                    raise DataError(path, f"images[{k}] ({filename}): duplicate sentid {sid}")
                seen_sids.add(sid)
                sent.id = sid
            sentences.append(sent)
        p = base / filepath / filename if with_fp else base / filename
        records.append(ImageRecord(id=image_id, path=abspath(p), split=split, sentences=sentences))

    nxt = max(seen_sids, default=-1) + 1
    for n, sent in enumerate(pending):
        sent.id = nxt + n
    if empty:
        warn(path, f"{len(empty)} empty caption(s) dropped (no word after tokenizing): {', '.join(empty[:10])}")
    records = check_image_files(records, check_images, path)
    if read_sizes:
        fill_sizes(records)
    return records
