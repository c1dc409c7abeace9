"""Split and region-level caption evaluation, and `dvsa generate eval` end to end on synthetic scenes."""
import json

import numpy as np
import pytest
import torch
from dense_fakes import (
    FakeEncoder,
    Gen,
    OneWordModel,
    expected,
    make_store,
    tiny_checkpoint,
    vocab,
)
from dvsa.data.records import DataError, ImageRecord, Region, Sentence
from dvsa.generate import caption_eval as ce
from dvsa.generate.dense import region_inputs
from dvsa.generate.densecap_eval import box_iou
from PIL import Image

torch.set_num_threads(1)


def _records():
    return [
        ImageRecord("a", "a.png", 100, 80, "test", [Sentence(0, "w1", ["w1"])],
                    regions=[Region([0, 0, 50, 40], "w0 w1"), Region([40, 30, 100, 80], "w2"),
                             Region([1, 1, 5, 5], None)]),
        ImageRecord("b", "b.png", 100, 80, "test", [Sentence(1, "w2", ["w2"])],
                    regions=[Region([10, 10, 30, 30], "w3")]),
        ImageRecord("c", "c.png", 100, 80, "test", regions=[Region([0, 0, 9, 9], "w4")]),  # not in the store
    ]


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(3)
    images = {}
    for image_id in ("a", "b"):
        boxes = np.array([[0, 0, 100, 80], [2, 0, 50, 41], [45, 30, 100, 75], [12, 8, 33, 30], [60, 0, 99, 20]],
                         np.float32)
        images[image_id] = (boxes, rng.normal(0, 1, (5, 8)).astype(np.float32), (100, 80))
    return make_store(tmp_path / "store", images), images


def test_region_items_match_best_iou(store):
    st, images = store
    items = ce.region_items(_records(), st, "match")
    assert items["keys"] == ["a#0", "a#1", "b#0"]  # described regions only; c is not in the store
    assert items["skipped"] == [{"image_id": "c", "reason": "not in the feature store"}]
    for key, feat, iou in zip(items["keys"], items["regions"], items["ious"]):
        image_id, k = key.split("#")
        gt = [r for r in _records() if r.id == image_id][0].regions[int(k)].box
        boxes, feats, _ = images[image_id]
        ious = [float(box_iou(np.array([gt]), b[None])[0, 0]) for b in boxes]  # one by one
        best = int(np.argmax(ious))
        assert np.array_equal(feat, feats[best]) and iou == pytest.approx(ious[best])
    # a high min_iou leaves regions out and counts them
    strict = ce.region_items(_records(), st, "match", min_iou=0.9)
    assert len(strict["keys"]) + strict["n_unmatched"] == 3 and strict["n_unmatched"] > 0


def test_region_inputs_rowwise_equal_dense_inputs(store):
    st, _ = store
    items = ce.region_items(_records(), st, "match")
    for mode in ("region", "region+image", "image"):
        for ff in ("crop", "image"):
            got = ce._inputs(items, mode, ff)
            want = np.concatenate([region_inputs(items["regions"][i : i + 1], items["images"][i], mode, ff)
                                   for i in range(len(items["keys"]))])
            assert np.array_equal(got, want), (mode, ff)


def test_region_caption_metrics_by_hand(store):
    st, images = store
    model = OneWordModel(8)
    recs = _records()
    items = ce.region_items(recs, st, "match")
    want = {k: expected(f)[0] for k, f in zip(items["keys"], items["regions"])}
    out = ce.region_caption_metrics(model, vocab(), Gen(), recs, st, beam=2, use_java=False)
    assert out["captions"] == want and out["boxes"] == "match" and out["n_regions"] == 3
    assert 0 < out["mean_iou"] <= 1 and out["metric_info"]["tokenizer"] == "python"
    # describe every region exactly as the model will: BLEU-1 = 1
    for rec in recs:
        for k, g in enumerate(rec.regions):
            if f"{rec.id}#{k}" in want:
                g.text = want[f"{rec.id}#{k}"]
    perfect = ce.region_caption_metrics(model, vocab(), Gen(), recs, st, use_java=False)
    assert perfect["metrics"]["bleu1"] == pytest.approx(1.0, abs=1e-6)


def test_region_items_encode(tmp_path):
    recs = _records()
    for rec, colour in zip(recs, [(250, 0, 0), (0, 0, 250), (0, 250, 0)]):
        Image.new("RGB", (100, 80), colour).save(tmp_path / rec.path)
    recs[1].path = str(tmp_path / "missing.png")
    items = ce.region_items(recs, None, "encode", FakeEncoder(), root=str(tmp_path))
    assert items["keys"] == ["a#0", "a#1", "c#0"]  # b's image is missing: skipped and reported
    assert items["skipped"][0]["image_id"] == "b" and "missing.png" in items["skipped"][0]["reason"]
    assert items["regions"][0][:3] == pytest.approx([250 / 255, 0, 0], abs=1e-4)  # a's region features: red pixels


