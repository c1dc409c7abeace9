"""Fault injection for the dataset readers: one test per fault. Each checks that lenient mode drops or repairs
the record and counts it under the right reason (`ReadReport`), and that ``strict=True`` raises a DataError
naming the file, the record and the reason."""
import json
import logging
import math
import os
import warnings

import pytest
from dvsa.data.catalog import last_report, load_dataset
from dvsa.data.readers.common import DataWarning, fill_sizes
from dvsa.data.readers.report import ReadReport
from dvsa.data.records import DataError, ImageRecord
from dvsa.generate.pipeline import PipelineConfig
from dvsa.generate.pipeline.results import assemble_results
from dvsa.generate.pipeline.run import Run
from fixtures.formats import (
    CAPTIONS,
    karpathy_json,
    make_image,
    write_coco,
    write_flickr8k,
)


def faulty(name, root, reason, n=1, match=None, **kw):
    """Lenient: the records and the report (which counts `n` x `reason`); strict: the DataError's text."""
    rep = ReadReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        recs = load_dataset(name, root, report=rep, **kw)
    assert rep.count(reason) == n, rep.summary()
    assert last_report() is rep and rep.records == len(recs)
    json.dumps(rep.summary())  # JSON-able
    assert any(reason in line for line in rep.lines())
    with pytest.raises(DataError) as e:
        load_dataset(name, root, strict=True, **kw)
    msg = str(e.value)
    assert f"[{reason}]" in msg, msg
    if match:
        assert match in msg, msg
    return recs, rep, msg


# ---- Karpathy JSON ----------------------------------------------------------------------------------------

def _karpathy(tmp_path, edit, names=(("a", "train"), ("b", "val")), **kw):
    data = karpathy_json(list(names), **kw)
    edit(data)
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text(json.dumps(data))
    return path


def test_karpathy_non_integer_sentid_abc(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][0]["sentences"][1].update(sentid="abc"))
    recs, rep, msg = faulty("karpathy", path, "bad_sentence_id",
                            match="images[0] (a.jpg).sentences[1]: sentid 'abc' is not an integer")
    assert msg.startswith(str(path))
    ids = [s.id for r in recs for s in r.sentences]
    assert len(ids) == 10 and len(set(ids)) == 10 and all(isinstance(i, int) for i in ids)
    assert recs[0].sentences[1].id == 10  # renumbered after the largest sentid
    assert rep.repaired == {"bad_sentence_id": 1} and rep.dropped == {}


def test_karpathy_duplicate_sentid(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][1]["sentences"][0].update(sentid=0))
    recs, rep, _ = faulty("karpathy", path, "duplicate_sentence_id", match="duplicate sentid 0")
    ids = [s.id for r in recs for s in r.sentences]
    assert len(set(ids)) == len(ids) == 10
    assert rep.repaired == {"duplicate_sentence_id": 1}


def test_karpathy_duplicate_image_id(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][1].update(cocoid=1000), coco=True)
    recs, rep, _ = faulty("karpathy", path, "duplicate_image_id", match="image id '1000' already used")
    assert [r.id for r in recs] == ["1000"] and rep.dropped == {"duplicate_image_id": 1}


def test_karpathy_duplicate_imgid(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][1].update(imgid=0))
    recs, rep, _ = faulty("karpathy", path, "duplicate_image_id", match="imgid 0 already used")
    assert [r.id for r in recs] == ["a", "b"] and rep.repaired == {"duplicate_image_id": 1}


def test_karpathy_non_integer_cocoid(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][0].update(cocoid="x7"), coco=True)
    recs, _, _ = faulty("karpathy", path, "bad_image_id", match="cocoid 'x7' is not an integer")
    assert [r.id for r in recs] == ["a", "1001"]  # the file stem instead


def test_karpathy_missing_filename(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][0].pop("filename"))
    recs, rep, _ = faulty("karpathy", path, "missing_filename", match="images[0]")
    assert [r.id for r in recs] == ["b"] and rep.dropped == {"missing_filename": 1}


