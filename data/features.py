"""On-disk feature store shared by both stages: per-image boxes, per-region features, whole-image features.

Layout of a store folder::

    meta.json                  {"format": 1, "dim": D, "dtype": "float32"|"float16", ...producer info}
    part-<tag>/                one committed chunk of images (written to a temp folder, then renamed)
        index.json             {"ids": [...], "offsets": [...], "counts": [...], "sizes": [[w, h], ...]}
        boxes.npy              float32 [Rtot, 4]   [x1, y1, x2, y2] pixels of the original image
        regions.npy            dtype   [Rtot, D]   region features, rows offsets[i] : offsets[i] + counts[i]
        images.npy             dtype   [N, D]      whole-image features
    failed.jsonl               {"id", "path", "reason"} per image that could not be read

Row 0 of every image's regions is the whole image (box [0, 0, w, h]); detections follow, best first.
A part is committed by an atomic rename, so an interrupted writer leaves only whole parts behind and a new
writer on the same folder skips the images they hold (resume). Readers memory-map every part.

Dimensions: N images, R regions of one image, D feature size.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from dvsa.data.io import atomic_write_json, atomic_write_text, commit_dir, output_error

FORMAT = 1


def pad_regions(per: list[tuple[np.ndarray, np.ndarray]], dim: int, max_regions: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images' (boxes [R_i, 4], features [R_i, D]) padded to one batch: features float32 [B, R, D], boxes float32
    [B, R, 4], mask bool [B, R] (True = real); R = the most regions, at most `max_regions`."""
    r = max(len(b) for b, _ in per)
    if max_regions is not None:
        r = min(r, max_regions)
    feats = np.zeros((len(per), r, dim), np.float32)
    boxes = np.zeros((len(per), r, 4), np.float32)
    mask = np.zeros((len(per), r), bool)
    for n, (b, f) in enumerate(per):
        k = min(len(b), r)
        feats[n, :k], boxes[n, :k], mask[n, :k] = f[:k], b[:k], True
    return feats, boxes, mask


class FeatureStore:
    """Read-only view of a store folder (memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a feature store (no meta.json)")
        self.meta: dict = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: unsupported feature store format {self.meta.get('format')}")
        self.dim: int = int(self.meta["dim"])
        self._where: dict[str, tuple[int, int]] = {}  # id -> (part number, position in part)
        self._parts: list[dict] = []
        for part in sorted(p for p in self.path.glob("part-*") if p.is_dir()):
            idx = json.loads((part / "index.json").read_text())
            k = len(self._parts)
            self._parts.append(
                {
                    "index": idx,
                    "boxes": np.load(part / "boxes.npy", mmap_mode="r"),
                    "regions": np.load(part / "regions.npy", mmap_mode="r"),
                    "images": np.load(part / "images.npy", mmap_mode="r"),
                }
            )
            for j, image_id in enumerate(idx["ids"]):
                self._where[str(image_id)] = (k, j)
        self.ids: list[str] = list(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, image_id: str) -> bool:
        return str(image_id) in self._where

    def _locate(self, image_id: str) -> tuple[dict, int]:
        try:
            k, j = self._where[str(image_id)]
        except KeyError:
            raise KeyError(f"{self.path}: image {image_id!r} is not in the feature store") from None
        return self._parts[k], j

    def regions(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(boxes float32 [R, 4], features float32 [R, D]) of one image; row 0 is the whole image."""
        part, j = self._locate(image_id)
        o, c = part["index"]["offsets"][j], part["index"]["counts"][j]
        return np.asarray(part["boxes"][o : o + c], dtype=np.float32), np.asarray(
            part["regions"][o : o + c], dtype=np.float32
        )

    def image_feature(self, image_id: str) -> np.ndarray:
        """float32 [D]: the whole-image feature."""
        part, j = self._locate(image_id)
        return np.asarray(part["images"][j], dtype=np.float32)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(width, height) in pixels of the original image."""
        part, j = self._locate(image_id)
        w, h = part["index"]["sizes"][j]
        return int(w), int(h)

    def padded(self, ids: list[str], max_regions: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch of images: features float32 [B, R, D], boxes float32 [B, R, 4], mask bool [B, R] (True = real)."""
        return pad_regions([self.regions(i) for i in ids], self.dim, max_regions)

    def failed(self) -> list[dict]:
        p = self.path / "failed.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def prune_failed(path: str | os.PathLike) -> list[str]:
    """Rewrite ``failed.jsonl`` of the store at `path` (atomically) without the images the store now holds (read
    on a retry) and without repeated ids; returns the ids removed because they are stored now."""
    store = FeatureStore(path)
    failed = store.failed()
    stored = set(store.ids)
    keep, seen = [], set()
    for d in failed:
        if d["id"] not in stored and d["id"] not in seen:
            seen.add(d["id"])
            keep.append(d)
    recovered = sorted({d["id"] for d in failed if d["id"] in stored})
    if len(keep) != len(failed):
        atomic_write_text(store.path / "failed.jsonl", "".join(json.dumps(d) + "\n" for d in keep))
    return recovered


