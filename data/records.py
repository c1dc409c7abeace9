"""The one record type every reader returns.

An `ImageRecord` is an image (id, path, pixel size), its sentences, its split, and optional region
annotations. Boxes are always ``[x1, y1, x2, y2]`` in pixels of the original image (floats, x2 > x1).
Records are plain dataclasses that round-trip through JSON (`to_dict` / `from_dict`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dvsa.data.errors import DataError  # noqa: F401 (re-exported: its historical home)

SPLITS = ("train", "val", "test", "restval")


@dataclass
class Sentence:
    """One sentence: `raw` text as given, `tokens` as produced by `data.text.tokenize`, a dataset-wide `id`."""

    id: int
    raw: str
    tokens: list[str]


@dataclass
class Region:
    """An annotated region: a box in pixels, an optional description, an optional category / entity id."""

    box: list[float]  # [x1, y1, x2, y2]
    text: str | None = None
    label: str | None = None  # category name (COCO), entity type (Flickr30k Entities), object kind (synthetic)
    id: str | None = None  # e.g. Flickr30k Entities entity id, synthetic object index
    # area of the box in the pixels of the original annotation, when the box was rescaled to the image on disk
    # (Flickr8k + Entities); None when `box` is in the annotation's pixels
    source_area: float | None = None


@dataclass
class Phrase:
    """A phrase of a sentence linked to region(s): ground truth for word-to-region alignment.

    `start`/`end` index `Sentence.tokens` (end exclusive); `region_ids` name `Region.id`s of the same image;
    `types` are the phrase's categories where the dataset has them (Flickr30k Entities types, a COCO category).
    """

    sentence_id: int
    start: int
    end: int
    text: str
    region_ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)  # e.g. Flickr30k Entities types ("people", "scene"), COCO category


@dataclass
class ImageRecord:
    id: str  # stable string id (file stem for Flickr, str(cocoid) for COCO)
    path: str  # absolute or root-relative path to the image file
    width: int | None = None  # pixels; None when the reader did not open the file
    height: int | None = None
    split: str = "train"  # one of SPLITS, or "none" for inference-only folders
    sentences: list[Sentence] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    phrases: list[Phrase] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageRecord":
        return cls(
            id=str(d["id"]),
            path=d["path"],
            width=d.get("width"),
            height=d.get("height"),
            split=d.get("split", "train"),
            sentences=[Sentence(**s) for s in d.get("sentences", [])],
            regions=[Region(**r) for r in d.get("regions", [])],
            phrases=[Phrase(**p) for p in d.get("phrases", [])],
        )


def select_split(records: list[ImageRecord], split: str) -> list[ImageRecord]:
    """Records of one split. "train" also takes Karpathy's "restval"; "dev" is a synonym of "val".

    Raises DataError when the split is empty, so an empty split never passes silently.
    """
    want = {"train": {"train", "restval"}, "dev": {"val"}, "val": {"val"}}.get(split, {split})
    out = [r for r in records if r.split in want]
    if not out:
        have = sorted({r.split for r in records})
        raise DataError("<records>", f"split {split!r} is empty (splits present: {have})")
    return out
