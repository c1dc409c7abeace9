"""The ecosystem's result formats: COCO caption results and DenseCap's ``results.json``.

Captions (``dvsa caption``, ``dvsa generate eval``) are written in the COCO results format, the list that
`pycocotools.coco.COCO.loadRes` and `pycocoevalcap.eval.COCOEvalCap` read unchanged::

    [{"image_id": 391895, "caption": "a man riding a bike"}, ...]

``image_id`` is the COCO integer id of an image from COCO (its file name carries it: ``000000391895.jpg``,
``COCO_val2014_000000391895.jpg``), or an integer where the image's key is one (``"42"``, ``42.jpg``), and
otherwise the file name without extension (``"1000268201_693b08cb0e"``) or the dataset's id as it is
(`coco_image_id`, `result_image_id`). With ``extras`` each entry also carries the per-image keys of the
captioner (``file_name``, ``path``, ``logprob``, ``score``, ``candidates``, and ``consensus`` where the beam was re-ranked);
loadRes keeps extra keys.

Dense captions (``dvsa dense``, the pipeline's ``dense/captions.json``) are written in DenseCap's
``results.json`` layout (jcjohnson/densecap, run_model.lua)::

    {"results": [{"img_name": "a.jpg", "boxes": [[x, y, w, h], ...], "captions": [str, ...],
                  "scores": [float, ...]}, ...],
     "opt": {...the settings...}}

boxes in the original image's pixels, x, y the top-left corner; one caption and one score per box, best score
first. ``opt`` holds the settings (checkpoint, beam, max_len, top = the number of boxes, nms_iou, box_weight,
...) and two lists parallel to ``results`` that DenseCap's readers ignore: ``image_info`` ({"image_id", "path",
"width", "height"} of each result) and ``failed`` (images skipped, {"image_id", "path", "reason"}).
`to_densecap_results` builds it from `generate.dense.dense_captions`' results (boxes x1, y1, x2, y2),
`from_densecap_results` / `read_densecap_results` give those results back (box, caption, score per region).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from dvsa.data.errors import DataError
from dvsa.data.io import atomic_write_json
from PIL import Image

# COCO file names: 2017 ("000000391895.jpg") and 2014 ("COCO_val2014_000000391895.jpg"); the id is the 12 digits
_COCO_NAME = re.compile(r"^(?:COCO_[A-Za-z]+\d{4}_)?(\d{12})$")
DENSECAP_RESULT_KEYS = ("img_name", "boxes", "captions", "scores")


# ------------------------------------------------------------------------------------------------ COCO captions
def result_image_id(key) -> int | str:
    """The COCO results ``image_id`` of an image key (a dataset id or a file stem): an int stays an int; a COCO
    file stem (``000000391895``, ``COCO_val2014_000000391895``) gives its id (391895); a canonical decimal
    string (``"42"``) gives the int; anything else is returned as a string, unchanged."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    s = str(key)
    m = _COCO_NAME.match(s)
    if m:
        return int(m.group(1))
    if s.isdigit() and str(int(s)) == s:
        return int(s)
    return s


def coco_image_id(path: str | os.PathLike) -> int | str:
    """The COCO results ``image_id`` of an image file: `result_image_id` of its name without extension
    (``photos/COCO_val2014_000000391895.jpg`` -> 391895, ``dog.png`` -> ``"dog"``)."""
    return result_image_id(Path(path).stem)


def to_coco_results(captions, extras: bool = False) -> list[dict]:
    """COCO results list [{"image_id", "caption"}] of captions, in their order.

    captions: {image key: caption} (keys through `result_image_id`), or a list of dicts with "image_id" and
    "caption" (e.g. `generate.captioning.caption_images`). `extras`: keep every other key of such a dict in its
    entry (loadRes ignores them). ValueError when two captions get the same image_id (a results file holds one
    caption per image).
    """
    if isinstance(captions, Mapping):
        items = [{"image_id": k, "caption": v} for k, v in captions.items()]
    else:
        items = list(captions)
    out, seen = [], set()
    for d in items:
        iid = result_image_id(d["image_id"])
        if iid in seen:
            raise ValueError(f"two captions for image_id {iid!r}: a COCO results file holds one per image")
        seen.add(iid)
        if not isinstance(d["caption"], str):
            raise TypeError(f"image_id {iid!r}: a caption must be a string, got {type(d['caption']).__name__}")
        entry = {"image_id": iid, "caption": d["caption"]}
        if extras:
            entry.update({k: v for k, v in d.items() if k not in entry})
        out.append(entry)
    return out


def write_coco_results(path: str | os.PathLike, captions, extras: bool = False, indent: int | None = None) -> Path:
    """Write `to_coco_results(captions, extras)` as JSON to `path` (atomically); returns the path."""
    return atomic_write_json(path, to_coco_results(captions, extras), indent=indent)


