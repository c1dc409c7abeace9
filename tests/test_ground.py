"""Real-photo grounding (align/ground.py, data/coco_words.py, the Flickr8k + Entities join): hand-made boxes
whose answers are computed by hand."""
import json

import numpy as np
import pytest
import torch
from dvsa.align.ground import evaluate_grounding, format_grounding_table, size_class
from dvsa.data.coco_words import category_phrases, find_category_words, plural
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Phrase, Region, Sentence
from dvsa.data.text import Vocabulary
from snippets_fakes import FakeAligner

# Store rows of image "a" (100 x 100): 0 whole image, 1 top-left 50x50, 2 bottom-right 50x50, 3 a 40x100 strip
# (the largest box that is not the whole image). Region features: row 0 -> e2, row 1 -> e0, row 2 -> e1, row 3 -> 0.
ROWS = [[0, 0, 100, 100], [0, 0, 50, 50], [50, 50, 100, 100], [0, 0, 40, 100]]


def world(tmp_path):
    writer = FeatureStoreWriter(tmp_path / "store", {"dim": 3}, part_size=4)
    feats = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0.0]])
    writer.add("a", np.array(ROWS, dtype=float), feats, feats[0], (100, 100))
    writer.close()
    toks = ["the", "dog", "and", "a", "cat", "in", "the", "park"]
    regions = [
        Region([0, 0, 48, 48], None, "animals", "d"),  # the dog: IoU 0.92 with row 1; no centre but row 1's inside
        Region([55, 0, 100, 100], None, "animals", "c"),  # the cat: no row reaches IoU 0.5; row 2's centre inside
        Region([90, 90, 98, 98], None, None, "e"),  # small, reached by nothing
        Region([50, 50, 100, 100], None, None, "f", source_area=10000.0),  # 50x50 here, 100x100 in the original
        Region([0, 0, 100, 100], None, None, "g"),  # reached by the whole-image row only
    ]
    phrases = [Phrase(0, 0, 2, "the dog", ["d"], ["animals"]), Phrase(0, 3, 5, "a cat", ["c"], ["animals"]),
               Phrase(0, 6, 8, "the park", [], ["scene"])]
    rec = ImageRecord("a", "a.jpg", 100, 100, "test", [Sentence(0, " ".join(toks), toks)], regions, phrases)
    vocab = Vocabulary(["the", "dog", "and", "a", "cat", "in", "park"])
    table = torch.zeros(len(vocab), 3)
    table[vocab.stoi["dog"], 0] = 1.0
    table[vocab.stoi["cat"], 1] = 1.0
    for w in ("the", "and", "a", "in", "park"):
        table[vocab.stoi[w], 2] = 0.6
    return [rec], FeatureStore(tmp_path / "store"), FakeAligner(table), vocab


def acc(res, level, method):
    e = res[level][method]
    return e["iou_accuracy"], e["pointing_accuracy"]


def test_baselines_by_hand(tmp_path):
    records, store, _, _ = world(tmp_path)
    res = evaluate_grounding(None, None, store, records)
    assert res["methods"] == ["whole_image", "largest_box", "random_box", "best_box"]
    assert res["n_phrases"] == 2 and res["n_phrases_no_box"] == 1 and res["n_words"] == 2
    # dog: whole (0, 0), largest row 3 (0, 0), random (1/4, 1/4), best (1, 1)
    # cat: whole (0, 0), largest (0, 0), random (0, 1/4), best (0, 1)
    assert acc(res, "phrases", "whole_image") == (0.0, 0.0)
    assert acc(res, "phrases", "largest_box") == (0.0, 0.0)
    assert acc(res, "phrases", "random_box") == pytest.approx((1 / 8, 1 / 4))
    assert acc(res, "phrases", "best_box") == (0.5, 1.0)
    assert acc(res, "words", "random_box") == pytest.approx((1 / 8, 1 / 4))
    assert res["by_type"]["animals"]["n"] == 2 and "scene" not in res["by_type"]
    rec = res["box_recall"]
    # d yes (row 1), c no, e no, f yes (row 2), g yes (row 0 only)
    assert (rec["all"]["n"], rec["all"]["recall"], rec["all"]["recall_proposals"]) == (5, 3 / 5, 2 / 5)
    assert (rec["small"]["n"], rec["small"]["recall"]) == (1, 0.0)
    assert (rec["medium"]["n"], rec["medium"]["recall"]) == (2, 0.5)  # d and c
    assert (rec["large"]["n"], rec["large"]["recall"], rec["large"]["recall_proposals"]) == (2, 1.0, 0.5)  # f, g
    assert res["mean_kept_regions"] == 4 and res["beta"] is None
    assert "pointing" in format_grounding_table(res)


