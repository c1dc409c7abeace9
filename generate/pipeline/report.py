"""The HTML report of a pipeline run: one self-contained file (images inlined as base64, no external assets) with
the results table, retrieval examples, alignment pictures, training curves, full-frame, region and dense captions.
`write_report(run_dir, results, path)` is what the pipeline calls; `rebuild_report(run_dir)` rebuilds it from a
run folder (``dvsa report``).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from dvsa.data.curves import render_history
from dvsa.data.errors import DataError
from dvsa.data.io import atomic_write_text
from dvsa.generate.dense_html import _figure
from dvsa.generate.formats import read_densecap_results
from dvsa.generate.metrics import format_vocabulary
from PIL import Image, ImageDraw

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#800000",
           "#469990"]

CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.card{display:inline-block;vertical-align:top;margin:6px;
width:270px;font-size:13px}.card img{max-width:260px;display:block}.ok{color:#1a7f37}.bad{color:#b00}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}.muted{color:#777;font-size:13px}
.img{display:inline-block;vertical-align:top;margin:0 1.5em 1.5em 0;max-width:340px;font-size:13px}
.img svg{display:block;height:auto}.img li{font-weight:bold}.cap{color:#222;font-weight:normal}
.score{color:#888;font-weight:normal;font-size:85%}"""


def _b64(img: Image.Image, fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, fmt, quality=85)
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: str | Path, boxes=None, labels=None, size: int = 256) -> str:
    """An <img> of the file (boxes [x1,y1,x2,y2] in original pixels drawn on it), or a note if it is unreadable."""
    try:
        img = Image.open(path).convert("RGB")
    except Exception as e:  # the report must not die on one bad picture
        return f'<div class="muted">[image {html.escape(str(path))} unreadable: {html.escape(str(e))}]</div>'
    scale = min(1.0, size / max(img.size)) if max(img.size) > size else size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    if boxes:
        draw = ImageDraw.Draw(img)
        for n, b in enumerate(boxes):
            c = COLOURS[n % len(COLOURS)]
            draw.rectangle([v * scale for v in b], outline=c, width=2)
            if labels:
                draw.text((b[0] * scale + 3, b[1] * scale + 2), str(n + 1), fill=c)
    return f'<img src="{_b64(img)}">'


def _png_file(path: Path) -> str:
    try:
        return f'<img src="{_b64(Image.open(path), "PNG")}" style="max-width:100%">'
    except Exception as e:
        return f'<div class="muted">[{html.escape(str(path))}: {html.escape(str(e))}]</div>'


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))


def _table(rows: list[list], head: list[str]) -> str:
    h = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(c)}</th>' for i, c in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def results_section(results: dict) -> str:
    parts = [f"<p>dataset <b>{html.escape(str(results.get('dataset')))}</b>, evaluated on the "
             f"<b>{html.escape(str(results.get('eval_split')))}</b> split ({results.get('n_eval_images')} images; "
             f"{results.get('n_train_images')} train images).</p>"]
    r = results.get("retrieval")
    if r:
        rows = [[d, r[d]["r1"], r[d]["r5"], r[d]["r10"], r[d]["medr"]] for d in ("annotation", "search")]
        plain, bank = r.get("plain"), r.get("bank") or {}
        if plain:  # the rows above are corrected by the bank of train images (align.hubness)
            rows = [[f"{row[0]}, bank of {bank.get('images')} train images (beta {beta})"] + row[1:]
                    for row, beta in zip(rows, bank.get("beta") or (None, None))]
            rows += [[f"{d}, eq. 8 alone", plain[d]["r1"], plain[d]["r5"], plain[d]["r10"], plain[d]["medr"]]
                     for d in ("annotation", "search")]
        parts.append("<h3>Image-sentence ranking (R@K in %)</h3>" + _table(rows, ["direction", "R@1", "R@5", "R@10",
                                                                               "Med r"]))
    beams = results.get("captioning_beams")
    if beams:
        keys = list(next(iter(beams.values())))
        parts.append("<h3>Full-frame captions (x100)</h3>" + _table(
            [[f"beam {b}"] + [m[k] for k in keys] for b, m in beams.items()], ["decoding"] + keys))
    voc = results.get("captioning_vocabulary")
    if voc:
        parts.append(f"<p>Beam {html.escape(str(results.get('captioning', {}).get('beam')))}: "
                     f"{html.escape(format_vocabulary(voc))}.</p>")
    att = results.get("captioning_attention_beams")
    if att:
        keys = list(next(iter(att.values())))
        parts.append("<h3>Region-attention captions (x100)</h3>" + _table(
            [[f"beam {b}"] + [m[k] for k in keys] for b, m in att.items()], ["decoding"] + keys))
    rc = results.get("region_captioning")
    if rc:
        keys = list(rc.get("region", {}))
        parts.append(f"<h3>Region captions on ground-truth regions ({rc.get('n_regions')} regions, x100)</h3>"
                     + _table([[m] + [rc[m][k] for k in keys] for m in ("region", "full_frame") if m in rc],
                              ["model"] + keys))
    a = results.get("alignment")
    if a:
        parts.append("<h3>Alignment (MRF snippets)</h3>" + _table([[k, v] for k, v in a.items()], ["", "value"]))
    parts.append(grounding_section(results))
    d = results.get("dense")
    if d:
        parts.append("<h3>Dense captioning</h3>" + _table([[k, v] for k, v in d.items()], ["", "value"]))
    t = results.get("timings_s")
    if t:
        parts.append("<h3>Stage timings (s, as each stage ran)</h3>" + _table([[k, v] for k, v in t.items()],
                                                                             ["stage", "seconds"]))
    st = results.get("stages", {})
    skipped = [f"{k}: {v}" for k, v in st.items() if v != "done"]
    if skipped:
        parts.append("<p class=muted>not run: " + html.escape("; ".join(skipped)) + "</p>")
    return "<h2>Results</h2>" + "".join(parts)