def test_karpathy_empty_sentence(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][1]["sentences"][3].update(raw=" ?! "))
    recs, _, _ = faulty("karpathy", path, "empty_sentence", match="images[1] (b.jpg).sentences[3]")
    assert [len(r.sentences) for r in recs] == [5, 4]


def test_karpathy_unknown_split(tmp_path):
    path = _karpathy(tmp_path, lambda d: d["images"][1].update(split="bogus"))
    recs, _, _ = faulty("karpathy", path, "unknown_split", match="unknown split 'bogus'")
    assert [r.id for r in recs] == ["a"]


def test_karpathy_missing_image_file(tmp_path):
    path = _karpathy(tmp_path, lambda d: None)
    make_image(tmp_path / "images" / "a.jpg")
    recs, _, msg = faulty("karpathy", path, "missing_image", check_images="skip", match="image b")
    assert [r.id for r in recs] == ["a"] and "b.jpg not found" in msg


def test_karpathy_clean_file_reports_nothing(tmp_path, caplog):
    path = _karpathy(tmp_path, lambda d: None)
    caplog.set_level(logging.INFO, logger="dvsa.data")
    rep = ReadReport()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(load_dataset("karpathy", path, report=rep, strict=True)) == 2
    assert not rep and rep.summary()["dropped"] == {} and rep.summary()["records"] == 2
    assert any("nothing dropped or repaired" in r.message for r in caplog.records)


def test_fault_is_logged_as_warning(tmp_path, caplog):
    path = _karpathy(tmp_path, lambda d: d["images"][0]["sentences"][1].update(sentid="abc"))
    caplog.set_level(logging.INFO, logger="dvsa.data")
    with pytest.warns(DataWarning, match="1 bad_sentence_id"):
        load_dataset("karpathy", path)
    warned = [r.message for r in caplog.records if r.name == "dvsa.data" and r.levelno == logging.WARNING]
    assert warned[0].startswith("karpathy: 2 records read; 1 repaired")
    assert "repaired 1 x bad_sentence_id" in warned[1]


# ---- COCO instances / captions ----------------------------------------------------------------------------

def _coco(tmp_path, bbox=None, caption=None, extra_caption=None):
    root = write_coco(tmp_path / "coco", split_name="val2017", n_images=2)
    inst_path = root / "annotations" / "instances_val2017.json"
    cap_path = root / "annotations" / "captions_val2017.json"
    if bbox is not None:  # annotation 100 of image 42 (20 x 10 px)
        inst = json.loads(inst_path.read_text())
        inst["annotations"][0]["bbox"] = bbox
        inst_path.write_text(json.dumps(inst))
    if caption is not None or extra_caption is not None:
        caps = json.loads(cap_path.read_text())
        if caption is not None:
            caps["annotations"][0]["caption"] = caption
        if extra_caption is not None:
            caps["annotations"].append(extra_caption)
        cap_path.write_text(json.dumps(caps))
    return root


def test_coco_nan_box(tmp_path):
    root = _coco(tmp_path, bbox=[float("nan"), 2.0, 5.0, 4.0])
    recs, rep, msg = faulty("coco", root, "box_not_finite", split_name="val2017", match="annotation 100 (image 42)")
    assert "instances_val2017.json" in msg
    assert [g.id for g in recs[0].regions] == ["101"] and rep.dropped == {"box_not_finite": 1}


def test_coco_inf_box(tmp_path):
    root = _coco(tmp_path, bbox=[1.0, 2.0, float("inf"), 4.0])
    faulty("coco", root, "box_not_finite", split_name="val2017")


def test_coco_off_image_box_clipped(tmp_path):
    root = _coco(tmp_path, bbox=[-3.0, 5.0, 30.0, 4.0])  # image 42 is 20 x 10
    recs, rep, _ = faulty("coco", root, "box_clipped", split_name="val2017", match="clipped to the 20x10 image")
    assert recs[0].regions[0].box == [0.0, 5.0, 20.0, 9.0]
    assert rep.repaired == {"box_clipped": 1} and rep.dropped == {}


