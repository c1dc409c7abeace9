"""Dense captioning: captions per region from a store or an encoder, scores, order, bad images, HTML, CLI."""
import json

import numpy as np
import pytest
import torch
from dense_fakes import (
    WORDS,
    FakeEncoder,
    Gen,
    OneWordModel,
    expected,
    make_store,
    vocab,
)
from dvsa.data.records import ImageRecord, Region
from dvsa.generate.dense import (
    DenseConfig,
    dense_captions,
    image_files,
    nms,
    region_inputs,
)
from dvsa.generate.dense_html import dense_html, write_dense_html
from dvsa.generate.densecap_eval import box_iou, densecap_evaluate, exact_match_scorer
from dvsa.generate.formats import read_densecap_results
from PIL import Image

torch.set_num_threads(1)


def test_region_inputs_by_mode():
    regions = np.arange(6, dtype=np.float32).reshape(2, 3)
    image = np.array([9, 9, 9], np.float32)
    assert np.array_equal(region_inputs(regions, image, "region"), regions)
    assert np.array_equal(region_inputs(regions, image, "image"), regions)  # full frame model: region as image
    assert np.array_equal(region_inputs(regions, image, "image", "image"), np.stack([image, image]))
    assert np.array_equal(region_inputs(regions, image, "region+image"),
                          np.concatenate([regions, np.stack([image, image])], 1))


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for n, image_id in enumerate(["a", "b"]):
        r = 6 + n
        boxes = np.concatenate([[[0, 0, 100, 80]], rng.uniform(0, 40, (r - 1, 2)).repeat(2, 1)
                                + [0, 0, 30, 20]]).astype(np.float32)
        feats = rng.normal(0, 1, (r, 8)).astype(np.float32)
        images[image_id] = (boxes, feats, (100, 80))
    return make_store(tmp_path / "store", images), images


@pytest.mark.parametrize("beam", [1, 3])
def test_dense_from_store(store, beam):
    st, images = store
    model = OneWordModel(8)
    out = dense_captions(model, vocab(), Gen(), st, ["a", "b"], DenseConfig(beam=beam, top=0, nms_iou=None))
    assert [r["image_id"] for r in out] == ["a", "b"]
    for res in out:
        boxes, feats, _ = images[res["image_id"]]
        assert sorted(d["row"] for d in res["regions"]) == list(range(1, len(boxes)))  # row 0 left out
        scores = [d["score"] for d in res["regions"]]
        assert scores == sorted(scores, reverse=True)
        for d in res["regions"]:
            cap, lp = expected(feats[d["row"]])
            assert d["caption"] == cap
            assert d["logprob"] == pytest.approx(lp, abs=1e-4)
            assert d["score"] == pytest.approx(lp / 2, abs=1e-4)  # one word + END
            assert d["box"] == pytest.approx(boxes[d["row"]].tolist())
    # top N, whole image, and the single-image form the pipeline uses
    one = dense_captions(model, vocab(), Gen(), st, "a", top=2, whole_image=True, nms_iou=None)
    assert isinstance(one, dict) and len(one["regions"]) == 2
    every = dense_captions(model, vocab(), Gen(), st, ["a"], top=0, whole_image=True, nms_iou=None)[0]
    assert 0 in [d["row"] for d in every["regions"]]
    assert one["regions"] == every["regions"][:2]


def test_box_score_joins_the_caption_score(store):
    from dvsa.align.boxscore import BoxScoreConfig, BoxScorer

    st, images = store
    scorer = BoxScorer(8, BoxScoreConfig(geometry_bins=2))
    scorer.linear.weight.copy_(torch.linspace(-2, 2, scorer.mean.numel())[None])
    scorer.linear.bias.fill_(0.5)
    model = OneWordModel(8)
    plain = dense_captions(model, vocab(), Gen(), st, ["a", "b"], top=0, nms_iou=None)
    got = dense_captions(model, vocab(), Gen(), st, ["a", "b"], top=0, nms_iou=None, box_scorer=scorer,
                         box_weight=3.0)
    for p, g in zip(plain, got):
        boxes, feats, _ = images[g["image_id"]]
        z = scorer(torch.from_numpy(feats), torch.from_numpy(boxes))
        by_row = {d["row"]: d for d in p["regions"]}
        for d in g["regions"]:
            assert d["box_score"] == pytest.approx(float(z[d["row"]]), abs=1e-5)
            want = by_row[d["row"]]["score"] + 3.0 * float(torch.nn.functional.logsigmoid(z[d["row"]]))
            assert d["score"] == pytest.approx(want, abs=1e-5)
        assert [d["score"] for d in g["regions"]] == sorted((d["score"] for d in g["regions"]), reverse=True)
    assert any([d["row"] for d in g["regions"]] != [d["row"] for d in p["regions"]]  # the box score reorders
               for p, g in zip(plain, got))
    with pytest.raises(ValueError, match="fitted on 5-dim"):
        dense_captions(model, vocab(), Gen(), st, ["a"], box_scorer=BoxScorer(5, BoxScoreConfig()))