class FeatureStoreWriter:
    """Append images to a store folder in atomically committed parts; resumes where an earlier writer stopped.

    `meta` must match the meta of an existing store (same dim, dtype and producer settings), otherwise the
    writer refuses to mix features. `tag` distinguishes concurrent writers (e.g. one per torchrun rank).
    """

    def __init__(self, path: str | os.PathLike, meta: dict, part_size: int = 256, tag: str = "0"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, **meta}
        meta["dtype"] = np.dtype(meta.get("dtype", "float32")).name
        # compared with meta.json, so take the values as JSON gives them back (a tuple reads back as a list)
        self.meta = json.loads(json.dumps(meta))
        self.dtype = np.dtype(self.meta["dtype"])
        meta_path = self.path / "meta.json"
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            if old != self.meta:
                raise ValueError(
                    f"{meta_path}: the store was made with other settings {old}; use another folder or the same settings"
                )
        else:
            atomic_write_json(meta_path, self.meta, indent=None)
        # leftovers of a killed writer with this tag (another tag's may be a live writer's part in progress)
        for tmp in self.path.glob(f".tmp-part-{tag}-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        self.part_size = part_size
        self.tag = tag
        self._done = set(FeatureStore(self.path).ids)
        self._failed = {d["id"] for d in FeatureStore(self.path).failed()}
        self._buf: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]] = []

    def done(self, image_id: str) -> bool:
        """True when the image is already in a committed part, or is being buffered now."""
        return str(image_id) in self._done

    def add(self, image_id: str, boxes, regions, image_feature, size: tuple[int, int]) -> None:
        """boxes [R, 4], regions [R, D], image_feature [D], size (w, h). Commits a part every `part_size` images."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        regions = np.asarray(regions, np.float32)
        image_feature = np.asarray(image_feature, np.float32).reshape(-1)
        if regions.shape != (len(boxes), self.meta["dim"]) or image_feature.shape != (self.meta["dim"],):
            raise ValueError(
                f"image {image_id}: expected regions [{len(boxes)}, {self.meta['dim']}] and image [{self.meta['dim']}],"
                f" got {list(regions.shape)} and {list(image_feature.shape)}"
            )
        self._buf.append((str(image_id), boxes, regions, image_feature, (int(size[0]), int(size[1]))))
        self._done.add(str(image_id))
        if len(self._buf) >= self.part_size:
            self.flush()

    def fail(self, image_id: str, path: str, reason: str) -> None:
        """Record an image that could not be processed (reported in failed.jsonl, never silently dropped)."""
        if str(image_id) in self._failed:
            return
        self._failed.add(str(image_id))
        try:
            with open(self.path / "failed.jsonl", "a") as f:
                f.write(json.dumps({"id": str(image_id), "path": str(path), "reason": reason}) + "\n")
        except OSError as e:
            raise output_error(self.path / "failed.jsonl", e) from None

    def flush(self) -> None:
        """Commit the buffered images as one part (atomic rename)."""
        if not self._buf:
            return
        name = f"part-{self.tag}-{uuid.uuid4().hex[:12]}"
        tmp = self.path / f".tmp-{name}"
        tmp.mkdir()
        counts = [len(b) for _, b, _, _, _ in self._buf]
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        np.save(tmp / "boxes.npy", np.concatenate([b for _, b, _, _, _ in self._buf]).astype(np.float32))
        np.save(tmp / "regions.npy", np.concatenate([r for _, _, r, _, _ in self._buf]).astype(self.dtype))
        np.save(tmp / "images.npy", np.stack([f for _, _, _, f, _ in self._buf]).astype(self.dtype))
        index = {
            "ids": [i for i, *_ in self._buf],
            "offsets": offsets,
            "counts": counts,
            "sizes": [list(s) for *_, s in self._buf],
        }
        (tmp / "index.json").write_text(json.dumps(index))
        commit_dir(tmp, self.path / name)
        self._buf = []

    def close(self) -> None:
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
