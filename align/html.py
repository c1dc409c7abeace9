"""Self-contained HTML pages of alignments (no external JS or CSS; pictures inline as base64 PNG).

- `alignment_page`: per image, its picture with the aligned boxes and its sentences with every snippet
  highlighted in its region's colour (same colours as `align.draw`) and followed by its score.
- `retrieval_page`: per query sentence, its top images with their image-sentence score and, for each, the
  query's words coloured by the box they align to in that image.
"""
from __future__ import annotations

import base64
import html
import io

from dvsa.align.draw import _pieces, region_color, text_color
from PIL import Image

CSS = """
body { font-family: sans-serif; margin: 20px; color: #222; background: #fafafa; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 4px 0; }
.item { display: inline-block; vertical-align: top; width: 470px; margin: 8px; padding: 8px; background: #fff;
        border: 1px solid #ddd; border-radius: 6px; }
.item img { width: 100%; display: block; }
.sent { margin: 6px 0; line-height: 1.9; }
.snip { padding: 2px 5px; border-radius: 4px; margin-right: 2px;
        -webkit-box-decoration-break: clone; box-decoration-break: clone; }
.score { font-size: 10px; color: #777; margin-right: 6px; vertical-align: super; }
.plain { color: #555; margin-right: 4px; }
.query { margin: 24px 0 4px; padding: 6px; background: #eef; border-radius: 4px; }
.hit { border: 3px solid #2a2; } .miss { border: 1px solid #ddd; }
.meta { font-size: 12px; color: #666; }
"""


def png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def sentence_html(tokens: list[str], snippets: list[dict], show_scores: bool = True) -> str:
    """One sentence as HTML with coloured snippet spans (title attribute: region row and score)."""
    out = []
    for text, row, score in _pieces(tokens, snippets, show_scores):
        t = html.escape(text)
        if row is None:
            out.append(f'<span class="plain">{t}</span>')
            continue
        bg, fg = region_color(row), text_color(region_color(row))
        out.append(f'<span class="snip" style="background:rgb{bg};color:rgb{fg}" '
                   f'title="region {row}, score {html.escape(score)}">{t}</span>')
        if score:
            out.append(f'<span class="score">{html.escape(score)}</span>')
    return f'<div class="sent">{"".join(out)}</div>'


def _page(title: str, body: list[str], note: str = "") -> str:
    note_html = f'<p class="meta">{html.escape(note)}</p>' if note else ""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title><style>"
            + CSS + "</style></head><body><h1>" + html.escape(title) + "</h1>" + note_html + "\n".join(body)
            + "</body></html>\n")


def alignment_page(entries: list[dict], title: str = "Alignments", note: str = "") -> str:
    """entries: {"image_id", "picture" (PIL image with boxes), "sentences": [(tokens, snippets)]} per image."""
    body = []
    for e in entries:
        sents = "".join(sentence_html(t, s) for t, s in e["sentences"])
        body.append(f'<div class="item"><h2>{html.escape(str(e["image_id"]))}</h2>'
                    f'<img src="{png_data_uri(e["picture"])}" alt="{html.escape(str(e["image_id"]))}">{sents}</div>')
    return _page(title, body, note)


def retrieval_page(queries: list[dict], title: str = "Image search", note: str = "") -> str:
    """queries: {"text", "truth" (image id or None), "results": [{"image_id", "score", "picture", "tokens",
    "snippets"}]} per query, results best first. A result that is the query's own image gets a green frame."""
    body = []
    for q in queries:
        truth = q.get("truth")
        body.append(f'<div class="query"><b>query:</b> {html.escape(q["text"])}'
                    + (f' <span class="meta">(from image {html.escape(str(truth))})</span>' if truth else "") + "</div>")
        for rank, r in enumerate(q["results"], 1):
            cls = "hit" if truth is not None and str(r["image_id"]) == str(truth) else "miss"
            body.append(f'<div class="item {cls}"><h2>#{rank} {html.escape(str(r["image_id"]))} '
                        f'<span class="meta">score {r["score"]:.3f}</span></h2>'
                        f'<img src="{png_data_uri(r["picture"])}" alt="{html.escape(str(r["image_id"]))}">'
                        f'{sentence_html(r["tokens"], r["snippets"])}</div>')
    return _page(title, body, note)