def test_coco_empty_box(tmp_path):
    root = _coco(tmp_path, bbox=[1.0, 2.0, 0.0, 4.0])
    recs, _, _ = faulty("coco", root, "box_empty", split_name="val2017", match="has no area")
    assert [g.id for g in recs[0].regions] == ["101"]


def test_coco_negative_area_box(tmp_path):
    root = _coco(tmp_path, bbox=[5.0, 2.0, -2.0, 4.0])
    faulty("coco", root, "box_empty", split_name="val2017")


def test_coco_box_entirely_outside(tmp_path):
    root = _coco(tmp_path, bbox=[25.0, 2.0, 5.0, 4.0])  # x from 25 on a 20 px wide image
    recs, _, _ = faulty("coco", root, "box_outside", split_name="val2017", match="entirely outside")
    assert [g.id for g in recs[0].regions] == ["101"]


def test_coco_empty_caption(tmp_path):
    root = _coco(tmp_path, caption="...")
    recs, _, msg = faulty("coco", root, "empty_sentence", split_name="val2017", match="captions_val2017.json")
    assert len(recs[0].sentences) == 4


def test_coco_duplicate_caption_id(tmp_path):
    root = _coco(tmp_path, extra_caption={"id": 500, "image_id": 43, "caption": "A cat ."})
    recs, _, _ = faulty("coco", root, "duplicate_sentence_id", split_name="val2017")
    ids = [s.id for r in recs for s in r.sentences]
    assert len(ids) == len(set(ids)) == 10


def test_coco_caption_of_unknown_image(tmp_path):
    root = _coco(tmp_path, extra_caption={"id": 999, "image_id": 77, "caption": "A cat ."})
    recs, _, _ = faulty("coco", root, "orphan_annotation", split_name="val2017", match="annotation 999 of image 77")
    assert [r.id for r in recs] == ["42", "43"]


def test_coco_missing_image_file(tmp_path):
    root = _coco(tmp_path)
    os.remove(root / "val2017" / "000000000043.jpg")
    recs, _, _ = faulty("coco", root, "missing_image", split_name="val2017", check_images="skip")
    assert [r.id for r in recs] == ["42"]


def test_coco_crowd_box_is_skipped_not_an_error(tmp_path):
    root = write_coco(tmp_path / "coco", split_name="val2017", n_images=1, crowd_on=101)
    rep = ReadReport()
    recs = load_dataset("coco", root, split_name="val2017", report=rep, strict=True)
    assert [g.id for g in recs[0].regions] == ["100"]
    assert rep.summary()["skipped"] == {"crowd_box": 1} and not rep


# ---- Visual Genome region descriptions --------------------------------------------------------------------

def _vg(tmp_path, edit=None, sizes=True):
    root = tmp_path / "vg"
    root.mkdir()
    desc = [{"id": iid, "regions": [
        {"region_id": 10 * iid, "image_id": iid, "phrase": "a red ball", "x": 1, "y": 2, "width": 3, "height": 4},
        {"region_id": 10 * iid + 1, "image_id": iid, "phrase": "grass", "x": 0, "y": 5, "width": 10, "height": 2},
    ]} for iid in (1, 2, 3)]
    if edit:
        edit(desc)
    (root / "region_descriptions.json").write_text(json.dumps(desc))
    if sizes:
        (root / "image_data.json").write_text(json.dumps([{"image_id": i, "width": 12, "height": 9} for i in (1, 2, 3)]))
    (root / "densecap_splits.json").write_text(json.dumps({"train": [1, 2], "val": [3], "test": []}))
    return root


def _region(k, j, **kw):
    return lambda desc: desc[k]["regions"][j].update(**kw)


def test_vg_nan_box(tmp_path):
    root = _vg(tmp_path, _region(0, 0, x=float("nan")))
    recs, _, msg = faulty("visual_genome", root, "box_not_finite", match="[0].regions[0] (region 10, image 1)")
    assert "region_descriptions.json" in msg and [g.id for g in recs[0].regions] == ["11"]


