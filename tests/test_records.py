import json

import pytest
from dvsa.data.records import (
    DataError,
    ImageRecord,
    Phrase,
    Region,
    Sentence,
    select_split,
)


def _record(i="1", split="train"):
    return ImageRecord(
        id=i, path=f"/d/{i}.jpg", width=30, height=20, split=split,
        sentences=[Sentence(id=7, raw="A dog .", tokens=["a", "dog"]), Sentence(id=8, raw="Dog", tokens=["dog"])],
        regions=[Region(box=[1.0, 2.0, 10.5, 12.0], text="a dog", label="dog", id="3"), Region(box=[0, 0, 30, 20])],
        phrases=[Phrase(sentence_id=7, start=0, end=2, text="A dog", region_ids=["3"])],
    )


def test_round_trip_through_json():
    r = _record()
    d = json.loads(json.dumps(r.to_dict()))
    back = ImageRecord.from_dict(d)
    assert back == r
    assert isinstance(back.sentences[0], Sentence) and isinstance(back.regions[0], Region)
    assert isinstance(back.phrases[0], Phrase) and back.phrases[0].region_ids == ["3"]


def test_from_dict_defaults_and_id_as_string():
    r = ImageRecord.from_dict({"id": 42, "path": "x.jpg"})
    assert r == ImageRecord(id="42", path="x.jpg")
    assert (r.width, r.height, r.split, r.sentences, r.regions, r.phrases) == (None, None, "train", [], [], [])


def test_select_split():
    recs = [_record("a", "train"), _record("b", "restval"), _record("c", "val"), _record("d", "test"),
            _record("e", "none")]
    assert [r.id for r in select_split(recs, "train")] == ["a", "b"]
    assert [r.id for r in select_split(recs, "restval")] == ["b"]
    assert [r.id for r in select_split(recs, "val")] == [r.id for r in select_split(recs, "dev")] == ["c"]
    assert [r.id for r in select_split(recs, "test")] == ["d"]
    assert [r.id for r in select_split(recs, "none")] == ["e"]
    with pytest.raises(DataError, match=r"split 'test' is empty \(splits present: \['train', 'val'\]\)"):
        select_split([_record("a", "train"), _record("c", "val")], "test")
    with pytest.raises(DataError, match="is empty"):
        select_split([], "train")


def test_data_error_names_file_and_line():
    e = DataError("/d/captions.txt", "bad line", 12)
    assert str(e) == "/d/captions.txt:12: bad line" and e.path == "/d/captions.txt" and e.line == 12
    assert str(DataError("x.json", "bad")) == "x.json: bad" and isinstance(e, ValueError)
