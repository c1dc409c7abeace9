"""Alignment pictures from a model: run the MRF for some (image, sentence) pairs and draw them.

    img = draw_alignment(model, vocab, store, record, record.sentences[0], beta=2.0)   # PIL image
    write_alignment_page(model, vocab, store, records, beta, "out/")                  # PNGs + index.html
    write_retrieval_page(model, vocab, store, records, queries, beta, "out/retrieval.html")
    write_show(model, vocab, store, records, all_records, beta, "out/", ids=["im1"], queries=["a dog"])  # both + show.json

Drawing lives in `align.draw` (PIL) and `align.html` (pages). Image files are `record.path`, joined to `root`
when relative; an unreadable image becomes a grey placeholder (warned), never an error.

Dimensions: Q queries, N images, R regions, T words, H embedding size.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from dvsa.align.draw import draw_boxes, load_image, render_alignment
from dvsa.align.html import alignment_page, retrieval_page
from dvsa.align.mrf import chain_mrf
from dvsa.align.scores import image_sentence_scores
from dvsa.align.snippets import batch_snippets, score_pairs
from dvsa.data.records import ImageRecord, Sentence
from dvsa.data.text import tokenize
from PIL import Image


def image_path(record: ImageRecord, root: str | os.PathLike | None = None) -> Path:
    p = Path(record.path)
    return p if p.is_absolute() or root is None else Path(root) / p


def align_sentences(model, vocab, store, record: ImageRecord, sentences: list[Sentence], beta: float,
                    device: str = "cpu") -> list[tuple[list[str], list[dict]]]:
    """(tokens, snippet dicts in the Snippets format) of each sentence aligned to `record`'s regions at beta."""
    pairs = [(record, s) for s in sentences]
    out = []
    for batch in score_pairs(model, vocab, store, pairs, batch_size=max(1, len(pairs)), device=device):
        assign = chain_mrf(batch.unary, batch.lengths, batch.region_mask, beta).assign
        snips = list(batch_snippets(batch, assign))
        for s in batch.sentences:
            out.append((s.tokens, [d for d in snips if d["sentence_id"] == s.id]))
    return out


def picture(model, vocab, store, record: ImageRecord, sentences: list[Sentence], beta: float,
            root: str | os.PathLike | None = None, width: int = 448, device: str = "cpu",
            title: str | None = None) -> tuple[Image.Image, list[tuple[list[str], list[dict]]]]:
    """(the alignment figure of `sentences` on `record`'s image, their alignments)."""
    aligned = align_sentences(model, vocab, store, record, sentences, beta, device)
    size = store.image_size(record.id)
    image, _ = load_image(image_path(record, root), size)
    return render_alignment(image, aligned, orig_size=size, width=width, title=title), aligned


def draw_alignment(model, vocab, store, record: ImageRecord, sentence: Sentence, beta: float = 0.0,
                   root: str | os.PathLike | None = None, width: int = 448, device: str = "cpu") -> Image.Image:
    """The paper's alignment figure for one (image, sentence) pair: boxes in colours, snippets below with scores."""
    return picture(model, vocab, store, record, [sentence], beta, root, width, device)[0]