def test_vg_off_image_box_clipped(tmp_path):
    root = _vg(tmp_path, _region(1, 1, x=4, width=20))  # 12 px wide image
    recs, _, _ = faulty("visual_genome", root, "box_clipped", match="clipped to the 12x9 image")
    assert recs[1].regions[1].box == [4.0, 5.0, 12.0, 7.0]


def test_vg_off_image_box_clipped_without_sizes(tmp_path):
    root = _vg(tmp_path, _region(1, 1, x=-2, width=5), sizes=False)
    recs, _, _ = faulty("visual_genome", root, "box_clipped")
    assert recs[1].regions[1].box == [0.0, 5.0, 3.0, 7.0]


def test_vg_empty_box(tmp_path):
    root = _vg(tmp_path, _region(2, 0, height=0))
    recs, _, _ = faulty("visual_genome", root, "box_empty")
    assert [g.id for g in recs[2].regions] == ["31"]


def test_vg_box_entirely_outside(tmp_path):
    root = _vg(tmp_path, _region(2, 0, y=50))
    recs, _, _ = faulty("visual_genome", root, "box_outside")
    assert [g.id for g in recs[2].regions] == ["31"]


def test_vg_empty_phrase(tmp_path):
    root = _vg(tmp_path, _region(0, 1, phrase="  "))
    recs, _, _ = faulty("visual_genome", root, "empty_phrase")
    assert [g.id for g in recs[0].regions] == ["10"]


def test_vg_duplicate_image_id(tmp_path):
    root = _vg(tmp_path, lambda desc: desc.append(dict(desc[0])))
    recs, _, _ = faulty("visual_genome", root, "duplicate_image_id", match="[3] (image 1): image id already given by [0]")
    assert [r.id for r in recs] == ["1", "2", "3"]


def test_vg_image_in_no_split(tmp_path):
    root = _vg(tmp_path)
    (root / "densecap_splits.json").write_text(json.dumps({"train": [1, 2], "val": [], "test": []}))
    recs, _, _ = faulty("visual_genome", root, "no_split", match="image 3: in no split")
    assert [r.id for r in recs] == ["1", "2"]


def test_vg_split_entry_without_regions(tmp_path):
    root = _vg(tmp_path)
    (root / "densecap_splits.json").write_text(json.dumps({"train": [1, 2], "val": [3], "test": [4]}))
    recs, _, _ = faulty("visual_genome", root, "no_captions", match="image 4: in the split file")
    assert [r.id for r in recs] == ["1", "2", "3"]


def test_vg_missing_image_file(tmp_path):
    root = _vg(tmp_path)
    (root / "images").mkdir()
    for i in (1, 3):
        (root / "images" / f"{i}.jpg").write_bytes(b"")
    recs, _, _ = faulty("visual_genome", root, "missing_image", check_images="skip")
    assert [r.id for r in recs] == ["1", "3"]


# ---- Flickr30k Entities XML -------------------------------------------------------------------------------

def _box(x1, y1, x2, y2):
    return f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"


def _entities(tmp_path, box=(1, 2, 20, 30), sentence=None, xml=True):
    root = tmp_path / "ent"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    lines = ["[/EN#18/people A man] with [/EN#19/bodyparts ears] .", sentence or "[/EN#18/people Someone] waves ."]
    (root / "Sentences" / "100.txt").write_text("\n".join(lines) + "\n")
    if xml:
        (root / "Annotations" / "100.xml").write_text(
            "<annotation><size><width>50</width><height>40</height></size>"
            f"<object><name>18</name>{_box(*box)}</object>"
            f"<object><name>19</name>{_box(5, 5, 9, 8)}</object></annotation>")
    make_image(root / "flickr30k-images" / "100.jpg")
    (root / "train.txt").write_text("100\n")
    return root


def test_entities_nan_box(tmp_path):
    root = _entities(tmp_path, box=("nan", 2, 20, 30))
    recs, _, msg = faulty("flickr30k_entities", root, "box_not_finite", match="<object> 1 (18)")
    assert "100.xml" in msg
    assert [g.id for g in recs[0].regions] == ["19"]
    assert recs[0].phrases[0].region_ids == []  # entity 18 lost its only box


