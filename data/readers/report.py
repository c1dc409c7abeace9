"""What a reader dropped, repaired or skipped, counted by reason: `ReadReport`.

Every reader fills one in (``report=`` argument; `catalog.load_dataset` makes one and logs it). Kinds:

- ``dropped``: a record, sentence or region left out (empty sentence, NaN box, duplicate image id, ...);
- ``repaired``: kept after a fix (box clipped to the image, duplicate sentence id renumbered, ...);
- ``incomplete``: kept with a field left unset (image size unreadable, no annotation file);
- ``skipped``: left out because an option asked for it (crowd boxes, ``limit``): never an error.

With ``strict=True`` the first problem of any kind but ``skipped`` raises `DataError` naming the file (and
line), the record and the reason, e.g. ``dataset.json: images[3] (b.jpg), sentences[0]: sentid 'abc' is not
an integer [bad_sentence_id]``. `summary()` is a JSON-able dict; `lines()` are human lines; `log()` writes
them to the ``dvsa.data`` logger (WARNING when something was dropped / repaired, else INFO).
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from typing import Any

from ..records import DataError

log = logging.getLogger("dvsa.data")

DROPPED, REPAIRED, INCOMPLETE, SKIPPED = "dropped", "repaired", "incomplete", "skipped"
KINDS = (DROPPED, REPAIRED, INCOMPLETE, SKIPPED)

# reason -> (default kind, what it means): the vocabulary of `ReadReport.add`
REASONS: dict[str, tuple[str, str]] = {
    "bad_sentence_id": (REPAIRED, "sentence id not an integer (renumbered)"),
    "duplicate_sentence_id": (REPAIRED, "sentence id used twice (renumbered)"),
    "bad_image_id": (REPAIRED, "image id not an integer (ignored / file stem used)"),
    "duplicate_image_id": (DROPPED, "image id used twice (later image dropped)"),
    "missing_filename": (DROPPED, "image entry without a file name"),
    "empty_sentence": (DROPPED, "sentence with no word after tokenizing"),
    "empty_phrase": (DROPPED, "phrase / region description with no word"),
    "unknown_split": (DROPPED, "image whose split is not one of train/val/test/restval"),
    "no_split": (DROPPED, "image in no split of the split file(s)"),
    "conflicting_split": (REPAIRED, "image listed in two split files (last one kept)"),
    "no_captions": (DROPPED, "split-file entry with no caption / sentence file"),
    "orphan_annotation": (DROPPED, "annotation of an image id the file does not define"),
    "box_not_finite": (DROPPED, "box with a NaN or infinite coordinate"),
    "box_empty": (DROPPED, "box with zero or negative area"),
    "box_outside": (DROPPED, "box entirely outside the image"),
    "box_clipped": (REPAIRED, "box partly outside the image (clipped to it)"),
    "missing_image": (DROPPED, "image file not found"),
    "unreadable_image": (DROPPED, "image file PIL cannot open"),
    "size_unreadable": (INCOMPLETE, "image size unreadable (left unset)"),
    "no_annotation": (INCOMPLETE, "image without an annotation file (no boxes, no size)"),
    "crowd_box": (SKIPPED, "crowd annotation (crowd=False)"),
    "limit": (SKIPPED, "image beyond `limit`"),
}


class ReadReport:
    """Counts of (kind, reason) with a few examples each. See the module docstring."""

    def __init__(self, dataset: str | None = None, strict: bool = False, max_examples: int = 3):
        self.dataset = dataset
        self.strict = strict
        self.max_examples = max_examples
        self.counts: Counter[tuple[str, str]] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.records: int | None = None  # records returned (set by load_dataset)
        self.sources: list[str] = []

    # -- filling in ----------------------------------------------------------------------------------------
    def add(self, reason: str, path: str | os.PathLike, where: str, detail: str = "", *, kind: str | None = None,
            line: int | None = None, n: int = 1) -> None:
        """Count `n` problems of `reason` at `path` (`line`), record `where` (e.g. ``images[3] (b.jpg)``).
        Strict mode raises `DataError(path, "<where>: <detail> [<reason>]", line)` instead (unless skipped)."""
        kind = kind or REASONS.get(reason, (DROPPED, ""))[0]
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        text = detail or REASONS.get(reason, ("", reason))[1]
        msg = f"{where}: {text}" if where else text
        if self.strict and kind != SKIPPED:
            raise DataError(path, f"{msg} [{reason}]", line)
        self.counts[(kind, reason)] += n
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            at = f"{path}:{line}" if line is not None else str(path)
            ex.append(f"{at}: {msg}")

    def source(self, path: str | os.PathLike) -> None:
        """Note a file the reader read (listed in the summary)."""
        if str(path) not in self.sources:
            self.sources.append(str(path))

    def merge(self, other: "ReadReport") -> "ReadReport":
        self.counts.update(other.counts)
        for reason, ex in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ex[: max(0, self.max_examples - len(mine))])
        for s in other.sources:
            self.source(s)
        return self

    # -- reading -------------------------------------------------------------------------------------------
    def by_kind(self, kind: str) -> dict[str, int]:
        return {r: n for (k, r), n in sorted(self.counts.items()) if k == kind}

    @property
    def dropped(self) -> dict[str, int]:
        return self.by_kind(DROPPED)

    @property
    def repaired(self) -> dict[str, int]:
        return self.by_kind(REPAIRED)

    def count(self, reason: str) -> int:
        return sum(n for (_, r), n in self.counts.items() if r == reason)

    def __bool__(self) -> bool:  # anything to report beyond options the caller chose?
        return any(k != SKIPPED for k, _ in self.counts)

    def summary(self) -> dict[str, Any]:
        """JSON-able: ``{"dataset", "records", "strict", "dropped": {reason: n}, "repaired": {...},
        "incomplete": {...}, "skipped": {...}, "examples": {reason: [str]}, "sources": [path]}``."""
        out: dict[str, Any] = {"dataset": self.dataset, "records": self.records, "strict": self.strict}
        for kind in KINDS:
            out[kind] = self.by_kind(kind)
        out["examples"] = {r: list(ex) for r, ex in sorted(self.examples.items())}
        out["sources"] = list(self.sources)
        return out

    def lines(self) -> list[str]:
        """One headline, then one line per (kind, reason) with its count and first example."""
        name = self.dataset or "dataset"
        n = "" if self.records is None else f"{self.records} record{'' if self.records == 1 else 's'} read; "
        if not self.counts:
            return [f"{name}: {n}nothing dropped or repaired"]
        totals = ", ".join(f"{sum(self.by_kind(k).values())} {k}" for k in KINDS if self.by_kind(k))
        out = [f"{name}: {n}{totals}"]
        for (kind, reason), c in sorted(self.counts.items(), key=lambda t: (KINDS.index(t[0][0]), t[0][1])):
            ex = self.examples.get(reason, [])
            out.append(f"  {kind} {c} x {reason}" + (f" (e.g. {ex[0]})" if ex else ""))
        return out

    def log(self, logger: logging.Logger | None = None) -> None:
        logger = logger or log
        level = logging.WARNING if self else logging.INFO
        for line in self.lines():
            logger.log(level, line)

    def __repr__(self) -> str:
        return f"ReadReport({self.dataset!r}, {dict(self.counts)})"


def ensure(report: ReadReport | None, strict: bool, dataset: str) -> tuple[ReadReport, bool]:
    """(the report to fill in, whether the reader made it itself and so should log it at the end)."""
    if report is None:
        return ReadReport(dataset, strict=strict), True
    if strict:
        report.strict = True
    if report.dataset is None:
        report.dataset = dataset
    return report, False


def finish(report: ReadReport, owned: bool, n_records: int) -> None:
    """End of a reader: note the record count; log the report when nobody else will."""
    if owned:
        report.records = n_records
        report.log()


def check_box(box: list[float], width: int | None, height: int | None, report: ReadReport,
              path: str | os.PathLike, where: str, line: int | None = None) -> list[float] | None:
    """`box` [x1, y1, x2, y2] when valid; clipped to the image when partly outside (counted ``box_clipped``);
    None when dropped (``box_not_finite``, ``box_empty``, ``box_outside``). Without a size only x1, y1 < 0
    can be clipped. The same list object comes back when nothing changed."""
    shown = "[" + ", ".join(f"{v:g}" for v in box) + "]"
    if not all(math.isfinite(v) for v in box):
        report.add("box_not_finite", path, where, f"box {shown} has a NaN or infinite coordinate", line=line)
        return None
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        report.add("box_empty", path, where, f"box {shown} has no area", line=line)
        return None
    W = float("inf") if width is None else width
    H = float("inf") if height is None else height
    if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
        report.add("box_outside", path, where, f"box {shown} is entirely outside the {width}x{height} image",
                   line=line)
        return None
    clipped = [max(0.0, x1), max(0.0, y1), min(W, x2), min(H, y2)]
    if clipped == box:
        return box
    clipped = [float(v) for v in clipped]
    report.add("box_clipped", path, where, f"box {shown} clipped to the {width}x{height} image", line=line)
    return clipped