def test_aligner_by_hand(tmp_path):
    records, store, model, vocab = world(tmp_path)
    res = evaluate_grounding(model, vocab, store, records, beta=0.0)
    # argmax: dog -> row 1 (IoU and pointing right), cat -> row 2 (IoU wrong, centre inside)
    assert acc(res, "phrases", "argmax") == (0.5, 1.0)
    assert acc(res, "phrases", "mrf") == (0.5, 1.0)
    assert acc(res, "words", "argmax") == (0.5, 1.0)
    assert acc(res, "phrases", "random_box") == pytest.approx((1 / 8, 1 / 4))  # the same items with a model
    assert res["methods"][:2] == ["mrf", "argmax"] and res["beta"] == 0.0
    assert res["by_type"]["animals"]["argmax"]["pointing_accuracy"] == 1.0
    big = evaluate_grounding(model, vocab, store, records, beta=50.0)  # one snippet: every word on one region
    assert big["phrases"]["mrf"]["iou_accuracy"] <= 0.5
    assert "MRF snippets" in format_grounding_table(big)


def test_size_classes():
    assert [size_class(a) for a in (0, 1023.9, 1024, 9215, 9216, 1e6)] == ["small", "small", "medium", "medium",
                                                                          "large", "large"]


def test_cli_baselines(tmp_path, monkeypatch, capsys):
    import dvsa.data.catalog
    import dvsa.scripts.align_ground as cli

    records, _, _, _ = world(tmp_path)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    out = tmp_path / "g.json"
    assert cli.main(["--store", str(tmp_path / "store"), "--dataset", "x", "--root", "r", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["phrases"]["best_box"]["pointing_accuracy"] == 1.0 and res["box_recall"]["all"]["n"] == 5
    assert "largest kept box" in capsys.readouterr().out


def test_cli_on_a_run_folder_grounds_with_the_runs_box_score_and_beta(tmp_path, monkeypatch, capsys):
    """A pipeline run folder as --checkpoint: its box score at its weight and its beta, as the pipeline does."""
    import dvsa.align.loading
    import dvsa.data.catalog
    import dvsa.scripts.align_ground as cli
    from dvsa.align.boxscore import BoxScoreConfig, BoxScorer, save_box_scorer

    records, _, model, vocab = world(tmp_path)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    monkeypatch.setattr(dvsa.align.loading, "load_model", lambda path, device="cpu": (model, vocab, None))
    run = tmp_path / "run"
    (run / "align").mkdir(parents=True)
    (run / "align" / "model.pt").write_bytes(b"")  # found by resolve_checkpoint; load_model is the fake's
    scorer = BoxScorer(3, BoxScoreConfig(geometry_bins=0))
    with torch.no_grad():
        scorer.linear.weight[0, 2] = 10.0  # only the whole image (feature e2) looks like an object
    save_box_scorer(run / "box_score.pt", scorer)
    (run / "box_score.done.json").write_text(json.dumps({"result": {"weight": 5.0}}))
    (run / "snippets.done.json").write_text(json.dumps({"result": {"beta": 0.0}}))
    base = ["--store", str(tmp_path / "store"), "--dataset", "x", "--root", "r", "--checkpoint", str(run)]
    assert cli.main(base + ["--out", str(tmp_path / "run.json")]) == 0
    assert "box score weight 5" in capsys.readouterr().out
    assert cli.main(base + ["--box-weight", "0", "--out", str(tmp_path / "bare.json")]) == 0
    with_score, bare = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("run", "bare"))
    assert with_score["box_weight"] == 5.0 and with_score["beta"] == 0.0
    assert with_score["beta_source"].endswith("snippets.done.json")
    assert acc(with_score, "phrases", "argmax") == (0.0, 0.0)  # the dog pulled onto the whole image
    assert bare["box_weight"] == 0.0 and acc(bare, "phrases", "argmax") == (0.5, 1.0)  # as test_aligner_by_hand


# -- COCO category words -----------------------------------------------------------------------------------

def test_category_words():
    toks = ["two", "men", "ride", "a", "motorbike", "past", "a", "hot", "dog", "stand", "and", "a", "teddy", "bear"]
    got = find_category_words(toks)
    assert got == [(1, 2, "person"), (4, 5, "motorcycle"), (7, 9, "hot dog"), (12, 14, "teddy bear")]
    assert find_category_words(toks, {"person"}) == [(1, 2, "person")]  # absent categories are not scored
    assert find_category_words(["three", "dogs", "and", "some", "bikes"]) == [(1, 2, "dog"), (4, 5, "bicycle")]
    assert find_category_words(["a", "cell", "phone", "on", "the", "sofa"]) == [(1, 3, "cell phone"), (5, 6, "couch")]
    assert plural("bus") == "buses" and plural("knife") == "knives" and plural("puppy") == "puppies"


def test_coco_instances_to_phrases(tmp_path):
    from dvsa.align.ground import grounding_records
    from dvsa.data.catalog import load_dataset

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    images = [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 100}]
    caps = [{"id": 10, "image_id": 1, "caption": "Two dogs and a man near a hot dog."},
            {"id": 11, "image_id": 1, "caption": "A cat sits."}]
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 54, "name": "hot dog"},
            {"id": 17, "name": "cat"}]
    inst = [{"id": 100, "image_id": 1, "category_id": 18, "bbox": [0, 0, 50, 50], "iscrowd": 0, "area": 1},
            {"id": 101, "image_id": 1, "category_id": 18, "bbox": [60, 0, 40, 40], "iscrowd": 0, "area": 1},
            {"id": 102, "image_id": 1, "category_id": 18, "bbox": [0, 50, 200, 50], "iscrowd": 1, "area": 1},
            {"id": 103, "image_id": 1, "category_id": 54, "bbox": [150, 0, 20, 10], "iscrowd": 0, "area": 1},
            {"id": 104, "image_id": 1, "category_id": 1, "bbox": [100, 0, 50, 90], "iscrowd": 1, "area": 1}]
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": caps}))
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": inst, "categories": cats}))
    rec = load_dataset("coco", str(root))[0]
    ph = category_phrases(rec)
    # "dogs" (plural) -> both non-crowd dogs; "man": the only person is a crowd box -> not scored;
    # "hot dog" is one hot dog (not a dog); "cat": no cat instance -> not scored
    assert [(p.sentence_id, p.start, p.end, p.types, sorted(p.region_ids)) for p in ph] == [
        (10, 1, 2, ["dog"], ["100", "101"]), (10, 7, 9, ["hot dog"], ["103"])]
    assert grounding_records([rec])[0].phrases == ph and rec.phrases == []  # copies; the record is untouched