def test_nms_drops_near_duplicates_of_better_regions(store):
    boxes = [[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [0, 0, 10, 40], [21, 20, 30, 30]]
    assert nms(boxes, 0.3) == [0, 2, 3]  # IoU(1, 0) = 0.91, IoU(4, 2) = 0.9; IoU(3, 0) = 0.25 is kept
    assert nms(boxes, 0.95) == [0, 1, 2, 3, 4] and nms([], 0.3) == []
    st, _ = store
    every = dense_captions(OneWordModel(8), vocab(), Gen(), st, ["a", "b"], top=0, nms_iou=None)
    kept = dense_captions(OneWordModel(8), vocab(), Gen(), st, ["a", "b"], top=0)  # default: DenseCap's 0.3
    for e, k in zip(every, kept):
        assert k["regions"] == [e["regions"][i] for i in nms([d["box"] for d in e["regions"]], 0.3)]
        b = np.array([d["box"] for d in k["regions"]])
        iou = box_iou(b, b)
        assert (iou[~np.eye(len(b), dtype=bool)] <= 0.3).all()
    assert sum(len(k["regions"]) for k in kept) < sum(len(e["regions"]) for e in every)  # the fixture overlaps



    st, _ = store
    failed, msgs = [], []
    out = dense_captions(OneWordModel(8), vocab(), Gen(), st, ["a", "zzz"], failed=failed, log=msgs.append)
    assert [r["image_id"] for r in out] == ["a"]
    assert failed[0]["image_id"] == "zzz" and "not in the feature store" in failed[0]["reason"]
    assert "zzz" in msgs[0]


def _png(path, colour, size=(40, 30)):
    Image.new("RGB", size, colour).save(path)
    return path


def test_dense_from_encoder_skips_corrupt_images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "red.png", (250, 10, 10))
    _png(d / "blue.png", (10, 10, 250), size=(30, 50))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("not an image and not listed")
    paths = image_files([str(d), str(tmp_path / "missing.png")])
    assert [p.name for p in paths] == ["blue.png", "broken.jpg", "red.png", "missing.png"]
    failed, msgs = [], []
    out = dense_captions(OneWordModel(8), vocab(), Gen(), FakeEncoder(), [str(p) for p in paths],
                         failed=failed, log=msgs.append)
    assert [r["image_id"] for r in out] == ["blue", "red"]
    assert {f["image_id"] for f in failed} == {"broken", "missing"} and len(msgs) == 2
    assert "broken.jpg" in msgs[0] or "broken.jpg" in msgs[1]
    red = out[1]
    assert (red["width"], red["height"]) == (40, 30)
    # red pixels: feature [r, g, b, 1-r, 1-g, 1-b] peaks at index 1 or 2 (1 - g, 1 - b), never a colour word 0
    assert all(d["caption"] in WORDS for d in red["regions"])


def test_html_is_self_contained(tmp_path):
    img = _png(tmp_path / "x.png", (0, 200, 0), size=(64, 48))
    res = [{"image_id": "x", "path": str(img), "width": 64, "height": 48,
            "regions": [{"box": [1, 2, 30, 40], "caption": "a <b>green</b> & box", "score": -0.5},
                        {"box": [10, 10, 60, 45], "caption": "another", "score": -1.25}]},
           {"image_id": "gone", "path": str(tmp_path / "gone.png"), "width": 10, "height": 10, "regions": []}]
    page = dense_html(res, failed=[{"path": "bad.jpg", "reason": "corrupt"}])
    assert page.count("data:image/jpeg;base64,") == 1
    assert "a &lt;b&gt;green&lt;/b&gt; &amp; box" in page and "<b>green" not in page
    assert page.count('fill="none"') == 2 and "-1.25" in page
    assert "image not readable" in page and "bad.jpg: corrupt" in page
    p = write_dense_html(res, tmp_path / "out" / "d.html")
    assert p.read_text() .startswith("<!doctype html>")
    assert "src=\"http" not in page and "href=\"http" not in page


def test_densecap_on_dense_results():
    recs = [ImageRecord("a", "a.png", 100, 80, "test", regions=[
        Region([0, 0, 20, 20], "w1", id="0"), Region([50, 50, 90, 70], "w2", id="1"), Region([5, 5, 9, 9], None)])]
    good = [{"image_id": "a", "regions": [{"box": [0, 0, 20, 20], "caption": "w1", "score": -0.1},
                                          {"box": [50, 50, 90, 70], "caption": "w2", "score": -0.2}]}]
    out = densecap_evaluate(good, recs, scorer=exact_match_scorer)
    assert out["map"] == 1.0 and out["n_gt"] == 2  # the region without text is not ground truth
    swapped = [{"image_id": "a", "regions": [dict(good[0]["regions"][0], caption="w2"),
                                             dict(good[0]["regions"][1], caption="w1")]}]
    assert densecap_evaluate({"a": swapped[0]}, recs, scorer=exact_match_scorer)["map"] == 0.0