def test_snippet_references(store, tmp_path):
    st, images = store
    p = tmp_path / "snippets.jsonl"
    lines = [{"image_id": "a", "sentence_id": 0, "start": 0, "end": 2, "text": "w1 w2", "region": 2, "score": 1.0},
             {"image_id": "a", "sentence_id": 1, "start": 0, "end": 1, "text": "w3", "region": 2, "score": 1.0},
             {"image_id": "b", "sentence_id": 2, "start": 0, "end": 1, "text": "w0", "region": 1, "score": 1.0},
             {"image_id": "zz", "sentence_id": 3, "start": 0, "end": 1, "text": "w0", "region": 1, "score": 1.0}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    items = ce.snippet_references(p, st)
    assert items["refs"] == {"a@2": ["w1 w2", "w3"], "b@1": ["w0"]}
    assert np.array_equal(items["regions"][0], images["a"][1][2])
    assert ce.snippet_references(p, st, ["b"])["keys"] == ["b@1"]
    p.write_text(json.dumps(lines[0]) + "\n{broken\n")
    with pytest.raises(DataError, match="snippets.jsonl:2"):
        ce.snippet_references(p, st)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_end_to_end_on_synthetic_scenes(tmp_path, capsys):
    from dvsa.data.catalog import load_dataset
    from dvsa.data.features import FeatureStoreWriter
    from dvsa.data.synthetic import write_synthetic
    from dvsa.data.text import Vocabulary
    from dvsa.scripts.generate_eval import main

    root = write_synthetic(tmp_path / "synth", n_train=4, n_val=3, n_test=0, size=64, seed=1)
    records = load_dataset("synthetic", str(root))
    enc = FakeEncoder()
    with FeatureStoreWriter(tmp_path / "store", {"dim": enc.dim, "producer": "test"}) as w:
        for rec in records:  # the store's regions are the ground-truth boxes: matching is exact
            boxes, feats, image = enc.encode(Image.open(rec.path), boxes=[g.box for g in rec.regions])
            w.add(rec.id, boxes, feats, image, (rec.width, rec.height))
    voc = Vocabulary.build([s.tokens for r in records for s in r.sentences], min_count=1)
    ck = tiny_checkpoint(tmp_path / "gen.pt", voc, enc.dim, {"dim": enc.dim})
    out = tmp_path / "eval" / "metrics.json"
    rc = main(["--checkpoint", str(ck), "--store", str(tmp_path / "store"), "--dataset", "synthetic", "--root",
               str(root), "--split", "val", "--beam", "1,2", "--regions", "--no-java", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["full_frame"]) == {"beam1", "beam2"} and res["n_images"] == 3
    for b in res["full_frame"].values():
        assert set(b["metrics"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}
        assert b["metrics"]["meteor"] is None and b["n_images"] == 3
        caps = json.loads(open(b["captions"]).read())
        assert len(caps) == 3 and set(caps[0]) == {"image_id", "caption"}
    reg = res["regions"]
    assert reg["boxes"] == "match" and reg["mean_iou"] == pytest.approx(1.0)
    n_described = sum(1 for r in records if r.split == "val" for g in r.regions if g.text)
    assert reg["n_regions"] == n_described and reg["beam"] == 1
    assert res["config"]["beams"] == [1, 2]
    printed = capsys.readouterr().out
    assert "full frame, beam 2 (3 images): B1" in printed and "regions (" in printed
    # snippets: the store rows they name, scored against their texts
    snip = tmp_path / "snippets.jsonl"
    snip.write_text("".join(json.dumps({"image_id": r.id, "sentence_id": 0, "start": 0, "end": 1, "text": g.text,
                                        "region": k + 1}) + "\n"
                            for r in records for k, g in enumerate(r.regions)))
    assert main(["--checkpoint", str(ck), "--store", str(tmp_path / "store"), "--dataset", "synthetic", "--root",
                 str(root), "--split", "val", "--snippets", str(snip), "--no-full-frame", "--no-java",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert "full_frame" not in res and res["snippets"]["n_regions"] == n_described
    assert len(json.loads(open(res["snippets"]["captions"]).read())) == n_described
    assert "snippet regions, beam 2" in capsys.readouterr().out  # the generator's beam
    # bad input: a store of other features is refused with a clear message
    bad = tiny_checkpoint(tmp_path / "gen16.pt", voc, 16, {"dim": 16})
    from dvsa.scripts import cli

    assert cli.main(["generate", "eval", "--checkpoint", str(bad), "--store", str(tmp_path / "store"), "--dataset",
                     "synthetic", "--root", str(root), "--split", "val", "--no-java", "--out", str(out)]) == 1
    assert "features of size 8, the generator wants 16" in capsys.readouterr().err


def test_region_items_encode_with_the_real_encoder(tmp_path):
    """Ground-truth boxes featurised in chunks of max_boxes equal boxes featurised one at a time; a degenerate
    box (dropped by the encoder) is counted as unmatched, not shifted onto its neighbour's features."""
    from dvsa.align.regions.config import RegionConfig
    from dvsa.align.regions.encoder import RegionEncoder

    enc = RegionEncoder.from_config(RegionConfig(pretrained=False, max_boxes=2, progress=False))
    a = (np.random.default_rng(0).random((60, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    boxes = [[0, 0, 30, 30], [10, 5, 60, 50], [20, 20, 20.5, 40], [35, 30, 70, 60], [5, 40, 25, 58]]
    rec = ImageRecord("x", "x.png", 70, 60, "test", regions=[Region(b, f"r{k}") for k, b in enumerate(boxes)])
    items = ce.region_items([rec], None, "encode", enc, root=str(tmp_path))
    assert items["keys"] == ["x#0", "x#1", "x#3", "x#4"] and items["n_unmatched"] == 1
    pil = Image.open(tmp_path / "x.png").convert("RGB")
    for key, feat in zip(items["keys"], items["regions"]):
        one = enc.encode(pil, boxes=[boxes[int(key.split("#")[1])]])[1][1]
        assert np.allclose(feat, one, atol=1e-4), key
