import json
import os

import pytest
from dvsa.data.catalog import load_dataset
from dvsa.data.readers.common import DataWarning
from dvsa.data.records import DataError, select_split
from fixtures.formats import CAPTIONS, write_coco


def test_coco_fixture(tmp_path):
    root = write_coco(tmp_path / "coco", split_name="val2017", n_images=3, crowd_on=103)
    recs = load_dataset("coco", root, split_name="val2017", split="val", check_images=True)
    assert [r.id for r in recs] == ["42", "43", "44"]
    assert all(r.split == "val" for r in recs) and len(select_split(recs, "dev")) == 3
    r = recs[0]
    assert r.path == os.path.abspath(root / "val2017" / "000000000042.jpg")
    assert (r.width, r.height) == (20, 10)
    assert [s.id for s in r.sentences] == [500, 501, 502, 503, 504]  # ordered by annotation id
    assert r.sentences[0].raw == CAPTIONS[4]
    # [x, y, w, h] -> [x1, y1, x2, y2]; category names as labels; annotation ids as region ids
    assert [(g.box, g.label, g.id) for g in r.regions] == [
        ([1.0, 2.0, 6.0, 6.0], "dog", "100"), ([0.5, 0.5, 10.5, 8.5], "person", "101")]
    assert [g.id for g in recs[1].regions] == ["102"]  # 103 is a crowd box: skipped by default
    recs = load_dataset("coco", root, split_name="val2017", crowd=True)
    assert [g.id for g in recs[1].regions] == ["102", "103"]


def test_coco_without_instances_and_bad_files(tmp_path):
    root = write_coco(tmp_path / "coco", split_name="train2017", n_images=2)
    os.remove(root / "annotations" / "instances_train2017.json")
    recs = load_dataset("coco", root)
    assert len(recs) == 2 and all(r.regions == [] for r in recs)
    with pytest.raises(DataError, match="captions_val2017.json: COCO caption file not found"):
        load_dataset("coco", root, split_name="val2017")
    cap = root / "annotations" / "captions_train2017.json"
    cap.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"captions_train2017.json:1: malformed JSON"):
        load_dataset("coco", root)
    cap.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": []}))
    with pytest.raises(DataError, match=r"image 1: missing or bad field 'width'"):
        load_dataset("coco", root)
    cap.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "width": 3, "height": 4}],
                               "annotations": [{"id": 9, "image_id": 1, "caption": "..."}]}))
    with pytest.warns(DataWarning, match=r"1 empty caption\(s\) dropped, annotation ids \[9\]"):
        recs = load_dataset("coco", root)
    assert recs[0].sentences == []
    with pytest.raises(DataError, match="1 of 1 image file"), pytest.warns(DataWarning):
        load_dataset("coco", root, check_images=True)


@pytest.mark.shared
def test_coco_mini_shared(shared_datasets):
    root = shared_datasets / "coco-mini"
    recs = load_dataset("coco", root, split_name="train2017", check_images=True)
    assert len(recs) == 80
    assert all(len(r.sentences) == 5 for r in recs)
    assert sum(len(r.regions) for r in recs) > 80
    raw = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    n_plain = sum(1 for a in raw["annotations"] if not a["iscrowd"])
    assert sum(len(r.regions) for r in recs) == n_plain
    for r in recs:
        for g in r.regions:
            x1, y1, x2, y2 = g.box
            assert 0 <= x1 < x2 <= r.width + 1 and 0 <= y1 < y2 <= r.height + 1
    from PIL import Image

    with Image.open(recs[0].path) as im:
        assert im.size == (recs[0].width, recs[0].height)
