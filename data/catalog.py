"""A catalog of dataset readers by name. Every reader returns ``list[ImageRecord]``.

    from dvsa.data.catalog import load_dataset
    records = load_dataset("flickr8k", root="../shared/datasets/flickr8k")

Readers register themselves with ``@register("name")``; `load_dataset` imports the reader modules lazily.

What a reader dropped or repaired (empty sentences, NaN / empty / off-image boxes, duplicate ids, missing
images, ...) is counted by reason in a `readers.report.ReadReport`, logged to the ``dvsa.data`` logger, and
kept for the caller:

    report = ReadReport()                      # or: load_dataset(...); report = last_report()
    records = load_dataset("coco", root, report=report)
    summary["data"] = report.summary()         # JSON-able counts by reason, with examples

``strict=True`` raises `DataError` (file, record, reason) on the first problem instead.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from .readers.report import ReadReport
from .records import ImageRecord

_READERS: dict[str, Callable[..., list[ImageRecord]]] = {}

# name -> module that defines it (imported on first use, so a missing optional dependency stays local)
_MODULES = {
    "flickr8k": "dvsa.data.readers.flickr",
    "flickr30k": "dvsa.data.readers.flickr",
    "karpathy": "dvsa.data.readers.karpathy",
    "coco": "dvsa.data.readers.coco",
    "folder": "dvsa.data.readers.folder",
    "visual_genome": "dvsa.data.readers.visual_genome",
    "flickr30k_entities": "dvsa.data.readers.flickr30k_entities",
    "synthetic": "dvsa.data.readers.synthetic",
}


def register(name: str):
    def deco(fn):
        _READERS[name] = fn
        return fn

    return deco


def available() -> list[str]:
    return sorted(_MODULES)


def get_reader(name: str) -> Callable[..., list[ImageRecord]]:
    if name not in _READERS:
        if name not in _MODULES:
            raise KeyError(f"unknown dataset {name!r}; known: {', '.join(available())}")
        importlib.import_module(_MODULES[name])
    return _READERS[name]


_LAST: list[ReadReport | None] = [None]


def load_dataset(name: str, root: str, *, strict: bool = False, report: ReadReport | None = None,
                 **kwargs) -> list[ImageRecord]:
    """The records of dataset `name` at `root` (reader options in `kwargs`).

    `report` (optional) is filled in with what the reader dropped / repaired, by reason; either way the
    report is logged to the ``dvsa.data`` logger and returned by `last_report()`. `strict` makes the first
    such problem a `DataError`.
    """
    report = report if report is not None else ReadReport(name, strict=strict)
    report.strict = report.strict or strict
    if report.dataset is None:
        report.dataset = name
    _LAST[0] = report
    records = get_reader(name)(root, report=report, **kwargs)
    report.records = len(records)
    report.log()
    return records


def last_report() -> ReadReport | None:
    """The report of the latest `load_dataset` call (None before the first)."""
    return _LAST[0]
