import json
import os

import pytest
from dvsa.data.catalog import load_dataset
from dvsa.data.readers.common import DataWarning
from dvsa.data.records import DataError, select_split
from fixtures.formats import CAPTIONS, karpathy_json, make_image


def _write(folder, data, name="dataset_flickr8k.json"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))
    return folder / name


def test_karpathy_folder_root_flickr_style(tmp_path):
    data = karpathy_json([("a", "train"), ("b", "val"), ("c", "test"), ("d", "restval")])
    _write(tmp_path, data)
    for n in "abcd":
        make_image(tmp_path / "images" / f"{n}.jpg")
    recs = load_dataset("karpathy", tmp_path, check_images=True, read_sizes=True)
    assert [r.id for r in recs] == list("abcd")
    assert [r.split for r in recs] == ["train", "val", "test", "restval"]
    assert recs[0].path == os.path.abspath(tmp_path / "images" / "a.jpg")
    assert (recs[0].width, recs[0].height) == (8, 6)
    assert [s.id for r in recs for s in r.sentences] == list(range(20))
    assert recs[1].sentences[0].raw == "b " + CAPTIONS[0]
    assert recs[1].sentences[0].tokens == ["b", "a", "dog", "runs", "on", "the", "grass"]  # from raw, re-tokenized
    assert [r.id for r in select_split(recs, "train")] == ["a", "d"]


def test_karpathy_coco_style_filepath_and_json_root(tmp_path):
    data = karpathy_json([("x", "val"), ("y", "train")], dataset="coco", coco=True, filepath="val2014")
    path = _write(tmp_path / "ann", data, "dataset_coco.json")
    for n in "xy":
        make_image(tmp_path / "coco" / "val2014" / f"{n}.jpg")
    recs = load_dataset("karpathy", path, images_dir=tmp_path / "coco", check_images=True)
    assert [r.id for r in recs] == ["1000", "1001"]
    assert recs[1].path == os.path.abspath(tmp_path / "coco" / "val2014" / "y.jpg")


def test_karpathy_filepath_ignored_when_images_are_flat(tmp_path):
    data = karpathy_json([("x", "val")], coco=True, filepath="val2014")
    _write(tmp_path, data)
    make_image(tmp_path / "x.jpg")
    recs = load_dataset("karpathy", tmp_path, check_images=True)
    assert recs[0].path == os.path.abspath(tmp_path / "x.jpg")


def test_karpathy_bad_inputs(tmp_path):
    (tmp_path / "dataset_x.json").write_text('{"images": [ {"filename": "a.jpg",, } ]}')
    with pytest.raises(DataError, match=r"dataset_x.json:1: malformed JSON"):
        load_dataset("karpathy", tmp_path)
    (tmp_path / "dataset_x.json").write_text('{"imgs": []}')
    with pytest.raises(DataError, match="missing field 'images'"):
        load_dataset("karpathy", tmp_path)
    data = karpathy_json([("a", "train"), ("b", "bogus")])
    (tmp_path / "dataset_x.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[1\] \(b.jpg\): unknown split 'bogus'.*\[unknown_split\]"):
        load_dataset("karpathy", tmp_path, strict=True)
    with pytest.warns(DataWarning, match="1 unknown_split"):
        assert [r.id for r in load_dataset("karpathy", tmp_path)] == ["a"]  # lenient: dropped, counted
    data = karpathy_json([("a", "train"), ("b", "val")])
    data["images"][1]["sentences"][0]["sentid"] = 0
    (tmp_path / "dataset_x.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="duplicate sentid 0"):
        load_dataset("karpathy", tmp_path, strict=True)
    (tmp_path / "dataset_y.json").write_text("{}")
    with pytest.raises(DataError, match="several split files"):
        load_dataset("karpathy", tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no Karpathy split JSON"):
        load_dataset("karpathy", tmp_path / "images")


def test_karpathy_empty_caption_and_missing_sentid(tmp_path):
    data = karpathy_json([("a", "train"), ("b", "val")])
    data["images"][0]["sentences"][2]["raw"] = " ?! "
    del data["images"][1]["sentences"][0]["sentid"]
    _write(tmp_path, data)
    with pytest.warns(DataWarning, match=r"1 empty caption\(s\) dropped.*a.jpg sentid 2"):
        recs = load_dataset("karpathy", tmp_path)
    assert len(recs[0].sentences) == 4
    ids = [s.id for r in recs for s in r.sentences]
    assert len(set(ids)) == len(ids) == 9 and recs[1].sentences[0].id == 10


def test_karpathy_missing_images(tmp_path):
    _write(tmp_path, karpathy_json([("a", "train"), ("b", "val")]))
    make_image(tmp_path / "images" / "a.jpg")
    with pytest.raises(DataError, match=r"1 of 2 image file\(s\) are missing, e.g. .*b\.jpg"):
        load_dataset("karpathy", tmp_path, check_images=True)
    with pytest.warns(DataWarning):
        assert [r.id for r in load_dataset("karpathy", tmp_path, check_images="skip")] == ["a"]
