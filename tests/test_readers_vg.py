"""Visual Genome reader, on a tiny dataset written in the real format."""
import json
import os

import pytest
from dvsa.data.catalog import load_dataset
from dvsa.data.readers.common import DataWarning
from dvsa.data.records import DataError


def write_vg(root, n=4):
    root.mkdir(parents=True)
    desc, data = [], []
    for k in range(n):
        iid = 1 + k * 9  # ids 1, 10, 19, 28: numeric order differs from text order
        desc.append({"id": iid, "regions": [
            {"region_id": 100 * iid, "image_id": iid, "phrase": "a red ball", "x": 1, "y": 2, "width": 3,
             "height": 4},
            {"region_id": 100 * iid + 1, "image_id": iid, "phrase": "grass on the ground", "x": 0, "y": 5,
             "width": 10, "height": 2},
        ]})
        data.append({"image_id": iid, "width": 12 + k, "height": 9, "url": f"http://example/{iid}.jpg"})
    (root / "region_descriptions.json").write_text(json.dumps(desc))
    (root / "image_data.json").write_text(json.dumps(data))
    (root / "VG_100K").mkdir()
    (root / "VG_100K_2").mkdir()
    for k, d in enumerate(desc):
        (root / ("VG_100K" if k % 2 else "VG_100K_2") / f"{d['id']}.jpg").write_bytes(b"")
    return root


def test_vg_fixture(tmp_path):
    root = write_vg(tmp_path / "vg")
    (root / "densecap_splits.json").write_text(json.dumps({"train": [1, 19, 28], "val": [10], "test": []}))
    recs = load_dataset("visual_genome", root, check_images=True)
    assert [r.id for r in recs] == ["1", "10", "19", "28"]
    assert [r.split for r in recs] == ["train", "val", "train", "train"]
    r = recs[1]
    assert (r.width, r.height) == (13, 9) and r.sentences == []
    assert r.path == os.path.abspath(root / "VG_100K" / "10.jpg")
    assert recs[0].path == os.path.abspath(root / "VG_100K_2" / "1.jpg")
    assert [(g.box, g.text, g.id) for g in r.regions] == [
        ([1.0, 2.0, 4.0, 6.0], "a red ball", "1000"), ([0.0, 5.0, 10.0, 7.0], "grass on the ground", "1001")]
    assert [r.id for r in load_dataset("visual_genome", root, limit=2)] == ["1", "10"]


def test_vg_default_split_and_bad_regions(tmp_path):
    root = write_vg(tmp_path / "vg", n=5)
    desc = json.loads((root / "region_descriptions.json").read_text())
    desc[0]["regions"][0]["phrase"] = "  "
    desc[1]["regions"][1]["width"] = 0
    (root / "region_descriptions.json").write_text(json.dumps(desc))
    os.remove(root / "image_data.json")
    with pytest.warns(DataWarning, match=r"2 region\(s\) with an empty phrase or no area skipped"):
        recs = load_dataset("visual_genome", root)
    assert sorted(r.split for r in recs) == ["test", "train", "train", "train", "val"]
    assert [len(r.regions) for r in recs] == [1, 1, 2, 2, 2] and recs[0].width is None


def test_vg_bad_files(tmp_path):
    root = write_vg(tmp_path / "vg")
    desc = json.loads((root / "region_descriptions.json").read_text())
    del desc[2]["regions"][1]["height"]
    (root / "region_descriptions.json").write_text(json.dumps(desc))
    with pytest.raises(DataError, match=r"\[2\].regions\[1\] \(image 19\): missing field 'height'"):
        load_dataset("visual_genome", root)
    (root / "region_descriptions.json").write_text("[{]")
    with pytest.raises(DataError, match=r"region_descriptions.json:1: malformed JSON"):
        load_dataset("visual_genome", root)
    with pytest.raises(DataError, match="file not found"):
        load_dataset("visual_genome", tmp_path)
