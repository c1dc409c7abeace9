"""Robust image loading: any file Pillow reads becomes an 8-bit RGB image, or an `ImageError` saying why not.

Converted: grayscale (L, 1), palette (P), CMYK, YCbCr, 16-bit (I;16*, I) and float (F) images, and images with
an alpha channel (LA, PA, RGBA, P with transparency; composited on white). Refused with an `ImageError`: files
that are not images, truncated or corrupt files, and images larger than `max_pixels` (decompression bombs),
which are checked from the header before any pixel is decoded.

Pixels are kept as stored: EXIF orientation is NOT applied, so boxes stay in the coordinates of the stored
pixel grid (the convention of COCO's annotations and of every reader's width/height).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(Exception):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB copy of any Pillow image (see the module docstring for what is converted and how)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            a = a / 257.0
        elif mode == "I" and a.max(initial=0) > 255:
            a = a / (257.0 if a.max() <= 65535 else a.max() / 255.0)
        elif mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        gray = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _holds_text(path: str) -> bool:
    """True when the file's first bytes read as text (a caption file or HTML page saved under an image name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text)


def load_rgb(path: str, max_pixels: int = 89_478_485) -> Image.Image:
    """Decode `path` fully into an 8-bit RGB `PIL.Image`, or raise `ImageError` (empty, not an image, corrupt,
    truncated, too large)."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageError(path, "empty file (0 bytes)")
    except OSError:
        pass  # missing or unreadable: Image.open says which
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"too large to decode safely ({e})") from None
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except UnidentifiedImageError:
        if _holds_text(path):
            raise ImageError(path, "not an image: the file holds text") from None
        raise ImageError(path, "not an image Pillow can identify (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"cannot open: {type(e).__name__}: {e}") from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageError(path, f"empty image {w}x{h}")
        if w * h > max_pixels:
            raise ImageError(path, f"too large: {w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(path, f"corrupt or truncated: {type(e).__name__}: {e}") from None
        try:
            return to_rgb(im).copy()
        except (OSError, ValueError) as e:
            raise ImageError(path, f"cannot convert mode {im.mode} to RGB: {e}") from None