# -- Flickr8k + Entities join ------------------------------------------------------------------------------

def write_flickr8k_with_entities(tmp_path):
    from PIL import Image

    root = tmp_path / "flickr8k"
    (root / "images").mkdir(parents=True)
    for n in ("111_aaa.jpg", "222_bbb.jpg"):
        Image.new("RGB", (224, 224)).save(root / "images" / n)
    (root / "Flickr8k.token.txt").write_text(
        "111_aaa.jpg#0\tA blonde woman holds a dog .\n"
        "111_aaa.jpg#1\tA dog in the park\n"
        "111_aaa.jpg#2\tA basketball\n"
        "222_bbb.jpg#0\tA cat .\n")
    (root / "Flickr_8k.trainImages.txt").write_text("111_aaa.jpg\n222_bbb.jpg\n")
    ent = tmp_path / "flickr8k-entities"
    (ent / "Sentences").mkdir(parents=True)
    (ent / "Annotations").mkdir()
    (ent / "Sentences" / "111.txt").write_text(
        "[/EN#2/animals A dog] in [/EN#3/scene the park]\n"
        "[/EN#1/people A blond woman] holds [/EN#2/animals a dog] .\n"
        "[/EN#1/people A basketball player] dribbles [/EN#5/other the ball] to [/EN#0/notvisual the hoop] .\n")
    (ent / "Annotations" / "111.xml").write_text(
        "<annotation><size><width>500</width><height>400</height><depth>3</depth></size>"
        "<object><name>1</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>250</xmax><ymax>200</ymax></bndbox></object>"
        "<object><name>2</name><name>5</name><bndbox><xmin>251</xmin><ymin>201</ymin><xmax>500</xmax><ymax>400</ymax>"
        "</bndbox></object>"
        "<object><name>3</name><scene>1</scene></object></annotation>")
    (ent / "caption_alignment.tsv").write_text(
        "flickr8k_file\tflickr8k_caption\tflickr30k_id\tentities_line\tmatch\tsimilarity\n"
        "111_aaa.jpg\t0\t111\t1\tnear\t0.98\n"
        "111_aaa.jpg\t1\t111\t0\texact\t1.000\n"
        "111_aaa.jpg\t2\t111\t2\tnear\t0.40\n")
    return root, ent


