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

Flickr8k + Flickr30k Entities (phrases and boxes for the alignment evaluation): the flickr8k reader's option
``entities`` names a folder in the layout of ``../shared/datasets/flickr8k-entities`` (``Sentences/``,
``Annotations/``, ``caption_alignment.tsv``); by default (``entities="auto"``) a sibling folder
``flickr8k-entities`` next to the Flickr8k root is used when it exists; ``entities=none`` turns the join off
(``--dataset-arg entities=none``). Records without Entities stay as they are. How captions, phrase spans and
boxes are joined: `join_entities` (boxes are scaled to the 224 x 224 JPEGs, or to the sizes read with
``read_sizes=True``).

What is dropped is counted by reason in `report` (``empty_sentence``, ``no_split``, ``no_captions``,
``unknown_split``, ``missing_image``, ``size_unreadable``; with Entities also ``phrase_unmapped``,
``phrase_respanned``, ``phrase_no_box`` and ``entities_missing`` (skipped: not errors), and the box reasons of
the Entities reader); ``strict=True`` raises DataError on the first.
"""
from __future__ import annotations

import os
import re
from difflib import SequenceMatcher
from pathlib import Path

from ..catalog import register
from ..records import SPLITS, DataError, ImageRecord, Phrase, Region, Sentence
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
from .flickr30k_entities import parse_annotation, parse_sentence
from .report import ReadReport, ensure, finish

Caption = tuple[int, str]  # (sentence id, raw)

_NUM_TEXT = re.compile(r"\s*(\d+)\s+(\S.*)$")


def read_captions(path: str | os.PathLike, report: ReadReport | None = None,
                  numbers: dict[str, list[int]] | None = None) -> dict[str, list[Caption]]:
    """file name -> [(sentence id, raw)] in file order (ids count the kept captions from 0). Empty captions
    are dropped with one warning naming the lines (counted ``empty_sentence`` in `report`); a malformed line
    raises DataError(path, ..., line). `numbers` (optional) is filled with file name -> the caption numbers
    (the ``#0-4`` / comment_number) of the kept captions, parallel to the returned lists."""
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
            name, raw, num = parts[0].strip(), parts[2].strip(), parts[1].strip()
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
        if numbers is not None:
            numbers.setdefault(name, []).append(int(num))
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
    entities: str | os.PathLike | bool | None = "auto",
) -> list[ImageRecord]:
    """Flickr8k from ``Flickr8k.token.txt`` and the ``Flickr_8k.*Images.txt`` split files under `root`; with
    the Flickr30k Entities annotations of its photos (`entities`, see the module docstring) the records also
    carry phrases and boxes."""
    report, owned = ensure(report, strict, "flickr8k")
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "Flickr8k root folder not found")
    ent_root = entities_root(root, entities)
    token = root / "Flickr8k.token.txt"
    report.source(token)
    numbers: dict[str, list[int]] = {}
    captions = read_captions(token, report, numbers)
    files = [(root / f"Flickr_8k.{s}Images.txt", split) for s, split in (("train", "train"), ("dev", "val"),
                                                                            ("test", "test"))]
    if any(f.is_file() for f, _ in files):
        split_of = _split_files(files)
    else:
        split_of = _default_split(captions)
    probe = next(iter(captions), None)
    image_dir = Path(images_dir) if images_dir else find_image_dir(
        root, ["images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Images"], probe)
    records = check_image_files(_records(captions, split_of, image_dir, token, report), check_images, token, report)
    if read_sizes:
        fill_sizes(records, report)
    if ent_root is not None:  # after the sizes: boxes are scaled to them when read
        join_entities(records, numbers, ent_root, report)
    finish(report, owned, len(records))
    return records


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


# -- Flickr8k + Flickr30k Entities ----------------------------------------------------------------------------

ENTITIES_FOLDER = "flickr8k-entities"  # looked for next to the Flickr8k root
FLICKR8K_SIZE = 224  # the shared Flickr8k JPEGs are 224 x 224 (boxes are scaled to it unless sizes were read)