def write_alignment_page(model, vocab, store, records: list[ImageRecord], beta: float, out_dir: str | os.PathLike,
                         root: str | os.PathLike | None = None, sentences_per_image: int = 5, width: int = 448,
                         device: str = "cpu", title: str | None = None) -> Path:
    """``out_dir/<image id>.png`` per record (all its first `sentences_per_image` sentences) and
    ``out_dir/index.html`` with the pictures inline. Records missing from the store are skipped.
    Returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for rec in records:
        if rec.id not in store or not rec.sentences:
            continue
        sents = rec.sentences[:sentences_per_image]
        fig, aligned = picture(model, vocab, store, rec, sents, beta, root, width, device)
        fig.save(out / f"{_safe(rec.id)}.png")
        boxes_only, _ = picture_boxes(store, rec, aligned, root, width)
        entries.append({"image_id": rec.id, "picture": boxes_only, "sentences": aligned})
    page = out / "index.html"
    page.write_text(alignment_page(entries, title or "Word-to-region alignments",
                                   note=f"MRF beta = {beta:.4g}; colours = regions; numbers = snippet scores"))
    return page


def picture_boxes(store, record: ImageRecord, aligned, root=None, width: int = 448):
    """The image with the aligned boxes only (the HTML page writes the sentences as text)."""
    size = store.image_size(record.id)
    image, ok = load_image(image_path(record, root), size)
    regions = {}
    for tokens, snips in aligned:
        for s in snips:
            tag = " ".join(tokens[s["start"] : s["end"]])
            box, old = regions.get(int(s["region"]), (s["box"], ""))
            regions[int(s["region"])] = (box, tag if not old else old if tag in old.split(" / ") else f"{old} / {tag}")
    return draw_boxes(image, regions, size, width), ok


@torch.inference_mode()
def rank_images(model, store, image_ids: list[str], tokens: torch.Tensor, lengths: torch.Tensor,
                batch_size: int = 128, device: str = "cpu") -> torch.Tensor:
    """Image-sentence scores float [N, Q] of every image against every query (eq. 8, or the model's score kind).

    tokens long [Q, T] (PAD 0), lengths long [Q] >= 1.
    """
    kind = getattr(getattr(model, "cfg", None), "score", "max")
    s = model.embed_words(tokens.to(device), lengths.to(device))  # [Q, T, H]
    wmask = torch.arange(tokens.shape[1], device=device)[None, :] < lengths.to(device)[:, None]  # [Q, T]
    rows = []
    for i0 in range(0, len(image_ids), batch_size):
        feats, boxes, mask = store.padded(image_ids[i0 : i0 + batch_size])
        v = model.embed_regions(torch.from_numpy(feats).to(device), torch.from_numpy(boxes).to(device))  # [n, R, H]
        rows.append(image_sentence_scores(v, torch.from_numpy(mask).to(device), s, wmask, kind=kind).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, tokens.shape[0])


def write_retrieval_page(model, vocab, store, records: list[ImageRecord], queries: list[str | Sentence], beta: float,
                         out: str | os.PathLike, k: int = 5, root: str | os.PathLike | None = None, width: int = 448,
                         device: str = "cpu") -> Path:
    """Image search results as HTML: for each query (raw text, or a dataset `Sentence`, whose own image is then
    marked), the top `k` images of `records` and the query's words -> boxes in each. Returns the HTML path."""
    if hasattr(model, "eval"):
        model.eval()
    recs = [r for r in records if r.id in store]
    if not recs:
        raise ValueError("none of the records' images is in the feature store")
    owner = {s.id: r.id for r in records for s in r.sentences}
    sents = [q if isinstance(q, Sentence) else Sentence(-1 - n, q, tokenize(q)) for n, q in enumerate(queries)]
    sents = [s for s in sents if s.tokens]
    if not sents:
        raise ValueError("no query has a word")
    ids = [vocab.encode(s.tokens) for s in sents]
    lengths = torch.tensor([len(x) for x in ids])
    tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for j, x in enumerate(ids):
        tokens[j, : len(x)] = torch.tensor(x)
    scores = rank_images(model, store, [r.id for r in recs], tokens, lengths, device=device)  # [N, Q]
    entries = []
    for j, s in enumerate(sents):
        top = torch.argsort(scores[:, j], descending=True, stable=True)[:k].tolist()
        results = []
        for i in top:
            aligned = align_sentences(model, vocab, store, recs[i], [s], beta, device)
            pic, _ = picture_boxes(store, recs[i], aligned, root, width)
            results.append({"image_id": recs[i].id, "score": float(scores[i, j]), "picture": pic,
                            "tokens": s.tokens, "snippets": aligned[0][1]})
        entries.append({"text": s.raw, "truth": owner.get(s.id) if s.id >= 0 else None, "results": results})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(retrieval_page(entries, note=f"top {k} of {len(recs)} images; words coloured by their box "
                                                f"(MRF beta = {beta:.4g}); green frame = the query's own image"))
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


class UnknownImageIds(ValueError):
    """`choose_records` was asked for image ids that no record has (`missing`)."""

    def __init__(self, missing: list[str]):
        super().__init__(f"unknown image ids {missing}")
        self.missing = missing


def choose_records(records: list[ImageRecord], all_records: list[ImageRecord], store, ids: list[str] | None = None,
                   n: int = 12) -> list[ImageRecord]:
    """The records to draw: those of `ids` in that order (looked up in `all_records`, any split;
    UnknownImageIds if some are not there), else the first `n` of `records` whose features are in `store`."""
    if ids:
        by_id = {r.id: r for r in all_records}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UnknownImageIds(missing)
        return [by_id[i] for i in ids]
    return [r for r in records if r.id in store][:n]


def write_show(model, vocab, store, records: list[ImageRecord], all_records: list[ImageRecord], beta: float,
               out_dir: str | os.PathLike, *, ids: list[str] | None = None, images: int = 12, sentences: int = 5,
               queries: list[str] = (), query_sentences: int = 0, top: int = 5, width: int = 448,
               root: str | os.PathLike | None = None, device: str = "cpu", info: dict | None = None) -> dict:
    """What ``dvsa align show`` writes into `out_dir`: the alignment pictures + index.html of `choose_records`
    (`ids`, else the first `images`), retrieval.html for `queries` plus the first sentence of `query_sentences`
    images of `records` (against all of `records`; skipped when there is no query), and show.json (beta, `info`,
    the image ids, the number of queries). Returns {"chosen": records drawn, "page": index.html, "queries": the
    queries, "retrieval": retrieval.html or None}. UnknownImageIds before anything is written."""
    chosen = choose_records(records, all_records, store, ids, images)
    out = Path(out_dir)
    page = write_alignment_page(model, vocab, store, chosen, beta, out, root=root, sentences_per_image=sentences,
                                width=width, device=device)
    qs = list(queries) + [r.sentences[0] for r in records if r.sentences and r.id in store][:query_sentences]
    rpage = None
    if qs:
        rpage = write_retrieval_page(model, vocab, store, records, qs, beta, out / "retrieval.html", k=top,
                                     root=root, width=width, device=device)
    (out / "show.json").write_text(json.dumps({"beta": beta, **(info or {}), "images": [r.id for r in chosen],
                                               "queries": len(qs)}, indent=2))
    return {"chosen": chosen, "page": page, "queries": qs, "retrieval": rpage}
