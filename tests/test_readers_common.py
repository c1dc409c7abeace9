import pytest
from dvsa.data.readers.common import (
    DataWarning,
    deterministic_split,
    fill_sizes,
    find_image_dir,
    image_size,
    read_json,
    read_lines,
    read_xml,
    report_unknown,
    scaled_holdout,
)
from dvsa.data.records import DataError, ImageRecord, Sentence
from dvsa.data.text import Vocabulary, tokenize
from fixtures.formats import make_image


def test_report_unknown():
    def s(i, raw):
        return Sentence(id=i, raw=raw, tokens=tokenize(raw))

    recs = [ImageRecord(id="a", path="a.jpg", sentences=[s(0, "a dog"), s(1, "Zyzzyva quokka!")]),
            ImageRecord(id="b", path="b.jpg", sentences=[s(2, "quokka dog")])]
    assert report_unknown(recs, Vocabulary(["a", "dog"])) == [
        {"image_id": "a", "sentence_id": 1, "raw": "Zyzzyva quokka!"}]


def test_deterministic_split():
    ids = [str(k) for k in range(50)]
    a = deterministic_split(ids, 5, 7)
    assert a == deterministic_split(list(reversed(ids)), 5, 7)  # input order does not matter
    assert sorted(a.values()).count("val") == 5 and list(a.values()).count("test") == 7
    assert deterministic_split(ids, 5, 7, seed=1) != a
    assert [scaled_holdout(n) for n in (0, 2, 3, 10, 4999, 5000, 31783)] == [0, 0, 1, 2, 999, 1000, 1000]


def test_read_errors_name_file_and_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{\n "a": 1,\n "b": }\n')
    with pytest.raises(DataError) as e:
        read_json(p)
    assert e.value.line == 3 and str(p) in str(e.value)
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(p)
    t = tmp_path / "x.txt"
    t.write_bytes(b"ok\nfine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"x.txt:3: not UTF-8"):
        list(read_lines(t))
    t.write_text("\ufeffone\n\n  \ntwo\r\n")
    assert list(read_lines(t)) == [(1, "one"), (4, "two")]
    with pytest.raises(DataError, match="file not found"):
        list(read_lines(tmp_path / "none.txt"))
    (tmp_path / "x.xml").write_text("<a><b></a>")
    with pytest.raises(DataError, match=r"x.xml:1: malformed XML"):
        read_xml(tmp_path / "x.xml")
    with pytest.raises(DataError, match="cannot read"):
        read_xml(tmp_path / "none.xml")


def test_image_size_and_fill_sizes(tmp_path):
    make_image(tmp_path / "a.png", size=(7, 3))
    make_image(tmp_path / "b.jpg", size=(4, 9))
    (tmp_path / "c.jpg").write_bytes(b"garbage")
    assert image_size(tmp_path / "a.png") == (7, 3)
    recs = [ImageRecord(id=n, path=str(tmp_path / f)) for n, f in (("a", "a.png"), ("b", "b.jpg"), ("c", "c.jpg"))]
    with pytest.warns(DataWarning, match=r"c.jpg: 1 image\(s\) could not be read"):
        fill_sizes(recs)
    assert [(r.width, r.height) for r in recs] == [(7, 3), (4, 9), (None, None)]


def test_find_image_dir(tmp_path):
    make_image(tmp_path / "B" / "x.jpg")
    (tmp_path / "A").mkdir()
    assert find_image_dir(tmp_path, ["A", "B"], "x.jpg") == tmp_path / "B"
    assert find_image_dir(tmp_path, ["A", "B"], "y.jpg") == tmp_path / "A"
    assert find_image_dir(tmp_path, ["C"], None) == tmp_path / "C"
    make_image(tmp_path / "z.jpg")
    assert find_image_dir(tmp_path, ["A", "B"], "z.jpg") == tmp_path
