"""Alignment pictures and pages (align/draw.py, align/html.py, align/show.py, dvsa align show)."""
import re

import numpy as np
import pytest
import torch
from dvsa.align.draw import _pieces, region_color, render_alignment
from dvsa.align.html import sentence_html
from dvsa.align.show import (
    align_sentences,
    draw_alignment,
    rank_images,
    write_alignment_page,
    write_retrieval_page,
)
from PIL import Image
from snippets_fakes import grounded_world


def world_with_images(tmp_path, **kw):
    records, store, model, vocab = grounded_world(tmp_path, **kw)
    for r in records:
        Image.new("RGB", (r.width, r.height), (250, 250, 250)).save(tmp_path / r.path)
    return records, store, model, vocab


def test_pieces_cover_the_sentence_in_order():
    toks = "a red circle left of the blue square".split()
    snips = [{"start": 1, "end": 3, "region": 1, "score": 2.0}, {"start": 6, "end": 8, "region": 2, "score": 1.5}]
    pieces = _pieces(toks, snips, True)
    assert " ".join(p[0] for p in pieces) == " ".join(toks)
    assert [p[1] for p in pieces] == [None, 1, None, 2]
    h = sentence_html(toks, snips)
    assert h.count('class="snip"') == 2 and "2.00" in h and f"rgb{region_color(2)}" in h


def test_render_draws_boxes_in_region_colours():
    img = Image.new("RGB", (100, 80), (255, 255, 255))
    toks = ["a", "red", "circle"]
    snips = [{"start": 0, "end": 3, "region": 1, "box": [10, 20, 60, 70], "score": 3.2}]
    fig = render_alignment(img, [(toks, snips)], orig_size=(100, 80), width=200, show_scores=True)
    assert fig.width == 200 and fig.height > 160  # image scaled x2 plus the sentence below
    px = np.asarray(fig)
    # left edge of the box at x = 20 (scaled), below the tag
    assert tuple(px[100, 21]) == region_color(1)
    # the text area below the picture holds the snippet's colour too
    below = px[161:].reshape(-1, 3)
    assert (below == np.array(region_color(1))).all(1).any()


def test_draw_alignment_and_pages(tmp_path):
    records, store, model, vocab = world_with_images(tmp_path, n_images=4, seed=2)
    rec = records[0]
    aligned = align_sentences(model, vocab, store, rec, rec.sentences, beta=0.5)
    (toks, snips), = aligned
    assert sum(s["end"] - s["start"] for s in snips) == len(toks)
    fig = draw_alignment(model, vocab, store, rec, rec.sentences[0], beta=0.5, root=tmp_path)
    assert fig.width == 448
    page = write_alignment_page(model, vocab, store, records, 0.5, tmp_path / "show", root=tmp_path)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == len(records)
    assert not re.search(r"(src|href)=\"(http|//)", text) and "<script" not in text
    assert all((tmp_path / "show" / f"{r.id}.png").is_file() for r in records)
    # a missing image file draws a placeholder with a warning, not an error
    (tmp_path / rec.path).unlink()
    with pytest.warns(UserWarning, match="cannot read image"):
        draw_alignment(model, vocab, store, rec, rec.sentences[0], beta=0.5, root=tmp_path)


def test_retrieval_ranks_matching_images_first(tmp_path):
    records, store, model, vocab = world_with_images(tmp_path, n_images=6, seed=3)
    q = records[2].sentences[0]
    lengths = torch.tensor([len(q.tokens)])
    tokens = torch.tensor([vocab.encode(q.tokens)])
    scores = rank_images(model, store, [r.id for r in records], tokens, lengths, batch_size=4)
    # slow twin: sum over words of the best region score
    for i, r in enumerate(records):
        _, feats = store.regions(r.id)
        want = (model.table[tokens[0]] @ torch.tensor(feats).T).amax(1).sum()
        assert float(scores[i, 0]) == pytest.approx(float(want), abs=1e-5)
    page = write_retrieval_page(model, vocab, store, records, [q, "a blue square"], 0.5, tmp_path / "r.html",
                                k=3, root=tmp_path)
    text = page.read_text()
    assert text.count('class="query"') == 2 and text.count("data:image/png;base64,") == 6
    assert float(scores[2, 0]) == float(scores[:, 0].max())
    assert 'class="item hit"' in text  # the query's own image (4 content words matched) is among the top 3


def test_cli_show(tmp_path, monkeypatch):
    import dvsa.data.catalog
    import dvsa.scripts.align_show as cli
    import dvsa.align.loading as common

    records, store, model, vocab = world_with_images(tmp_path, n_images=3, seed=4)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    monkeypatch.setattr(common, "load_model", lambda path, device="cpu": (model, vocab, None))
    rc = cli.main(["--checkpoint", "m.pt", "--store", str(tmp_path / "store"), "--dataset", "synthetic",
                   "--root", str(tmp_path), "--beta", "0.5", "--n-images", "2", "--query", "a red circle",
                   "--query-sentences", "1", "--out", str(tmp_path / "show")])
    assert rc == 0
    assert (tmp_path / "show" / "index.html").is_file() and (tmp_path / "show" / "retrieval.html").is_file()
    assert len(list((tmp_path / "show").glob("*.png"))) == 2
