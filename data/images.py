"""Images as the Python API and the web app receive them: a path, a PIL image, a numpy array (H x W x 3 uint8,
H x W grayscale, or H x W x 4 RGBA) or raw bytes (an upload) -> an 8-bit RGB `PIL.Image`, or a `DvsaError`.

Decoding, mode conversion and the decompression-bomb check are `align.regions.images` (`load_rgb`, `to_rgb`);
this module only turns their `ImageError` into the `DvsaError` family (`ImageInputError`, and `TooManyPixels`
for an image over the pixel limit, checked from the header before any pixel is decoded).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from dvsa.align.regions.images import ImageError, load_rgb, to_rgb
from dvsa.data.errors import DataError
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit


class ImageInputError(DataError):
    """An image the API cannot use (not an image, corrupt, wrong array shape): names it and says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(name, reason)
        self.reason = reason


class TooManyPixels(ImageInputError):
    """An image with more pixels than the limit (width x height > max_pixels)."""


def image_name(image, index: int = 0) -> str:
    """A short name for messages and result ids: a path's stem, else ``image<index>``."""
    if isinstance(image, (str, os.PathLike)):
        return Path(image).stem
    return getattr(image, "filename", None) and Path(image.filename).stem or f"image{index}"


def as_rgb(image, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """An 8-bit RGB PIL image from a path, PIL image, numpy array or bytes; `ImageInputError` when impossible."""
    label = name or (str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__)
    try:
        if isinstance(image, (str, os.PathLike)):
            return load_rgb(str(image), max_pixels=max_pixels)
        if isinstance(image, (bytes, bytearray, memoryview)):
            if not len(image):
                raise ImageInputError(label, "empty file (0 bytes)")
            return _from_bytes(bytes(image), label, max_pixels)
        if isinstance(image, Image.Image):
            _check_pixels(label, *image.size, max_pixels)
            return to_rgb(image).copy() if image.mode == "RGB" else to_rgb(image)
        if isinstance(image, np.ndarray):
            return _from_array(image, label, max_pixels)
    except ImageError as e:
        cls = TooManyPixels if e.reason.startswith("too large") else ImageInputError
        raise cls(label, e.reason) from None
    raise ImageInputError(label, f"not an image: expected a path, PIL image or numpy array, got {type(image).__name__}")


def _check_pixels(label: str, w: int, h: int, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ImageInputError(label, f"empty image {w}x{h}")
    if w * h > max_pixels:
        raise TooManyPixels(label, f"too large: {w}x{h} = {w * h} pixels > max_pixels {max_pixels}")


def _from_array(a: np.ndarray, label: str, max_pixels: int) -> Image.Image:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageInputError(label, f"an image array must be H x W, H x W x 3 or H x W x 4, got shape {list(a.shape)}")
    _check_pixels(label, a.shape[1], a.shape[0], max_pixels)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(np.asarray(a, np.float64)), 0, 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return to_rgb(Image.fromarray(np.ascontiguousarray(a)))


def _from_bytes(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """An upload: the size is checked from the header before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise TooManyPixels(label, f"too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageInputError(label, "not an image Pillow can identify (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(label, f"cannot open: {type(e).__name__}: {e}") from None
    with im:
        _check_pixels(label, *im.size, max_pixels)
        try:
            im.load()
            return to_rgb(im).copy()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageInputError(label, f"corrupt or truncated: {type(e).__name__}: {e}") from None
