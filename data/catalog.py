"""A catalog of dataset readers by name. Every reader returns ``list[ImageRecord]``.

    from dvsa.data.catalog import load_dataset
    records = load_dataset("flickr8k", root="../shared/datasets/flickr8k")

Readers register themselves with ``@register("name")``; `load_dataset` imports the reader modules lazily.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

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


def load_dataset(name: str, root: str, **kwargs) -> list[ImageRecord]:
    return get_reader(name)(root, **kwargs)
