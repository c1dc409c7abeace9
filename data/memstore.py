"""`MemoryStore`: the read side of `data.features.FeatureStore` for regions computed in memory (new images the
Python API or the web app encodes), so the functions written for stores (`align.snippets.score_pairs`,
`align.retrieval.score_collection`, `generate.dense.dense_captions`) run on them unchanged."""
from __future__ import annotations

import numpy as np
from dvsa.data.features import pad_regions


class MemoryStore:
    """image id -> (boxes float32 [R, 4], regions float32 [R, D], image feature float32 [D], (w, h))."""

    def __init__(self, dim: int, meta: dict | None = None):
        self.dim = int(dim)
        self.meta = dict(meta or {})
        self.path = "<memory>"
        self._items: dict[str, tuple] = {}

    def add(self, image_id: str, boxes, regions, image_feature, size: tuple[int, int]) -> None:
        self._items[str(image_id)] = (np.asarray(boxes, np.float32).reshape(-1, 4),
                                      np.asarray(regions, np.float32).reshape(-1, self.dim),
                                      np.asarray(image_feature, np.float32).reshape(self.dim),
                                      (int(size[0]), int(size[1])))

    @property
    def ids(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._items

    def _get(self, image_id):
        try:
            return self._items[str(image_id)]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the memory store") from None

    def regions(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        b, f, _, _ = self._get(image_id)
        return b, f

    def image_feature(self, image_id: str) -> np.ndarray:
        return self._get(image_id)[2]

    def image_size(self, image_id: str) -> tuple[int, int]:
        return self._get(image_id)[3]

    def padded(self, ids: list[str], max_regions: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """features float32 [B, R, D], boxes float32 [B, R, 4], mask bool [B, R], as `FeatureStore.padded`."""
        return pad_regions([self.regions(i) for i in ids], self.dim, max_regions)

    def failed(self) -> list[dict]:
        return []
