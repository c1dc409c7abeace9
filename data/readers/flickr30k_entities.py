"""Reader for Flickr30k Entities: Flickr30k sentences with phrases linked to boxes (alignment ground truth).

    records = load_dataset("flickr30k_entities", "path/to/flickr30k_entities", images_dir="path/to/images")

Files under `root`:

- ``Sentences/<id>.txt``: one sentence a line, phrases marked up as ``[/EN#<entity id>/<type>[/<type>...]
  <words>]``, e.g. ``[/EN#18/people A man] with [/EN#19/bodyparts pierced ears] .``. Sentence raw text is
  the line without markup; tokens are `data.text.tokenize` of it; each phrase becomes a
  `Phrase(start, end)` over those tokens (end exclusive) whose `region_ids` are ``[entity id]`` when the
  entity has a box in the annotation file, else ``[]`` (``notvisual`` entity 0, ``nobox`` / ``scene``
  entities), and whose `types` are the markup's types (e.g. ``["people"]``). Phrases with no word are dropped.
- ``Annotations/<id>.xml`` (PASCAL-VOC-like): ``<size><width/><height/></size>`` and ``<object>`` elements
  with one or more ``<name>`` (entity ids) and a ``<bndbox>`` (xmin, ymin, xmax, ymax: 1-based inclusive
  pixels), or ``<nobndbox>1</nobndbox>`` / ``<scene>1</scene>`` without a box. Every (entity, box) becomes a
  `Region(box=[xmin - 1, ymin - 1, xmax, ymax], id=entity id, label=<types from the sentences>)`: an entity
  with several boxes gives several regions with the same id. A missing XML leaves regions empty and sizes
  None (warned).
- ``train.txt`` / ``val.txt`` / ``test.txt`` (optional, image ids a line; also looked for in `split_dir`):
  images in none of them are skipped (warned). Without them: `common.deterministic_split`, 1000 val and
  1000 test (n // 5 each under 5000 images).

Images: ``<images_dir>/<id>.jpg``, by default the first of ``root/flickr30k-images``, ``root/flickr30k_images``,
``root/images`` that holds them. Sentence ids are unique over the dataset (sorted image ids, then line order).
Empty sentences are dropped with a warning naming file and line; bad markup or XML raises DataError.
Boxes with a NaN coordinate, no area or entirely outside the image are dropped, boxes partly outside are
clipped to it. Each drop / repair is counted by reason in `report` (``empty_sentence``, ``empty_phrase``,
``box_not_finite``, ``box_empty``, ``box_outside``, ``box_clipped``, ``no_split``, ``conflicting_split``,
``no_captions``, ``no_annotation``, ``missing_image``); ``strict=True`` raises on the first.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..catalog import register
from ..records import DataError, ImageRecord, Phrase, Region, Sentence
from .common import (
    abspath,
    check_image_files,
    deterministic_split,
    find_image_dir,
    read_lines,
    read_split_file,
    read_xml,
    scaled_holdout,
    warn,
)
from .report import ReadReport, check_box, ensure, finish

_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s\]/]+)*)\s+([^\]\[]*)\]")
_WORD = re.compile(r"[a-z0-9]+")  # a token of data.text.tokenize


def parse_sentence(line: str, path: str | os.PathLike = "<sentence>", lineno: int | None = None,
                   report: ReadReport | None = None):
    """Markup line -> (raw text, tokens, [(start, end, phrase text, entity id, types)]) with token spans.
    Phrases with no word are dropped (counted ``empty_phrase`` in `report`)."""
    pieces, spans, pos = [], [], 0
    length = 0
    for m in _PHRASE.finditer(line):
        pieces.append(line[pos : m.start()].lower())
        length += len(pieces[-1])
        words = m.group(3).strip()
        pieces.append(words.lower())
        spans.append((length, length + len(pieces[-1]), words, m.group(1), [t for t in m.group(2).split("/") if t]))
        length += len(pieces[-1])
        pos = m.end()
    pieces.append(line[pos:].lower())
    low = "".join(pieces)
    if "[/en#" in low:
        raise DataError(path, "malformed phrase markup (expected '[/EN#<id>/<type> words]')", lineno)
    raw = " ".join(_raw_pieces(line).split())
    toks = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(low)]
    tokens = [t for _, _, t in toks]
    phrases = []
    for cs, ce, words, eid, types in spans:
        idx = [k for k, (ts, te, _) in enumerate(toks) if ts < ce and te > cs]
        if idx:
            phrases.append((idx[0], idx[-1] + 1, words, eid, types))
        elif report is not None and tokens:
            report.add("empty_phrase", path, f"phrase {words!r} (entity {eid})", f"phrase {words!r} has no word",
                       line=lineno)
    return raw, tokens, phrases


def _raw_pieces(line: str) -> str:
    return _PHRASE.sub(lambda m: m.group(3).strip(), line)


def parse_annotation(path: Path, report: ReadReport | None = None
                     ) -> tuple[tuple[int, int] | None, list[tuple[str, list[float]]]]:
    """XML -> ((width, height) or None, [(entity id, [x1, y1, x2, y2])]) for every boxed entity.

    Boxes are checked against the size (`report.check_box`): NaN, empty or outside boxes are dropped, boxes
    partly outside clipped. Without a `report` an empty box raises DataError (as it always did)."""
    root = read_xml(path)
    size = None
    s = root.find("size")
    if s is not None:
        try:
            size = (int(s.findtext("width")), int(s.findtext("height")))
        except (TypeError, ValueError):
            raise DataError(path, "malformed <size> (expected integer <width> and <height>)") from None
    boxes = []
    for k, obj in enumerate(root.findall("object")):
        names = [n.text.strip() for n in obj.findall("name") if n.text and n.text.strip()]
        if not names:
            raise DataError(path, f"<object> {k + 1} has no <name>")
        bb = obj.find("bndbox")
        if bb is None:
            continue  # nobndbox / scene
        try:
            x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DataError(path, f"<object> {k + 1} ({names[0]}): malformed <bndbox>") from None
        where = f"<object> {k + 1} ({names[0]})"
        if report is None:
            box = [max(0.0, x1 - 1), max(0.0, y1 - 1), x2, y2]
            if box[2] <= box[0] or box[3] <= box[1]:
                raise DataError(path, f"{where}: empty box {[x1, y1, x2, y2]}")
        else:
            w, h = size if size else (None, None)
            box = check_box([x1 - 1, y1 - 1, x2, y2], w, h, report, path, where)
            if box is None:
                continue
        boxes.extend((n, box) for n in names)
    return size, boxes


@register("flickr30k_entities")
def read_flickr30k_entities(
    root: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    check_images: bool | str = False,
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Records with sentences, phrases and entity boxes (see the module docstring)."""
    report, owned = ensure(report, strict, "flickr30k_entities")
    root = Path(root)
    sent_dir = root / "Sentences"
    if not sent_dir.is_dir():
        raise DataError(sent_dir, "Flickr30k Entities 'Sentences' folder not found")
    ids = sorted((p.stem for p in sent_dir.glob("*.txt")), key=lambda s: (len(s), s))
    if not ids:
        raise DataError(sent_dir, "no sentence files (<id>.txt)")

    sdir = Path(split_dir) if split_dir else root
    split_files = [(sdir / f"{s}.txt", s) for s in ("train", "val", "test")]
    if any(f.is_file() for f, _ in split_files):
        split_of = {}
        for f, s in split_files:
            if f.is_file():
                report.source(f)
                for i in read_split_file(f):
                    stem = Path(i).stem
                    if stem in split_of and split_of[stem] != s:
                        report.add("conflicting_split", f, f"image {stem}",
                                   f"in both the {split_of[stem]} and the {s} split ({s} kept)")
                    split_of[stem] = s
        unlisted = [i for i in ids if i not in split_of]
        for i in unlisted:
            report.add("no_split", sdir, f"image {i}", "in no split file")
        nosent = [i for i in split_of if not (sent_dir / f"{i}.txt").is_file()]
        for i in nosent:
            report.add("no_captions", sent_dir, f"image {i}", "in the split files but has no sentence file")
        if unlisted:
            warn(sdir, f"{len(unlisted)} image(s) are in no split file and are skipped, e.g. {unlisted[:3]}")
        if nosent:
            warn(sent_dir, f"{len(nosent)} image(s) of the split files have no sentence file, e.g. {nosent[:3]}")
    else:
        n = scaled_holdout(len(ids))
        split_of = deterministic_split(ids, n, n)

    image_dir = Path(images_dir) if images_dir else find_image_dir(
        root, ["flickr30k-images", "flickr30k_images", "images", "Images"], f"{ids[0]}.jpg")
    records, no_xml, sid = [], [], 0
    for image_id in ids:
        if image_id not in split_of:
            continue
        xml = root / "Annotations" / f"{image_id}.xml"
        if xml.is_file():
            size, boxes = parse_annotation(xml, report)
        else:
            report.add("no_annotation", xml, f"image {image_id}", "no annotation file (no boxes, no size)")
            size, boxes = None, []
            no_xml.append(image_id)
        boxed = {eid for eid, _ in boxes}
        types: dict[str, str] = {}
        sentences, phrases, empty = [], [], []
        path = sent_dir / f"{image_id}.txt"
        for lineno, line in read_lines(path):
            raw, tokens, spans = parse_sentence(line, path, lineno, report)
            if not tokens:
                report.add("empty_sentence", path, f"image {image_id}", f"sentence {line!r} has no word",
                           line=lineno)
                empty.append(lineno)
                continue
            sentences.append(Sentence(id=sid, raw=raw, tokens=tokens))
            for start, end, words, eid, tys in spans:
                if tys:
                    types.setdefault(eid, "/".join(tys))
                phrases.append(Phrase(sentence_id=sid, start=start, end=end, text=words,
                                      region_ids=[eid] if eid in boxed else [], types=list(tys)))
            sid += 1
        if empty:
            warn(path, "empty sentence(s) dropped", empty)
        regions = [Region(box=list(box), label=types.get(eid), id=eid) for eid, box in boxes]
        w, h = size if size else (None, None)
        records.append(ImageRecord(id=image_id, path=abspath(image_dir / f"{image_id}.jpg"), width=w, height=h,
                                   split=split_of[image_id], sentences=sentences, regions=regions,
                                   phrases=phrases))
    if no_xml:
        warn(root / "Annotations", f"{len(no_xml)} image(s) without an annotation file (no boxes), e.g. {no_xml[:3]}")
    dropped_boxes = sum(report.count(r) for r in ("box_not_finite", "box_empty", "box_outside"))
    if dropped_boxes:
        warn(root / "Annotations", f"{dropped_boxes} box(es) with a NaN coordinate, no area or outside the image "
                                   "dropped")
    if report.count("box_clipped"):
        warn(root / "Annotations", f"{report.count('box_clipped')} box(es) partly outside the image clipped to it")
    records = check_image_files(records, check_images, sent_dir, report)
    finish(report, owned, len(records))
    return records
