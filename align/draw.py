"""Alignment pictures with PIL: the image with each aligned region's box in a colour, and below it the
sentence(s) with each snippet highlighted in its region's colour and followed by its score (the paper's figure
of alignments).

Pure drawing: inputs are an image, tokens and snippet dicts in the Snippets format of `align.snippets`
(``start``, ``end``, ``region``, ``box`` [x1, y1, x2, y2] in pixels of the original image, ``score``).
A region keeps one colour across all sentences drawn with the same image (colour = f(region row)).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# distinct, saturated colours; row 0 (the whole image) is drawn in grey
PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
    (240, 50, 230), (170, 110, 40), (128, 128, 0), (0, 0, 128), (255, 200, 25), (128, 0, 0),
]
WHOLE_IMAGE = (110, 110, 110)


def region_color(row: int) -> tuple[int, int, int]:
    """Colour of region row `row` (0 = whole image: grey)."""
    return WHOLE_IMAGE if row == 0 else PALETTE[(row - 1) % len(PALETTE)]


def text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `bg`."""
    r, g, b = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> tuple[Image.Image, bool]:
    """(RGB image, True), or a grey placeholder of `size` (default 224 x 224) and False when the file cannot be
    read (warned, naming the file): one bad image never stops a page."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), True
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: cannot read image ({e}); drawing a placeholder", stacklevel=2)
        w, h = size or (224, 224)
        return Image.new("RGB", (int(w), int(h)), (200, 200, 200)), False


def draw_boxes(image: Image.Image, regions: dict[int, tuple[list[float], str]], orig_size: tuple[int, int] | None = None,
               width: int = 448, line: int = 3, font_size: int = 13) -> Image.Image:
    """The image scaled to `width` px with each region's box and a tag.

    regions: row -> (box [x1, y1, x2, y2] in pixels of the original image, tag text); orig_size (w, h) of the
    original image (default: the image's own size; boxes are scaled from it). Larger boxes are drawn first so
    small ones stay visible.
    """
    ow, oh = orig_size or image.size
    scale = width / image.width
    im = image.resize((width, max(1, round(image.height * scale))), Image.BICUBIC)
    sx, sy = im.width / ow, im.height / oh
    d = ImageDraw.Draw(im)
    f = font(font_size)
    order = sorted(regions, key=lambda r: -(regions[r][0][2] - regions[r][0][0]) * (regions[r][0][3] - regions[r][0][1]))
    for row in order:
        box, tag = regions[row]
        x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        x1, y1 = max(0.0, x1), max(0.0, y1)
        x2, y2 = min(im.width - 1.0, x2 - 1), min(im.height - 1.0, y2 - 1)
        c = region_color(row)
        d.rectangle([x1, y1, x2, y2], outline=c, width=line)
        if tag:
            tag = tag if len(tag) <= 40 else tag[:37] + "..."
            tw = d.textlength(tag, font=f)
            ty = y1 if y1 + font_size + 4 < y2 else max(0.0, y1 - font_size - 4)
            tx = min(x1, max(0.0, im.width - tw - 6))
            d.rectangle([tx, ty, tx + tw + 6, ty + font_size + 4], fill=c)
            d.text((tx + 3, ty + 1), tag, fill=text_color(c), font=f)
    return im


def _pieces(tokens: list[str], snippets: list[dict], show_scores: bool) -> list[tuple[str, int | None, str]]:
    """(text, region row or None for words outside any snippet, score text) per drawn piece, in sentence order."""
    out, pos = [], 0
    for s in sorted(snippets, key=lambda s: s["start"]):
        if s["start"] > pos:
            out.append((" ".join(tokens[pos : s["start"]]), None, ""))
        out.append((" ".join(tokens[s["start"] : s["end"]]), int(s["region"]), f"{s['score']:.2f}" if show_scores else ""))
        pos = s["end"]
    if pos < len(tokens):
        out.append((" ".join(tokens[pos:]), None, ""))
    return out


def draw_sentence(d: ImageDraw.ImageDraw, xy: tuple[int, int], tokens: list[str], snippets: list[dict], width: int,
                  font_size: int = 15, show_scores: bool = True) -> int:
    """Draw one sentence with highlighted snippets, wrapping at `width` px; returns the y below it."""
    f, fs = font(font_size), font(max(8, font_size - 4))
    x0, y = xy
    x = x0
    lh = font_size + 10
    for text, row, score in _pieces(tokens, snippets, show_scores):
        tw = d.textlength(text, font=f)
        sw = d.textlength(score, font=fs) + 3 if score else 0
        if x > x0 and x + tw + sw + 8 > x0 + width:
            x, y = x0, y + lh
        if row is None:
            d.text((x, y + 2), text, fill=(60, 60, 60), font=f)
        else:
            c = region_color(row)
            d.rounded_rectangle([x, y, x + tw + 8, y + font_size + 6], radius=4, fill=c)
            d.text((x + 4, y + 2), text, fill=text_color(c), font=f)
            if score:
                d.text((x + tw + 10, y - 1), score, fill=(90, 90, 90), font=fs)
        x += tw + sw + 14
    return y + lh


def render_alignment(image: Image.Image, sentences: list[tuple[list[str], list[dict]]],
                     orig_size: tuple[int, int] | None = None, width: int = 448, show_scores: bool = True,
                     font_size: int = 15, title: str | None = None) -> Image.Image:
    """The figure: image with the boxes of every region some snippet aligns to, sentences below.

    sentences: (tokens, snippet dicts) per sentence; each box is tagged with the snippets that landed on it.
    """
    tags: dict[int, list[str]] = {}
    boxes: dict[int, list[float]] = {}
    for tokens, snips in sentences:
        for s in snips:
            r = int(s["region"])
            boxes[r] = list(s["box"])
            text = " ".join(tokens[s["start"] : s["end"]])
            if text not in tags.setdefault(r, []):
                tags[r].append(text)
    top = draw_boxes(image, {r: (boxes[r], " / ".join(tags[r])) for r in boxes}, orig_size, width)
    pad = 10
    # measure the text block on a scratch canvas, then draw for real
    scratch = ImageDraw.Draw(Image.new("RGB", (width, 10)))
    y = pad + (font_size + 8 if title else 0)
    for tokens, snips in sentences:
        y = draw_sentence(scratch, (pad, y), tokens, snips, width - 2 * pad, font_size, show_scores) + 4
    canvas = Image.new("RGB", (width, top.height + y + pad), (255, 255, 255))
    canvas.paste(top, (0, 0))
    d = ImageDraw.Draw(canvas)
    y = top.height + pad
    if title:
        d.text((pad, y), title, fill=(0, 0, 0), font=font(font_size))
        y += font_size + 8
    for tokens, snips in sentences:
        y = draw_sentence(d, (pad, y), tokens, snips, width - 2 * pad, font_size, show_scores) + 4
    return canvas