GROUNDING_METHODS = {"mrf": "MRF snippets", "argmax": "per-word argmax (beta 0)", "whole_image": "whole image",
                     "largest_box": "largest kept box", "random_box": "random kept box (expected)",
                     "best_box": "best kept box (bound)"}


def grounding_section(results: dict) -> str:
    """results.json's "grounding" (align.ground): IoU / pointing accuracy (%) of the MRF beside every baseline,
    per phrase type, and the kept boxes' recall by size; "" without it."""
    g = results.get("grounding")
    if not g or "phrases" not in g:
        return ""
    def pct(v):
        return round(100 * v, 1) if isinstance(v, (int, float)) else v

    ph, wd = g["phrases"], g.get("words", {})
    rows = [[GROUNDING_METHODS.get(m, m), pct(ph[m]["iou_accuracy"]), pct(ph[m]["pointing_accuracy"]),
             pct(wd.get(m, {}).get("iou_accuracy", "")), pct(wd.get(m, {}).get("pointing_accuracy", ""))]
            for m in g.get("methods", []) if m in ph]
    beta = f", MRF beta {g['beta']:.3g}" if g.get("beta") is not None else ""
    out = (f"<h3>Phrase grounding ({g.get('n_phrases')} phrases with a box, {g.get('n_words')} words, "
           f"{g.get('n_images')} images; IoU &ge; {g.get('iou')}{beta}; pointing = the chosen box's centre "
           "inside a ground-truth box; %)</h3>"
           + _table(rows, ["method", "IoU acc", "pointing", "word IoU", "word pointing"]))
    methods = list(g.get("methods", []))
    types = [[t, e["n"]] + [f"{pct(e[m]['iou_accuracy'])} / {pct(e[m]['pointing_accuracy'])}" for m in methods]
             for t, e in g.get("by_type", {}).items()]
    if types:
        out += "<h4>Per type (IoU / pointing %)</h4>" + _table(types, ["type", "n"] + [GROUNDING_METHODS.get(m, m)
                                                                                      for m in methods])
    rec = g.get("box_recall", {})
    if rec:
        out += "<h4>Kept boxes' recall of the ground-truth boxes (%)</h4>" + _table(
            [[k, e["n"], pct(e["recall"]), pct(e["recall_proposals"])] for k, e in rec.items() if e.get("n")],
            ["boxes (COCO size, original pixels)", "n", "any kept region", "without the whole image"])
    return out


def retrieval_section(run: Path) -> str:
    ex = _read(run / "retrieval_examples.json")
    if not ex:
        return ""
    cards = []
    for e in ex.get("annotation", []):
        lines = "".join(f'<li class="{"ok" if t["correct"] else "bad"}">{html.escape(t["text"])}</li>'
                        for t in e["top"])
        cards.append(f'<div class="card">{_thumb(e["path"])}<ol>{lines}</ol></div>')
    out = "<h2>Retrieval: image annotation (top 5 sentences; green = a true sentence)</h2>" + "".join(cards)
    rows = []
    for e in ex.get("search", []):
        imgs = "".join(f'<div class="card" style="width:140px">{_thumb(t["path"], size=128)}'
                       f'<span class="{"ok" if t["correct"] else "bad"}">{"true" if t["correct"] else "other"}'
                       f"</span></div>" for t in e["top"])
        rows.append(f'<div><p>&ldquo;{html.escape(e["text"])}&rdquo;</p>{imgs}</div>')
    return out + "<h2>Retrieval: image search (top 3 images)</h2>" + "".join(rows)


def alignment_section(run: Path) -> str:
    done = _read(run / "align_eval.done.json") or {}
    pics = done.get("result", {}).get("pictures", [])
    if not pics:
        return ""
    return "<h2>Word-to-region alignments (MRF)</h2>" + "".join(
        f'<div style="margin:8px 0">{_png_file(run / p)}</div>' for p in pics)


TRAINING_RUNS = (("align", "alignment model"), ("gen_full", "full-frame generator"),
                 ("gen_region", "region generator"), ("gen_attention", "attention generator"))