def _load_json(path: str | os.PathLike):
    """The parsed JSON file at `path`; DataError naming it when it cannot be read or is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"not JSON: {e}", line=e.lineno) from None


def read_coco_results(path: str | os.PathLike) -> list[dict]:
    """The entries of a COCO results file (as written: extra keys kept), checked: a list of objects each with an
    int or str "image_id" and a str "caption", no image twice. DataError naming the file otherwise.
    ``{e["image_id"]: e["caption"] for e in read_coco_results(p)}`` is the dict `caption_metrics` takes."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"a COCO results file is a JSON list of {{image_id, caption}}, got a "
                              f"{type(data).__name__}")
    seen = set()
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("caption"), str) \
                or not isinstance(d.get("image_id"), (int, str)) or isinstance(d.get("image_id"), bool):
            raise DataError(path, f"entry {i}: wants {{\"image_id\": int | str, \"caption\": str}}, got {d!r:.120}")
        if d["image_id"] in seen:
            raise DataError(path, f"entry {i}: image_id {d['image_id']!r} appears twice")
        seen.add(d["image_id"])
    return data


# ------------------------------------------------------------------------------------------------ DenseCap
def xyxy_to_xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def xywh_to_xyxy(box) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def _img_name(res: dict) -> str:
    path = res.get("path")
    return Path(str(path)).name if path else str(res["image_id"])


def to_densecap_results(results: Iterable[dict], opt: dict | None = None, failed: list[dict] | None = None
                        ) -> dict:
    """DenseCap's results.json document (module doc) of `generate.dense.dense_captions` results: per image
    {"img_name": file name, "boxes": [[x, y, w, h]], "captions", "scores"} in the results' region order; `opt`
    (the settings, copied) gets "image_info" and "failed" (default [])."""
    results = list(results)
    out = []
    for r in results:
        regs = r["regions"]
        out.append({"img_name": _img_name(r), "boxes": [xyxy_to_xywh(d["box"]) for d in regs],
                    "captions": [str(d["caption"]) for d in regs], "scores": [float(d["score"]) for d in regs]})
    info = [{"image_id": str(r["image_id"]), "path": None if r.get("path") is None else str(r["path"]),
             "width": int(r["width"]), "height": int(r["height"])} for r in results]
    return {"results": out, "opt": {**(opt or {}), "image_info": info, "failed": list(failed or [])}}


def write_densecap_results(path: str | os.PathLike, results: Iterable[dict], opt: dict | None = None,
                           failed: list[dict] | None = None) -> Path:
    """Write `to_densecap_results(...)` to `path` (atomically); returns the path."""
    return atomic_write_json(path, to_densecap_results(results, opt, failed))


def _size(path: str | None, boxes: list[list[float]]) -> tuple[int, int]:
    """(width, height) of the image file, else the extent of its boxes (at least 1 x 1)."""
    extent = (max([1] + [round(b[2]) for b in boxes]), max([1] + [round(b[3]) for b in boxes]))
    if not path:
        return extent
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):  # an unreadable picture: the boxes still say how large it was at least
        return extent


def from_densecap_results(doc, image_dir: str | os.PathLike | None = None, where: str = "results") -> list[dict]:
    """Per-image results of a DenseCap results document, as `generate.dense.dense_captions` gives them:
    [{"image_id", "path", "width", "height", "regions": [{"box": [x1, y1, x2, y2], "caption", "score"}]}].

    image id, path and size come from ``opt.image_info`` where dvsa wrote it; otherwise (a file from DenseCap
    itself) the id is the img_name without extension, the path ``image_dir / img_name`` (None without
    `image_dir`) and the size that of the image file (or the extent of the boxes). A list (the layout of runs
    before the DenseCap format) is returned as it is. DataError (naming `where`) on anything else."""
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise DataError(where, 'not a DenseCap results document: wants {"results": [...], "opt": {...}}')
    opt = doc.get("opt") or {}
    info = opt.get("image_info") if isinstance(opt.get("image_info"), list) else []
    if info and len(info) != len(doc["results"]):
        raise DataError(where, f"opt.image_info lists {len(info)} images, results {len(doc['results'])}")
    out = []
    for i, r in enumerate(doc["results"]):
        try:
            n = len(r["boxes"])
            if not (len(r["captions"]) == len(r["scores"]) == n):
                raise ValueError(f"{n} boxes, {len(r['captions'])} captions, {len(r['scores'])} scores")
            boxes = [xywh_to_xyxy(b) for b in r["boxes"]]
            name = str(r["img_name"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(where, f"results[{i}]: {type(e).__name__}: {e}") from None
        meta = info[i] if info else {}
        path = meta.get("path") if info else (str(Path(image_dir) / name) if image_dir is not None else None)
        if "width" in meta and "height" in meta:
            w, h = int(meta["width"]), int(meta["height"])
        else:
            w, h = _size(path, boxes)
        out.append({"image_id": str(meta.get("image_id", Path(name).stem)), "path": path, "width": w, "height": h,
                    "regions": [{"box": b, "caption": str(c), "score": float(s)}
                                for b, c, s in zip(boxes, r["captions"], r["scores"])]})
    return out


def read_densecap_results(path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> list[dict]:
    """`from_densecap_results` of the JSON file at `path`; a DenseCap file's images are looked for in
    `image_dir` (default: the file's folder). DataError naming the file when it is not readable."""
    return from_densecap_results(_load_json(path), Path(path).parent if image_dir is None else image_dir, where=str(path))