def test_cli_dense_end_to_end(tmp_path, capsys):
    """`dvsa dense` with a real (untrained) region encoder rebuilt from the checkpoint's feature meta."""
    from dense_fakes import tiny_checkpoint
    from dvsa.align.regions.config import RegionConfig
    from dvsa.align.regions.encoder import RegionEncoder
    from dvsa.scripts.cli import main as dvsa
    from dvsa.scripts.dense import main

    enc = RegionEncoder.from_config(RegionConfig(pretrained=False, max_boxes=4, progress=False))
    ck = tiny_checkpoint(tmp_path / "gen.pt", vocab(), enc.dim, enc.meta)
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in {"one": (72, 64), "two": (64, 80)}.items():
        a = np.zeros((h, w, 3), np.uint8) + 200
        a[10:40, 8:30] = rng.integers(0, 255, 3)  # two blocks to detect
        a[35:60, 40:60] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(d / f"{name}.png")
    (d / "zbad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out, page = tmp_path / "dense.json", tmp_path / "dense.html"
    rc = main(["--checkpoint", str(ck), "--images", str(d), "--out", str(out), "--html", str(page), "--beam", "2",
               "--top", "3"])
    assert rc == 0
    doc = json.loads(out.read_text())  # DenseCap's results.json layout
    assert set(doc) == {"results", "opt"}
    assert [r["img_name"] for r in doc["results"]] == ["one.png", "two.png"]
    assert all(set(r) == {"img_name", "boxes", "captions", "scores"} for r in doc["results"])
    assert [f["image_id"] for f in doc["opt"]["failed"]] == ["zbad"] and "zbad.png" in capsys.readouterr().err
    assert doc["opt"]["beam"] == 2 and doc["opt"]["max_len"] == 6  # the generator's max_len
    assert doc["opt"]["top"] == 3 and doc["opt"]["checkpoint"] == str(ck) and doc["opt"]["box_scorer"] is None
    for r, (w, h) in zip(doc["results"], [(72, 64), (64, 80)]):
        assert 1 <= len(r["boxes"]) <= 3 and len(r["captions"]) == len(r["scores"]) == len(r["boxes"])
        assert r["scores"] == sorted(r["scores"], reverse=True) and all(s <= 0 for s in r["scores"])
        for x, y, bw, bh in r["boxes"]:  # x, y, w, h in the image's pixels
            assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
        assert all(t in vocab().itos for c in r["captions"] for t in c.split())
    back = read_densecap_results(out)
    assert [(r["image_id"], r["width"], r["height"]) for r in back] == [("one", 72, 64), ("two", 64, 80)]
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 2 and "zbad.png" in html
    # with a box scorer of the encoder's features: every region carries its box score
    from dvsa.align.boxscore import BoxScoreConfig, BoxScorer, save_box_scorer

    save_box_scorer(tmp_path / "bs.pt", BoxScorer(enc.dim, BoxScoreConfig()))
    assert main(["--checkpoint", str(ck), "--images", str(d), "--out", str(out), "--top", "3",
                 "--box-scorer", str(tmp_path / "bs.pt")]) == 0
    doc = json.loads(out.read_text())
    assert doc["opt"]["box_weight"] == 1.0 and doc["opt"]["box_scorer"] == str(tmp_path / "bs.pt")
    # an all-zero scorer: every score gets box_weight * log sigmoid(0) = -log 2
    assert all(s <= -np.log(2) + 1e-9 for r in doc["results"] for s in r["scores"])
    save_box_scorer(tmp_path / "bs3.pt", BoxScorer(3, BoxScoreConfig()))
    assert dvsa(["dense", "--checkpoint", str(ck), "--images", str(d), "--out", str(out),
                 "--box-scorer", str(tmp_path / "bs3.pt")]) in (1, 2)
    assert "fitted on 3-dim features" in capsys.readouterr().err
    # a checkpoint whose features were not made by the region encoder cannot featurise new images
    bad = tiny_checkpoint(tmp_path / "bad.pt", vocab(), enc.dim, {"dim": enc.dim, "producer": "elsewhere"})
    assert dvsa(["dense", "--checkpoint", str(bad), "--images", str(d), "--out", str(out)]) in (1, 2)
    assert "cannot be rebuilt" in capsys.readouterr().err


def test_dense_captions_refuse_an_attention_generator():
    from dvsa.data.errors import UsageError
    from dvsa.generate.dense import dense_captions
    from dvsa.generate.model import GenConfig

    with pytest.raises(UsageError, match="attention generator"):
        dense_captions(None, None, GenConfig(arch="attention", input="regions"), None, [])