def _history_line(history) -> str:
    """"N epochs, last loss L, best validation V" of a history.json (an empty string if it has no rows)."""
    rows = [r for r in history if isinstance(r, dict)] if isinstance(history, list) else []
    if not rows:
        return ""
    parts = [f"{len(rows)} epoch{'s' if len(rows) != 1 else ''}"]
    if isinstance(rows[-1].get("loss"), (int, float)):
        parts.append(f"last loss {rows[-1]['loss']:.4f}")
    rsum = [r["val"]["rsum"] for r in rows if isinstance(r.get("val"), dict)
            and isinstance(r["val"].get("rsum"), (int, float))]
    cider = [r["val_cider"] for r in rows if isinstance(r.get("val_cider"), (int, float))
             and r["val_cider"] == r["val_cider"]]
    if rsum:
        parts.append(f"best validation R@K sum {max(rsum):.1f}")
    if cider:
        parts.append(f"best validation CIDEr {max(cider):.4f}")
    return ", ".join(parts)


def training_section(run: Path) -> str:
    """The training curves of the run's trained models (``align/``, ``gen_full/``, ``gen_region/``): each folder's
    curves.png inlined, or, for a run written before there were curves, drawn here from its history.json."""
    cards = []
    for name, label in TRAINING_RUNS:
        folder = run / name
        png, history = folder / "curves.png", _read(folder / "history.json")
        if png.is_file():
            pic = _png_file(png)
        elif isinstance(history, list):
            try:
                pic = ('<img src="data:image/png;base64,' + base64.b64encode(render_history(history, name)).decode()
                       + '" style="max-width:100%">')
            except Exception as e:  # the report must not die on one bad picture
                pic = f'<div class="muted">[{html.escape(str(folder / "history.json"))}: {html.escape(str(e))}]</div>'
        else:
            continue
        line = _history_line(history)
        cards.append(f"<h3>{html.escape(label)} <span class=muted>({html.escape(name)}/)</span></h3>"
                     + (f'<p class="muted">{html.escape(line)}</p>' if line else "")
                     + f'<div style="margin:8px 0">{pic}</div>')
    if not cards:
        return ""
    return "<h2>Training (loss and validation per epoch)</h2>" + "".join(cards)


def captions_section(run: Path, results: dict, images: dict, n: int = 12) -> str:
    beam = results.get("captioning", {}).get("beam")
    caps = _read(run / "captions" / f"beam{beam}.json") if beam else None
    if not caps:
        return ""
    cards = []
    for iid, cap in list(caps.items())[:n]:
        cards.append(f'<div class="card">{_thumb(images.get(iid, ""))}<b>{html.escape(cap)}</b></div>')
    return f"<h2>Full-frame captions (beam {beam})</h2>" + "".join(cards)


def region_captions_section(run: Path, n: int = 15) -> str:
    ex = _read(run / "region_captions.json")
    if not ex:
        return ""
    rows = [[k, ex.get("reference", {}).get(k, ""), ex.get("region", {}).get(k, ""), ex.get("full_frame", {}).get(k, "")]
            for k in list(ex.get("reference", {}))[:n]]
    return "<h2>Region captions on ground-truth boxes</h2>" + _table(rows, ["region", "reference", "region model",
                                                                          "full-frame model"])


def dense_section(run: Path) -> str:
    """Dense captions as `generate.dense_html` draws them (SVG boxes over the inlined picture), read from the
    dense stage's DenseCap results file (`generate.formats.read_densecap_results`)."""
    try:
        dense = read_densecap_results(run / "dense" / "captions.json")
    except DataError:  # not there (the stage did not run) or unreadable: no section
        return ""
    if not dense:
        return ""
    cards = [_figure(res, 320) for res in dense]
    return ("<h2>Dense captions (region model on detected regions; score = mean log-probability per word)</h2>"
            + "".join(cards))


def build_html(run: Path, results: dict) -> str:
    images = _read(run / "eval_images.json") or {}
    body = [results_section(results), retrieval_section(run), alignment_section(run), training_section(run),
            captions_section(run, results, images), region_captions_section(run), dense_section(run)]
    title = f"dvsa: {html.escape(str(results.get('dataset')))}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
            f"<body><h1>{title}</h1>{''.join(body)}</body></html>")


def write_report(run_dir: str | Path, results: dict, path: str | Path) -> Path:
    """Write the report of the run folder `run_dir` to `path` (atomic); returns `path`."""
    run, path = Path(run_dir), Path(path)
    return atomic_write_text(path, build_html(run, results))


def rebuild_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Rebuild the report of a finished (or partial) run folder from its results.json (FileNotFoundError when it
    is missing or unreadable); written to `out`, default RUN/report.html. Returns the path written."""
    run = Path(run_dir)
    results = _read(run / "results.json")
    if results is None:
        raise FileNotFoundError(f"{run / 'results.json'}: missing or unreadable; run the pipeline first")
    return write_report(run, results, out or run / "report.html")