def entities_root(root: Path, entities) -> Path | None:
    """The Entities folder to join, or None: `entities` "auto" (default) -> the sibling ``flickr8k-entities``
    when it holds ``caption_alignment.tsv``; "none" / "off" / False / "" -> None; else that folder (it must
    hold ``caption_alignment.tsv``, ``Sentences/`` and ``Annotations/``)."""
    if entities is None or entities is False or str(entities).strip().lower() in ("none", "off", "false", "no", ""):
        return None
    if entities is True or str(entities).strip().lower() == "auto":
        cand = root.resolve().parent / ENTITIES_FOLDER
        return cand if (cand / "caption_alignment.tsv").is_file() else None
    path = Path(entities)
    if not (path / "caption_alignment.tsv").is_file():
        raise DataError(path, "not a Flickr8k Entities folder (no caption_alignment.tsv)")
    return path


def read_caption_alignment(path: Path) -> dict[tuple[str, int], tuple[str, int, str]]:
    """caption_alignment.tsv -> {(flickr8k file, caption number): (flickr30k id, entities line, match)}."""
    out = {}
    for n, line in read_lines(path):
        parts = line.split("\t")
        if parts[0] == "flickr8k_file":
            continue
        if len(parts) < 5 or not parts[1].strip().isdigit() or not parts[3].strip().isdigit():
            raise DataError(path, "expected 'flickr8k_file, flickr8k_caption, flickr30k_id, entities_line, match, "
                                  "similarity'", n)
        out[(parts[0].strip(), int(parts[1]))] = (parts[2].strip(), int(parts[3]), parts[4].strip())
    return out


def token_map(src: list[str], dst: list[str]) -> list[int | None]:
    """For each token of `src`, its position in `dst` by a difflib alignment of the token lists (None when it
    has no counterpart): equal runs map one to one, replaced runs proportionally (a spelling edit such as
    blonde -> blond maps onto its twin), deleted tokens to None."""
    out: list[int | None] = [None] * len(src)
    for op, i1, i2, j1, j2 in SequenceMatcher(None, src, dst, autojunk=False).get_opcodes():
        if op in ("equal", "replace") and j2 > j1:
            for i in range(i1, i2):
                out[i] = j1 + (i - i1) * (j2 - j1) // (i2 - i1)
    return out


def _entities_image(ent: Path, fid: str, report: ReadReport):
    """(parsed lines {0-based line: (tokens, spans)}, (width, height) or None, [(chain id, box)]) of one
    Entities image; None when its sentence file is missing."""
    spath = ent / "Sentences" / f"{fid}.txt"
    if not spath.is_file():
        return None
    lines = {}
    for k, (lineno, line) in enumerate(read_lines(spath)):
        _, tokens, spans = parse_sentence(line, spath, lineno, report)
        lines[k] = (tokens, spans)
    xml = ent / "Annotations" / f"{fid}.xml"
    size, boxes = parse_annotation(xml, report) if xml.is_file() else (None, [])
    return lines, size, boxes