def test_entities_join(tmp_path):
    from dvsa.data.catalog import load_dataset
    from dvsa.data.readers.report import ReadReport

    root, ent = write_flickr8k_with_entities(tmp_path)
    report = ReadReport()
    recs = {r.id: r for r in load_dataset("flickr8k", str(root), report=report)}  # the sibling folder, found
    a = recs["111_aaa"]
    s0, s1, s2 = a.sentences
    assert s0.tokens == ["a", "blonde", "woman", "holds", "a", "dog"]
    got = [(p.sentence_id, p.start, p.end, p.region_ids, p.types) for p in a.phrases]
    assert got == [
        (s0.id, 0, 3, ["1"], ["people"]),  # "A blond woman" (near) -> "a blonde woman"
        (s0.id, 4, 6, ["2"], ["animals"]),
        (s1.id, 0, 2, ["2"], ["animals"]),  # caption #1 is the Entities line 0
        (s1.id, 3, 5, [], ["scene"]),  # scene: kept without a box
        (s2.id, 0, 2, ["1"], ["people"]),  # "a basketball player" -> "a basketball"; "the ball", "the hoop" dropped
    ]
    sx, sy = 224 / 500, 224 / 400
    boxes = {(r.id, tuple(r.box), r.source_area, r.label) for r in a.regions}
    assert boxes == {("1", (0.0, 0.0, 250 * sx, 200 * sy), 250.0 * 200, "people"),
                     ("2", (250 * sx, 200 * sy, 500 * sx, 400 * sy), 250.0 * 200, "animals"),
                     ("5", (250 * sx, 200 * sy, 500 * sx, 400 * sy), 250.0 * 200, "other")}
    assert report.count("phrase_unmapped") == 2  # the ball, the hoop
    assert report.count("phrase_respanned") == 2  # blond -> blonde, basketball player -> basketball
    assert report.count("phrase_no_box") == 1
    b = recs["222_bbb"]  # no Entities annotation: as without the folder
    assert b.phrases == [] and b.regions == []

    plain = load_dataset("flickr8k", str(root), entities="none")
    assert all(not r.phrases and not r.regions for r in plain)
    moved = tmp_path / "elsewhere"
    ent.rename(moved)
    again = {r.id: r for r in load_dataset("flickr8k", str(root), entities=str(moved))}
    assert again["111_aaa"].phrases == a.phrases
    assert all(not r.phrases for r in load_dataset("flickr8k", str(root)))  # no sibling folder any more


def test_entities_grounding_end_to_end(tmp_path):
    """The joined records through the evaluation: boxes on the 224 x 224 image."""
    from dvsa.data.catalog import load_dataset

    root, _ = write_flickr8k_with_entities(tmp_path)
    recs = [r for r in load_dataset("flickr8k", str(root)) if r.id == "111_aaa"]
    writer = FeatureStoreWriter(tmp_path / "store", {"dim": 2}, part_size=4)
    writer.add("111_aaa", np.array([[0, 0, 224, 224], [0, 0, 112, 112], [112, 112, 224, 224]], dtype=float),
               np.zeros((3, 2)), np.zeros(2), (224, 224))
    writer.close()
    res = evaluate_grounding(None, None, FeatureStore(tmp_path / "store"), recs)
    assert res["n_phrases"] == 4 and res["n_phrases_no_box"] == 1
    assert res["phrases"]["best_box"]["iou_accuracy"] == 1.0
    assert res["phrases"]["random_box"]["iou_accuracy"] == pytest.approx(1 / 3)
    assert res["box_recall"]["all"] == {"n": 2, "recall": 1.0, "recall_proposals": 1.0}  # two distinct boxes
    assert res["box_recall"]["large"]["n"] == 2  # 250 x 200 in the original's pixels
