"""The generator's input vectors, built from region features and the whole-image feature.

Modes (`GenConfig.input`):
    "image"         the whole-image feature                        [D]
    "region"        the region's feature (row 0 = whole image)     [D]
    "region+image"  the region's feature, then the whole image's   [2 D]   (paper: better region captions)
    "regions"       the set of all the image's region features      [N, D]  (row 0 the whole image; attention)

How a full-frame ("image") model sees a region (`region_inputs`, `FULL_FRAME_INPUTS`): "crop" = the region's own
feature, as if the region were an image (the paper's full-frame baseline on regions); "image" = the whole image's.

Dimensions: n regions asked for, R regions of the image, D feature size, Din = D or 2 D.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dvsa.generate.model import INPUTS

FULL_FRAME_INPUTS = ("crop", "image")


def combine(regions: np.ndarray, image: np.ndarray, mode: str) -> np.ndarray:
    """regions float [n, D] and image float [D] (one image for every region) or [n, D] (row by row the image of
    each region) -> float32 [n, Din] in `mode`."""
    if mode not in INPUTS:
        raise ValueError(f"input mode must be one of {INPUTS}, got {mode!r}")
    if mode == "regions":
        raise ValueError("input 'regions' is a set of vectors per image: use region_set / pad_sets")
    regions = np.asarray(regions, np.float32)
    image = np.asarray(image, np.float32)
    per_row = image.ndim == 2 and regions.ndim == 2 and image.shape[0] == len(regions)
    if not per_row:
        image = image.reshape(-1)
    d = image.shape[-1]
    if regions.ndim != 2 or regions.shape[1] != d:
        raise ValueError(f"regions must be [n, {d}], got {list(regions.shape)}")
    images = image if per_row else np.repeat(image[None], len(regions), axis=0)  # [n, D]
    if mode == "image":
        return images.copy() if per_row else images
    if mode == "region":
        return regions.copy()
    return np.concatenate([regions, images], axis=1)


def region_inputs(regions: np.ndarray, image: np.ndarray, mode: str, full_frame_input: str = "crop") -> np.ndarray:
    """Generator inputs of regions: regions float [n, D], image float [D] or [n, D] (see `combine`) ->
    float32 [n, Din].

    "region" and "region+image" models get what they were trained on (`combine`). A full-frame ("image") model
    gets each region's own feature as if the region were an image when full_frame_input="crop", or the whole
    image's feature when "image" (then every region of one image gets the same caption).
    """
    if full_frame_input not in FULL_FRAME_INPUTS:
        raise ValueError(f"full_frame_input must be one of {FULL_FRAME_INPUTS}, got {full_frame_input!r}")
    if mode == "image" and full_frame_input == "crop":
        return np.asarray(regions, np.float32).copy()
    return combine(regions, image, mode)


def input_features(store, image_id: str, region_rows: Sequence[int] | None = None, mode: str = "image") -> np.ndarray:
    """Input vectors of some regions of one image in a `data.features.FeatureStore`.

    region_rows: rows of the image's regions in the store (row 0 is the whole image); None means [0], the
    whole frame. Returns float32 [n, Din] (n = len(region_rows)); in mode "image" every row is the same
    whole-image feature.
    """
    rows = [0] if region_rows is None else [int(r) for r in region_rows]
    _, feats = store.regions(image_id)  # [R, D]
    bad = [r for r in rows if not 0 <= r < len(feats)]
    if bad:
        raise IndexError(f"{store.path}: image {image_id!r} has {len(feats)} regions, asked for rows {bad}")
    return combine(feats[rows], store.image_feature(image_id), mode)


def pad_sets(sets: Sequence[np.ndarray], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Region sets float [n_b, D] -> (feats float32 [B, N, D] zero-padded, mask bool [B, N] True on real rows),
    N = max n_b (or `n`, at least that)."""
    if not len(sets):
        raise ValueError("pad_sets needs at least one set")
    d = np.asarray(sets[0]).shape[-1]
    N = max([len(x) for x in sets] + [int(n or 0)])
    feats = np.zeros((len(sets), N, d), np.float32)
    mask = np.zeros((len(sets), N), bool)
    for b, x in enumerate(sets):
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != d or not len(x):
            raise ValueError(f"region set {b} must be [n >= 1, {d}], got {list(x.shape)}")
        feats[b, : len(x)], mask[b, : len(x)] = x, True
    return feats, mask


def region_sets(store, image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The "regions" input of images: (feats float32 [B, N, D], mask bool [B, N]) of `pad_sets` over the store's
    region rows of every image (row 0 the whole image)."""
    return pad_sets([store.regions(i)[1] for i in image_ids])


def full_frame_features(store, image_ids: Sequence[str], mode: str = "image") -> np.ndarray:
    """float32 [N, Din]: the whole-frame input of each image (region row 0 for the region modes)."""
    dim = store.dim * (2 if mode == "region+image" else 1)
    out = np.zeros((len(image_ids), dim), np.float32)
    for n, image_id in enumerate(image_ids):
        out[n] = input_features(store, image_id, None, mode)[0]
    return out