def test_entities_off_image_box_clipped(tmp_path):
    root = _entities(tmp_path, box=(1, 2, 60, 30))  # 50 px wide
    recs, _, _ = faulty("flickr30k_entities", root, "box_clipped", match="clipped to the 50x40 image")
    assert recs[0].regions[0].box == [0.0, 1.0, 50.0, 30.0]


def test_entities_zero_based_box_clipped(tmp_path):
    root = _entities(tmp_path, box=(0, 2, 20, 30))  # 1-based coordinates: xmin 0 is one pixel off the image
    recs, _, _ = faulty("flickr30k_entities", root, "box_clipped")
    assert recs[0].regions[0].box == [0.0, 1.0, 20.0, 30.0]


def test_entities_empty_box(tmp_path):
    root = _entities(tmp_path, box=(20, 2, 10, 30))
    recs, _, _ = faulty("flickr30k_entities", root, "box_empty")
    assert [g.id for g in recs[0].regions] == ["19"]


def test_entities_box_entirely_outside(tmp_path):
    root = _entities(tmp_path, box=(70, 2, 90, 30))
    recs, _, _ = faulty("flickr30k_entities", root, "box_outside")
    assert [g.id for g in recs[0].regions] == ["19"]


def test_entities_empty_sentence(tmp_path):
    root = _entities(tmp_path, sentence="[/EN#0/notvisual !!] ...")
    recs, _, msg = faulty("flickr30k_entities", root, "empty_sentence")
    assert "100.txt:2" in msg and len(recs[0].sentences) == 1


def test_entities_phrase_without_word(tmp_path):
    root = _entities(tmp_path, sentence="[/EN#18/people Someone] says [/EN#0/other !!] .")
    recs, _, _ = faulty("flickr30k_entities", root, "empty_phrase", match="phrase '!!'")
    assert [p.text for p in recs[0].phrases] == ["A man", "ears", "Someone"]


def test_entities_missing_annotation_file(tmp_path):
    root = _entities(tmp_path, xml=False)
    recs, rep, _ = faulty("flickr30k_entities", root, "no_annotation")
    assert recs[0].regions == [] and rep.summary()["incomplete"] == {"no_annotation": 1}


def test_entities_image_in_two_splits(tmp_path):
    root = _entities(tmp_path)
    (root / "val.txt").write_text("100\n")
    recs, _, _ = faulty("flickr30k_entities", root, "conflicting_split", match="both the train and the val split")
    assert recs[0].split == "val"


def test_entities_missing_image_file(tmp_path):
    root = _entities(tmp_path)
    os.remove(root / "flickr30k-images" / "100.jpg")
    recs, _, _ = faulty("flickr30k_entities", root, "missing_image", check_images="skip")
    assert recs == []


# ---- Flickr8k, folder, sizes ------------------------------------------------------------------------------

