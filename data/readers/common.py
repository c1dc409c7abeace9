"""Helpers shared by the dataset readers: reading text / JSON / XML with errors that name the file and line,
finding image folders, probing image sizes from headers, deterministic splits, and reporting bad captions.

Policy for bad input, the same in every reader:

- a malformed line, JSON or XML file raises `DataError` naming the file (and the line);
- an **empty caption** (no token left after `data.text.tokenize`) is dropped, with one `DataWarning` per file
  that names the file and the lines (an empty sentence cannot be scored or generated);
- a caption whose words are all outside the vocabulary is **kept** (the vocabulary is built later, from the
  training split); `report_unknown(records, vocab)` lists such sentences;
- a missing image file: readers do not open images by default; ``check_images=True`` raises a `DataError`
  naming the missing files, ``check_images="skip"`` drops those records with a `DataWarning`.

Every record, sentence or region a reader drops or repairs is also counted by reason in a
`report.ReadReport` (the ``report=`` argument of every reader; `catalog.load_dataset` makes one, logs it to
the ``dvsa.data`` logger and keeps it for `catalog.last_report()`); ``strict=True`` turns the first such
problem into a `DataError` naming the file, the record and the reason.
"""
from __future__ import annotations

import json
import os
import random
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from ..records import DataError, ImageRecord
from .report import ReadReport

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class DataWarning(UserWarning):
    """Bad input that a reader reported and skipped (the message names the file and lines)."""


def warn(path: str | os.PathLike, message: str, lines: Iterable[int] | None = None) -> None:
    """Emit a `DataWarning` ``"<path>[: lines 3, 7, ...]: message"`` (at most 10 line numbers are listed)."""
    where = str(path)
    if lines is not None:
        lines = list(lines)
        shown = ", ".join(map(str, lines[:10])) + (f", ... ({len(lines)} in all)" if len(lines) > 10 else "")
        where += f": line{'s' if len(lines) > 1 else ''} {shown}"
    warnings.warn(f"{where}: {message}", DataWarning, stacklevel=3)


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every non-blank line of a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text ({e.reason})", line) from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line.rstrip("\r\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a syntax error becomes a `DataError` with the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg}, column {e.colno})", e.lineno) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"malformed JSON (not UTF-8: {e.reason})") from None


def read_xml(path: str | os.PathLike) -> ET.Element:
    """Parse an XML file and return its root element; a syntax error becomes a `DataError`."""
    path = Path(path)
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(path, f"malformed XML ({e})", e.position[0] if e.position else None) from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror or e})") from None


def read_split_file(path: str | os.PathLike) -> list[str]:
    """One image name (or id) per non-blank line, whitespace stripped, order kept."""
    return [line.strip() for _, line in read_lines(path)]


def expect(mapping: Any, key: str, path: str | os.PathLike, what: str, line: int | None = None) -> Any:
    """`mapping[key]`, or a `DataError` naming the file when the key is missing or `mapping` is not a dict."""
    if not isinstance(mapping, dict):
        raise DataError(path, f"{what}: expected an object, got {type(mapping).__name__}", line)
    if key not in mapping:
        raise DataError(path, f"{what}: missing field {key!r}", line)
    return mapping[key]


def find_image_dir(root: Path, candidates: Iterable[str], probe: str | None = None) -> Path:
    """The first `root/<candidate>` folder that holds the file `probe` (if given), else the first existing
    candidate folder, else `root` itself when it holds `probe`, else `root/<first candidate>` (which may not
    exist: `check_images` then reports the missing files)."""
    candidates = list(candidates)
    dirs = [root / c for c in candidates]
    if probe is not None:
        for d in dirs + [root]:
            if (d / probe).is_file():
                return d
    for d in dirs:
        if d.is_dir():
            return d
    return dirs[0] if dirs else root


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the image header only (PIL decodes no pixels). Raises OSError for unreadable files."""
    with Image.open(path) as im:
        return int(im.width), int(im.height)


def fill_sizes(records: list[ImageRecord], report: ReadReport | None = None) -> list[ImageRecord]:
    """Set width/height of records that lack them, from image headers; unreadable images keep None (warned,
    counted ``size_unreadable`` in `report`)."""
    bad = []
    for r in records:
        if r.width is None or r.height is None:
            try:
                r.width, r.height = image_size(r.path)
            except (OSError, ValueError) as e:
                if report is not None:
                    report.add("size_unreadable", r.path, f"image {r.id}",
                               f"size unreadable ({e.__class__.__name__}: {e}), left unset")
                bad.append((r.path, e))
    if bad:
        warn(bad[0][0], f"{len(bad)} image(s) could not be read for their size, sizes left unset "
                        f"(first: {bad[0][1].__class__.__name__}: {bad[0][1]})")
    return records


def check_image_files(records: list[ImageRecord], mode: bool | str, source: str | os.PathLike,
                      report: ReadReport | None = None) -> list[ImageRecord]:
    """Verify that every record's image file exists.

    mode False: no check. True: raise `DataError` (naming `source`, the count and the first missing paths).
    "skip": drop records whose image is missing, with a `DataWarning` that names the first missing paths
    (each counted ``missing_image`` in `report`; a strict report raises on the first).
    """
    if not mode:
        return records
    if mode not in (True, "skip"):
        raise ValueError(f"check_images must be False, True or 'skip', got {mode!r}")
    missing = [r for r in records if not os.path.isfile(r.path)]
    if not missing:
        return records
    shown = ", ".join(r.path for r in missing[:5])
    msg = f"{len(missing)} of {len(records)} image file(s) are missing, e.g. {shown}"
    if mode == "skip":
        if report is not None:
            for r in missing:
                report.add("missing_image", source, f"image {r.id}", f"image file {r.path} not found")
        warn(source, msg + "; those records are skipped")
        gone = {id(r) for r in missing}
        return [r for r in records if id(r) not in gone]
    raise DataError(source, msg)


def deterministic_split(ids: Iterable[str], n_val: int, n_test: int, seed: int = 0) -> dict[str, str]:
    """id -> "train" | "val" | "test": sort the ids, shuffle them with `random.Random(seed)`, the first `n_val`
    are val, the next `n_test` test, the rest train. The same ids always give the same split."""
    order = sorted(set(ids))
    random.Random(seed).shuffle(order)
    out = {}
    for k, i in enumerate(order):
        out[i] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    return out


def scaled_holdout(n_images: int, full: int = 1000) -> int:
    """Size of each of val and test for a dataset of `n_images` with no split file: `full` (1000 for Flickr)
    when there are at least 5 * full images, else n_images // 5 (at least 1 when there are 3 images or more)."""
    if n_images >= 5 * full:
        return full
    return max(1, n_images // 5) if n_images >= 3 else 0


def report_unknown(records: list[ImageRecord], vocab) -> list[dict]:
    """Sentences with no word in `vocab` (every token would be UNK), as
    ``{"image_id", "sentence_id", "raw"}`` dicts. Readers keep such sentences; call this after building the
    vocabulary to see them."""
    out = []
    for r in records:
        for s in r.sentences:
            if not any(t in vocab for t in s.tokens):
                out.append({"image_id": r.id, "sentence_id": s.id, "raw": s.raw})
    return out


def abspath(path: str | os.PathLike) -> str:
    """Absolute path as a string, without resolving symbolic links."""
    return os.path.abspath(path)