def join_entities(records: list[ImageRecord], numbers: dict[str, list[int]], ent: Path,
                  report: ReadReport) -> None:
    """Give `records` (Flickr8k, in place) the phrases and boxes of their Flickr30k Entities annotations.

    Each caption ``<file>#<k>`` is joined with its Entities sentence through ``caption_alignment.tsv`` (the
    Entities line order is not the #0-4 order). Phrase spans refer to the Entities wording: when it equals the
    Flickr8k caption's tokens they are kept, else ("near" matches) each phrase token is mapped by `token_map`
    and the phrase becomes the span from its first to its last mapped token; a phrase none of whose tokens
    maps is dropped (``phrase_unmapped``), a mapped one whose words changed is counted ``phrase_respanned``.
    Boxes ([xmin - 1, ymin - 1, xmax, ymax] of the annotation, checked against its <size>) are scaled to the
    image on disk: sx = W / width, sy = H / height with W x H the record's size when read (``read_sizes``),
    else 224 x 224 (the shared JPEGs); each becomes a `Region(box, label=<chain types>, id=<chain id>,
    source_area=<area in the annotation's pixels>)`. Each phrase links to its chain's region ids and carries
    its Entities types; notvisual / scene / nobox phrases are kept without boxes (``phrase_no_box``,
    counted as skipped: not an error). Captions without an Entities sentence keep no phrase
    (``entities_missing``, skipped); records whose image has no Entities file stay as they are.
    """
    table = ent / "caption_alignment.tsv"
    report.source(table)
    align = read_caption_alignment(table)
    for rec in records:
        name = Path(rec.path).name
        nums = numbers.get(name, [])
        keys = [align.get((name, k)) for k in nums]
        fids = {key[0] for key in keys if key is not None}
        if not fids:
            continue
        parsed = {fid: _entities_image(ent, fid, report) for fid in sorted(fids)}
        regions, seen = [], set()
        types: dict[str, str] = {}
        for fid, got in parsed.items():
            if got is None:
                continue
            for tokens, spans in got[0].values():
                for *_, eid, tys in spans:
                    if tys:
                        types.setdefault(eid, "/".join(tys))
        boxed: set[str] = set()
        for fid, got in parsed.items():
            if got is None:
                continue
            size, boxes = got[1], got[2]
            if size is None:
                report.add("no_annotation", ent / "Annotations" / f"{fid}.xml", f"image {rec.id}",
                           "no annotation size: boxes cannot be scaled (no boxes)")
                continue
            W, H = (rec.width, rec.height) if rec.width and rec.height else (FLICKR8K_SIZE, FLICKR8K_SIZE)
            sx, sy = W / size[0], H / size[1]
            for eid, b in boxes:
                if (eid, tuple(b)) in seen:
                    continue
                seen.add((eid, tuple(b)))
                regions.append(Region(box=[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy], label=types.get(eid),
                                      id=eid, source_area=(b[2] - b[0]) * (b[3] - b[1])))
                boxed.add(eid)
        phrases = []
        for sent, key in zip(rec.sentences, keys):
            got = parsed.get(key[0]) if key is not None else None
            if got is None or key[1] not in got[0]:
                report.add("entities_missing", table, f"image {rec.id}, sentence {sent.id}",
                           "caption without an Entities sentence (no phrases)", kind="skipped")
                continue
            etoks, spans = got[0][key[1]]
            same = etoks == sent.tokens
            where = token_map(etoks, sent.tokens) if not same else None
            for start, end, words, eid, tys in spans:
                if same:
                    s0, e0 = start, end
                else:
                    pos = [where[i] for i in range(start, end) if where[i] is not None]
                    if not pos:
                        report.add("phrase_unmapped", table, f"image {rec.id}, sentence {sent.id}",
                                   f"phrase {words!r} has no word in the Flickr8k caption {sent.raw!r}")
                        continue
                    s0, e0 = min(pos), max(pos) + 1
                    if sent.tokens[s0:e0] != etoks[start:end]:
                        report.add("phrase_respanned", table, f"image {rec.id}, sentence {sent.id}",
                                   f"phrase {words!r} mapped onto {' '.join(sent.tokens[s0:e0])!r}",
                                   kind="repaired")
                ids = [eid] if eid in boxed else []
                if not ids:
                    report.add("phrase_no_box", table, f"image {rec.id}, sentence {sent.id}",
                               f"phrase {words!r} ({'/'.join(tys) or 'no type'}) has no box", kind="skipped")
                text = words if same else " ".join(sent.tokens[s0:e0])
                phrases.append(Phrase(sentence_id=sent.id, start=s0, end=e0, text=text, region_ids=ids,
                                      types=list(tys)))
        rec.regions = regions
        rec.phrases = phrases