def test_flickr8k_empty_caption(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    token = root / "Flickr8k.token.txt"
    lines = token.read_text().splitlines()
    lines[2] = "a.jpg#2\t ... "
    token.write_text("\n".join(lines) + "\n")
    recs, _, msg = faulty("flickr8k", root, "empty_sentence")
    assert "Flickr8k.token.txt:3" in msg and len(recs[0].sentences) == 4


def test_flickr8k_image_in_no_split(tmp_path):
    root = write_flickr8k(tmp_path / "f8k", train=("a", "b"), dev=("d",))
    token = root / "Flickr8k.token.txt"
    token.write_text(token.read_text() + "".join(f"z.jpg#{k}\t{c}\n" for k, c in enumerate(CAPTIONS)))
    recs, _, _ = faulty("flickr8k", root, "no_split", match="z.jpg")
    assert [r.id for r in recs] == ["a", "b", "d"]


def test_flickr8k_split_entry_without_captions(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    (root / "Flickr_8k.testImages.txt").write_text("q.jpg\n")
    faulty("flickr8k", root, "no_captions", match="q.jpg")


def test_flickr8k_missing_image_file(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    os.remove(root / "images" / "c.jpg")
    recs, _, _ = faulty("flickr8k", root, "missing_image", check_images="skip", match="image c")
    assert [r.id for r in recs] == ["a", "b", "d"]


def test_folder_unreadable_image(tmp_path):
    make_image(tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    recs, _, msg = faulty("folder", tmp_path, "unreadable_image")
    assert [r.id for r in recs] == ["a"] and "bad.jpg" in msg


def test_unreadable_image_size(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    rep = ReadReport()
    with pytest.warns(DataWarning):
        recs = fill_sizes([ImageRecord(id="bad", path=str(tmp_path / "bad.jpg"))], rep)
    assert recs[0].width is None and rep.summary()["incomplete"] == {"size_unreadable": 1}
    with pytest.raises(DataError, match=r"bad.jpg: image bad: size unreadable.*\[size_unreadable\]"):
        fill_sizes([ImageRecord(id="bad", path=str(tmp_path / "bad.jpg"))], ReadReport(strict=True))


# ---- synthetic (generated data is checked too) ------------------------------------------------------------

def test_synthetic_nan_box(tmp_path):
    from dvsa.data.synthetic import SynthConfig, write_synthetic

    root = tmp_path / "synth"
    write_synthetic(root, SynthConfig(n_train=2, n_val=1, n_test=1))
    gt_path = root / "groundtruth.json"
    gt = json.loads(gt_path.read_text())
    first = next(iter(gt["images"]))
    obj = gt["images"][first]["objects"][0]
    obj["box"][0] = math.nan
    gt_path.write_text(json.dumps(gt))
    recs, _, msg = faulty("synthetic", root, "box_not_finite", match=f"image {first}, object {obj['id']}")
    rec = next(r for r in recs if r.id == first)
    assert str(obj["id"]) not in {g.id for g in rec.regions}
    assert all(str(obj["id"]) not in p.region_ids for p in rec.phrases)


# ---- the report itself -----------------------------------------------------------------------------------

def test_report_summary_and_lines():
    rep = ReadReport("x")
    rep.add("box_clipped", "a.json", "annotation 1", "box clipped")
    rep.add("empty_sentence", "b.txt", "image 2", line=7)
    rep.add("empty_sentence", "b.txt", "image 3", line=9)
    rep.records = 5
    s = rep.summary()
    assert s["dropped"] == {"empty_sentence": 2} and s["repaired"] == {"box_clipped": 1}
    assert s["examples"]["empty_sentence"][0].startswith("b.txt:7: image 2: ")
    assert rep.lines()[0] == "x: 5 records read; 2 dropped, 1 repaired"
    assert json.loads(json.dumps(s)) == s
    other = ReadReport("y")
    other.add("empty_sentence", "c.txt", "image 4")
    assert rep.merge(other).dropped == {"empty_sentence": 3}


def test_pipeline_records_the_readers_report_and_honours_strict_data(tmp_path, caplog):
    """The pipeline logs what the reader repaired, puts the report in results.json's "data", and with
    strict_data stops at the faulty record before any stage runs."""
    path = _karpathy(tmp_path, lambda d: d["images"][0]["sentences"][1].update(sentid="abc"),
                     names=(("a", "train"), ("b", "train"), ("c", "test")))
    lines = []
    run = Run(PipelineConfig(dataset="karpathy", root=str(path), eval_split="test"), tmp_path / "run", lines.append)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="dvsa.data"):
        warnings.simplefilter("ignore", DataWarning)
        run.load_records()
    assert any("bad_sentence_id" in r.getMessage() for r in caplog.records), caplog.records
    data = assemble_results(run)["data"]
    assert data["repaired"] == {"bad_sentence_id": 1} and data["records"] == 3
    json.dumps(data)
    strict = Run(PipelineConfig(dataset="karpathy", root=str(path), eval_split="test", strict_data=True),
                 tmp_path / "run2", lines.append)
    with pytest.raises(DataError, match=r"sentid 'abc' is not an integer.*\[bad_sentence_id\]"):
        strict.load_records()
