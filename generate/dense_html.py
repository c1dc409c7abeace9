"""A self-contained HTML page of dense captions: each image inline (base64), its boxes drawn in colours over it
(SVG in the image's pixel coordinates) and a numbered list of the captions in the same colours.

    write_dense_html(doc, "dense.html")          # a DenseCap results document (generate.formats, dvsa dense)
    write_dense_html(results, "dense.html")      # or the results of generate.dense.dense_captions
    write_dense_html(read_densecap_results("dense.json"), "dense.html")   # a file dvsa dense wrote

An image whose file cannot be read (or that has no path, e.g. results from a feature store of moved images)
is drawn as a grey canvas of its size, so the page is still written.
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from dvsa.align.regions.images import load_rgb
from dvsa.data.io import atomic_write_text
from dvsa.generate.formats import from_densecap_results

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
           "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075", "#ffe119", "#a9a9a9")


def _data_uri(path: str | None, max_side: int) -> str | None:
    """JPEG data URI of the image at `path`, shrunk to `max_side` px at most; None when it cannot be read."""
    if not path:
        return None
    try:
        im = load_rgb(path)
    except Exception:
        return None
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(res: dict, max_side: int) -> str:
    w, h = int(res["width"]), int(res["height"])
    uri = _data_uri(res.get("path"), max_side)
    stroke = max(1.0, max(w, h) / 250)
    font = max(8.0, max(w, h) / 28)
    parts = [f'<svg viewBox="0 0 {w} {h}" width="{min(w, max_side) if w >= h else round(min(h, max_side) * w / h)}"'
             f' xmlns="http://www.w3.org/2000/svg">']
    if uri:
        parts.append(f'<image href="{uri}" x="0" y="0" width="{w}" height="{h}" preserveAspectRatio="none"/>')
    else:
        parts.append(f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ccc"/>')
    items = []
    for k, reg in enumerate(res["regions"]):
        c = COLOURS[k % len(COLOURS)]
        x1, y1, x2, y2 = (float(v) for v in reg["box"])
        cap = html.escape(reg["caption"])
        parts.append(f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" fill="none" '
                     f'stroke="{c}" stroke-width="{stroke:.1f}"><title>{k + 1}. {cap}</title></rect>')
        parts.append(f'<text x="{x1 + stroke:.1f}" y="{y1 + font:.1f}" font-size="{font:.1f}" fill="{c}" '
                     f'stroke="black" stroke-width="{stroke / 4:.2f}" font-family="sans-serif" '
                     f'font-weight="bold">{k + 1}</text>')
        items.append(f'<li style="color:{c}"><span class="cap">{cap}</span> '
                     f'<span class="score">{float(reg["score"]):.2f}</span></li>')
    parts.append("</svg>")
    name = html.escape(str(res.get("image_id", "")))
    note = "" if uri else ' <span class="score">(image not readable: boxes only)</span>'
    return (f'<div class="img"><h3>{name}{note}</h3>{"".join(parts)}<ol>{"".join(items)}</ol></div>')


def dense_html(results, title: str = "Dense captions", max_side: int = 512,
               failed: list[dict] | None = None) -> str:
    """The page as a string (see module doc) of a DenseCap results document (its ``opt.failed`` listed unless
    `failed` is given) or of a list of `dense_captions` results; `failed` images are listed at the end with their
    reasons."""
    if isinstance(results, dict):
        if failed is None:
            failed = (results.get("opt") or {}).get("failed")
        results = from_densecap_results(results)
    figs = "\n".join(_figure(r, max_side) for r in results)
    bad = ""
    if failed:
        bad = "<h2>Skipped images</h2><ul>" + "".join(
            f"<li>{html.escape(str(f.get('path')))}: {html.escape(str(f.get('reason')))}</li>" for f in failed
        ) + "</ul>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.img {{ display: inline-block; vertical-align: top; margin: 0 1.5em 1.5em 0; max-width: {max_side + 20}px; }}
.img svg {{ display: block; height: auto; }}
ol {{ padding-left: 1.6em; margin: .4em 0; }} li {{ font-weight: bold; }}
.cap {{ color: #222; font-weight: normal; }} .score {{ color: #888; font-weight: normal; font-size: 85%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Boxes in the colour of their caption; the number after a caption is its score (mean log-probability per
word).</p>
{figs}
{bad}
</body></html>
"""


def write_dense_html(results, path: str | os.PathLike, **kw) -> Path:
    """Write `dense_html(results, **kw)` to `path` (atomically); returns the path."""
    return atomic_write_text(path, dense_html(results, **kw))
