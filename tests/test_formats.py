"""The result formats (generate.formats): COCO caption results and DenseCap's results.json."""
import json

import pytest
from dvsa.data.errors import DataError
from dvsa.generate import metrics
from dvsa.generate.formats import (
    DENSECAP_RESULT_KEYS,
    coco_image_id,
    from_densecap_results,
    read_coco_results,
    read_densecap_results,
    result_image_id,
    to_coco_results,
    to_densecap_results,
    write_coco_results,
    write_densecap_results,
)
from PIL import Image


def test_coco_image_ids():
    assert coco_image_id("val2014/COCO_val2014_000000391895.jpg") == 391895
    assert coco_image_id("000000000042.jpg") == 42
    assert coco_image_id("COCO_train2014_000000000009.png") == 9
    assert coco_image_id("photos/1000268201_693b08cb0e.jpg") == "1000268201_693b08cb0e"
    assert coco_image_id("dog.png") == "dog"
    assert coco_image_id("1000092795.jpg") == 1000092795  # Flickr30k: integer names are integer ids
    assert result_image_id("42") == 42 and result_image_id(7) == 7 and result_image_id("042") == "042"
    assert result_image_id("img.7") == "img.7"  # a dataset id is not a path: nothing is cut off


def test_coco_results_round_trip(tmp_path):
    caps = [{"image_id": "COCO_val2014_000000000001", "caption": "a dog", "logprob": -1.5, "path": "x/1.jpg"},
            {"image_id": "cat", "caption": "a cat", "logprob": -2.0, "path": "x/cat.jpg"}]
    assert to_coco_results(caps) == [{"image_id": 1, "caption": "a dog"}, {"image_id": "cat", "caption": "a cat"}]
    assert to_coco_results(caps, extras=True)[0] == {"image_id": 1, "caption": "a dog", "logprob": -1.5,
                                                     "path": "x/1.jpg"}
    p = write_coco_results(tmp_path / "r.json", caps, extras=True)
    assert read_coco_results(p) == to_coco_results(caps, extras=True)
    # generate eval writes with the same function
    assert metrics.coco_results({"1": "a", "b": "c"}) == to_coco_results({"1": "a", "b": "c"})
    metrics.write_coco_results(tmp_path / "m.json", {"COCO_val2014_000000000001": "a dog"})
    assert read_coco_results(tmp_path / "m.json") == [{"image_id": 1, "caption": "a dog"}]
    with pytest.raises(ValueError, match="two captions"):
        to_coco_results({"1": "a", "000000000001": "b"})


@pytest.mark.parametrize("text, match", [('{"a": 1}', "JSON list"), ('[{"image_id": 1}]', "entry 0"),
                                         ('[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]',
                                          "twice"), ("[{", "not JSON")])
def test_coco_results_reader_names_the_fault(tmp_path, text, match):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_coco_results(p)
    assert str(p) in str(e.value)


def _dense_results(tmp_path):
    Image.new("RGB", (64, 48), (0, 200, 0)).save(tmp_path / "a.png")
    return [{"image_id": "a", "path": str(tmp_path / "a.png"), "width": 64, "height": 48,
             "regions": [{"box": [1.0, 2.0, 30.0, 40.0], "caption": "a green box", "score": -0.5, "logprob": -2.0,
                          "row": 3},
                         {"box": [10.0, 10.5, 60.0, 45.0], "caption": "grass", "score": -1.25, "logprob": -2.5,
                          "row": 1}]},
            {"image_id": "b", "path": None, "width": 10, "height": 8, "regions": []}]


def test_densecap_layout_and_round_trip(tmp_path):
    results = _dense_results(tmp_path)
    opt = {"checkpoint": "gen.pt", "beam": 3, "max_len": 16, "top": 10, "box_weight": 1.0}
    p = write_densecap_results(tmp_path / "dense.json", results, opt, failed=[{"path": "bad.jpg", "reason": "x"}])
    doc = json.loads(p.read_text())
    assert set(doc) == {"results", "opt"}  # exactly DenseCap's layout
    assert all(set(r) == set(DENSECAP_RESULT_KEYS) for r in doc["results"])
    first = doc["results"][0]
    assert first["img_name"] == "a.png"
    assert first["boxes"] == [[1.0, 2.0, 29.0, 38.0], [10.0, 10.5, 50.0, 34.5]]  # x, y, w, h
    assert first["captions"] == ["a green box", "grass"] and first["scores"] == [-0.5, -1.25]
    assert doc["opt"]["beam"] == 3 and doc["opt"]["checkpoint"] == "gen.pt"
    assert doc["opt"]["failed"] == [{"path": "bad.jpg", "reason": "x"}] and len(doc["opt"]["image_info"]) == 2
    back = read_densecap_results(p)
    assert [r["image_id"] for r in back] == ["a", "b"]
    for got, want in zip(back, results):
        assert (got["path"], got["width"], got["height"]) == (want["path"], want["width"], want["height"])
        assert [d["box"] for d in got["regions"]] == [d["box"] for d in want["regions"]]  # x1, y1, x2, y2 again
        assert [(d["caption"], d["score"]) for d in got["regions"]] == [(d["caption"], d["score"])
                                                                       for d in want["regions"]]


def test_a_file_from_densecap_itself(tmp_path):
    """DenseCap's run_model.lua writes no image_info: ids from img_name, pictures and sizes from the folder."""
    Image.new("RGB", (50, 40)).save(tmp_path / "cat.jpg")
    doc = {"results": [{"img_name": "cat.jpg", "boxes": [[5, 5, 10, 20]], "captions": ["a cat"], "scores": [2.5]},
                       {"img_name": "gone.jpg", "boxes": [[0, 0, 30, 12]], "captions": ["x"], "scores": [1.0]}],
           "opt": {"checkpoint": "densecap-pretrained-vgg16.t7"}}
    (tmp_path / "results.json").write_text(json.dumps(doc))
    res = read_densecap_results(tmp_path / "results.json")
    assert res[0]["image_id"] == "cat" and res[0]["path"] == str(tmp_path / "cat.jpg")
    assert (res[0]["width"], res[0]["height"]) == (50, 40)
    assert res[0]["regions"] == [{"box": [5.0, 5.0, 15.0, 25.0], "caption": "a cat", "score": 2.5}]
    assert (res[1]["width"], res[1]["height"]) == (30, 12)  # unreadable picture: the boxes' extent
    assert from_densecap_results([{"image_id": "old", "regions": []}]) == [{"image_id": "old", "regions": []}]


def test_densecap_reader_names_the_fault(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"results": [{"img_name": "a.jpg", "boxes": [[0, 0, 1, 1]], "captions": [],
                                          "scores": []}]}))
    with pytest.raises(DataError, match=r"results\[0\]"):
        read_densecap_results(p)
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="not a DenseCap results document"):
        read_densecap_results(p)


def test_dense_html_reads_the_densecap_layout(tmp_path):
    from dvsa.generate.dense_html import dense_html

    doc = to_densecap_results(_dense_results(tmp_path), {"beam": 1}, failed=[{"path": "bad.jpg", "reason": "corrupt"}])
    page = dense_html(doc)
    assert page.count("data:image/jpeg;base64,") == 1 and page.count('fill="none"') == 2
    assert "a green box" in page and "bad.jpg: corrupt" in page
    assert 'width="29.0" height="38.0"' in page  # the box drawn from x, y, w, h back in pixels
