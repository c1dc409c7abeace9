"""Reader `synthetic`: the folder written by `data.synthetic.write_synthetic` (or ``dvsa synth``).

    records = load_dataset("synthetic", "runs/synth")            # all splits
    records = load_dataset("synthetic", "runs/synth", split="val")

Each record's `regions` are the scene's objects (``id`` = object index as str, ``box`` [x1, y1, x2, y2] px,
``text`` = canonical description such as "a small red circle", ``label`` = shape), mentioned or not; grey
distractor blobs are not regions. `phrases` link token spans of the sentences to the object they name.
Sentences and splits come from ``dataset_synthetic.json`` (Karpathy format), everything else from
``groundtruth.json``; an image missing from either file is an error naming the file. The data is generated,
so it is checked rather than repaired: a duplicate sentence id, an empty sentence or a NaN / empty /
off-image box raises DataError in strict mode and is counted in `report` (and dropped) otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..catalog import register
from ..records import DataError, ImageRecord, Phrase, Region, Sentence, select_split
from ..text import tokenize
from .report import ReadReport, check_box, ensure, finish

DATASET_JSON = "dataset_synthetic.json"
GROUNDTRUTH_JSON = "groundtruth.json"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "file not found (write the dataset with `dvsa synth --out DIR`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg}, column {e.colno})", e.lineno) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 ({e.reason})") from None


def _field(d: Any, key: str, path: Path, what: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise DataError(path, f"{what}: missing field {key!r}")
    return d[key]


@register("synthetic")
def read_synthetic(root: str, split: str | None = None, strict: bool = False,
                   report: ReadReport | None = None) -> list[ImageRecord]:
    """All images of the synthetic dataset at `root` (or only `split`, see `data.records.select_split`)."""
    report, owned = ensure(report, strict, "synthetic")
    root_p = Path(root)
    ds_path, gt_path = root_p / DATASET_JSON, root_p / GROUNDTRUTH_JSON
    ds, gt = _read_json(ds_path), _read_json(gt_path)
    report.source(ds_path)
    report.source(gt_path)
    seen_sids: set[int] = set()
    gt_images = _field(gt, "images", gt_path, "top level")
    records = []
    for entry in _field(ds, "images", ds_path, "top level"):
        filename = _field(entry, "filename", ds_path, "image entry")
        image_id = Path(filename).stem
        what = f"image {image_id}"
        if image_id not in gt_images:
            raise DataError(gt_path, f"{what} of {DATASET_JSON} has no ground truth")
        g = gt_images[image_id]
        sentences = []
        for s in _field(entry, "sentences", ds_path, what):
            raw = _field(s, "raw", ds_path, what)
            sentences.append(Sentence(int(_field(s, "sentid", ds_path, what)), raw, tokenize(raw)))
        width, height = int(g["width"]), int(g["height"])
        objects = _field(g, "objects", gt_path, what)
        regions = []
        for o in objects:
            box = check_box([float(v) for v in o["box"]], width, height, report, gt_path,
                            f"{what}, object {o['id']}")
            if box is not None:
                regions.append(Region(box=box, text=o["description"], label=o["shape"], id=str(o["id"])))
        ids = {r.id for r in regions}
        gt_sents = _field(g, "sentences", gt_path, what)
        if [s["sentid"] for s in gt_sents] != [s.id for s in sentences]:
            raise DataError(gt_path, f"{what}: sentence ids differ from {DATASET_JSON}")
        keep = []
        for s, gs in zip(sentences, gt_sents):
            if not s.tokens:
                report.add("empty_sentence", ds_path, f"{what}, sentence {s.id}", f"sentence {s.raw!r} has no word")
            elif s.id in seen_sids:
                report.add("duplicate_sentence_id", ds_path, f"{what}, sentence {s.id}",
                           f"sentence id {s.id} used twice (dropped)", kind="dropped")
            else:
                seen_sids.add(s.id)
                keep.append((s, gs))
        sentences = [s for s, _ in keep]
        phrases = []
        for s, gs in keep:
            for p in gs["phrases"]:
                start, end, obj = int(p["start"]), int(p["end"]), str(p["object"])
                if obj not in ids and any(str(o["id"]) == obj for o in objects):
                    continue  # its box was dropped above (counted there)
                if not 0 <= start < end <= len(s.tokens) or obj not in ids:
                    raise DataError(gt_path, f"{what}, sentence {s.id}: bad phrase {p}")
                phrases.append(Phrase(s.id, start, end, " ".join(s.tokens[start:end]), [obj]))
        records.append(ImageRecord(
            id=image_id,
            path=str((root_p / entry.get("filepath", "images") / filename).absolute()),
            width=width,
            height=height,
            split=_field(entry, "split", ds_path, what),
            sentences=sentences,
            regions=regions,
            phrases=phrases,
        ))
    out = select_split(records, split) if split else records
    finish(report, owned, len(out))
    return out
