"""Flickr30k Entities reader, on a tiny dataset written in the real format."""
import os
from collections import Counter

import pytest
from dvsa.data.catalog import load_dataset
from dvsa.data.readers.common import DataWarning
from dvsa.data.readers.flickr30k_entities import parse_sentence
from dvsa.data.records import DataError
from dvsa.data.text import tokenize
from fixtures.formats import make_image

SENTS = {
    "100": [
        "[/EN#18/people A man] with [/EN#19/bodyparts pierced ears] is wearing [/EN#20/clothing glasses] .",
        "[/EN#18/people Someone] stands near [/EN#21/scene a wall-mural] and [/EN#0/notvisual it] .",
    ],
    "200": ["[/EN#30/animals/other Two dogs] play in [/EN#31/scene the snow] ."],
    "300": ["[/EN#40/people A child] ."],
}

XML = {
    "100": """<annotation><filename>100.jpg</filename><size><width>50</width><height>40</height><depth>3</depth>
</size>
<object><name>18</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
<object><name>19</name><name>20</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>8</ymax></bndbox>
</object>
<object><name>20</name><bndbox><xmin>11</xmin><ymin>5</ymin><xmax>15</xmax><ymax>8</ymax></bndbox></object>
<object><name>21</name><nobndbox>1</nobndbox><scene>1</scene></object>
</annotation>""",
    "200": """<annotation><size><width>30</width><height>20</height></size>
<object><name>30</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>12</xmax><ymax>10</ymax></bndbox></object>
<object><name>30</name><bndbox><xmin>14</xmin><ymin>2</ymin><xmax>25</xmax><ymax>10</ymax></bndbox></object>
<object><name>31</name><nobndbox>1</nobndbox><scene>1</scene></object>
</annotation>""",
    "300": """<annotation><size><width>10</width><height>10</height></size></annotation>""",
}


def write_entities(root, splits=True):
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i, lines in SENTS.items():
        (root / "Sentences" / f"{i}.txt").write_text("\n".join(lines) + "\n")
        (root / "Annotations" / f"{i}.xml").write_text(XML[i])
        make_image(root / "flickr30k-images" / f"{i}.jpg")
    if splits:
        (root / "train.txt").write_text("100\n300\n")
        (root / "val.txt").write_text("200\n")
        (root / "test.txt").write_text("")
    return root


def test_parse_sentence_spans_match_tokenize():
    line = "[/EN#1/people A man] in [/EN#2/clothing a t-shirt]s waves [/EN#3/other !!] ."
    raw, tokens, phrases = parse_sentence(line)
    assert raw == "A man in a t-shirts waves !! ."
    assert tokens == tokenize(raw) == ["a", "man", "in", "a", "t", "shirts", "waves"]
    assert [(s, e, w, i, t) for s, e, w, i, t in phrases] == [
        (0, 2, "A man", "1", ["people"]), (3, 6, "a t-shirt", "2", ["clothing"])]  # '!!' has no word: dropped
    with pytest.raises(DataError, match=r"x.txt:3: malformed phrase markup"):
        parse_sentence("[/EN#1/people A man with no end", "x.txt", 3)


def test_entities_fixture(tmp_path):
    root = write_entities(tmp_path / "ent")
    recs = {r.id: r for r in load_dataset("flickr30k_entities", root, check_images=True)}
    assert {i: r.split for i, r in recs.items()} == {"100": "train", "200": "val", "300": "train"}
    r = recs["100"]
    assert (r.width, r.height) == (50, 40) and r.path == os.path.abspath(root / "flickr30k-images" / "100.jpg")
    assert [s.id for s in r.sentences] == [0, 1] and recs["200"].sentences[0].id == 2
    assert r.sentences[0].raw == "A man with pierced ears is wearing glasses ."
    assert all(s.tokens == tokenize(s.raw) for rec in recs.values() for s in rec.sentences)
    # one region per (entity, box); a box named by two entities gives two regions; VOC 1-based -> [x1-1, y1-1, x2, y2]
    assert [(g.id, g.box, g.label) for g in r.regions] == [
        ("18", [0.0, 1.0, 20.0, 30.0], "people"), ("19", [4.0, 4.0, 9.0, 8.0], "bodyparts"),
        ("20", [4.0, 4.0, 9.0, 8.0], "clothing"), ("20", [10.0, 4.0, 15.0, 8.0], "clothing")]
    assert [(p.sentence_id, p.start, p.end, p.text, p.region_ids) for p in r.phrases] == [
        (0, 0, 2, "A man", ["18"]), (0, 3, 5, "pierced ears", ["19"]), (0, 7, 8, "glasses", ["20"]),
        (1, 0, 1, "Someone", ["18"]), (1, 3, 6, "a wall-mural", []), (1, 7, 8, "it", [])]  # scene / notvisual
    for p in r.phrases:
        sent = next(s for s in r.sentences if s.id == p.sentence_id)
        assert sent.tokens[p.start:p.end] == tokenize(p.text)
    assert Counter(g.id for g in recs["200"].regions) == {"30": 2}
    assert recs["200"].regions[0].label == "animals/other"
    assert recs["300"].regions == [] and recs["300"].phrases[0].region_ids == []


def test_entities_default_split_and_missing_parts(tmp_path):
    root = write_entities(tmp_path / "ent", splits=False)
    os.remove(root / "Annotations" / "200.xml")
    with pytest.warns(DataWarning, match="1 image.* without an annotation file"):
        recs = {r.id: r for r in load_dataset("flickr30k_entities", root)}
    assert Counter(r.split for r in recs.values()) == {"train": 1, "val": 1, "test": 1}
    assert recs["200"].regions == [] and recs["200"].width is None
    assert all(p.region_ids == [] for p in recs["200"].phrases)


def test_entities_bad_files(tmp_path):
    root = write_entities(tmp_path / "ent")
    (root / "Annotations" / "100.xml").write_text("<annotation><object><name>1</name></annotation>")
    with pytest.raises(DataError, match=r"100.xml:1: malformed XML"):
        load_dataset("flickr30k_entities", root)
    (root / "Annotations" / "100.xml").write_text(
        "<annotation><object><name>1</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    with pytest.raises(DataError, match=r"100.xml: <object> 1 \(1\): malformed <bndbox>"):
        load_dataset("flickr30k_entities", root)
    (root / "Annotations" / "100.xml").write_text(XML["100"])
    (root / "Sentences" / "200.txt").write_text("[/EN#30/animals Two dogs] play .\n[/EN#31/scene the snow .\n")
    with pytest.raises(DataError, match=r"200.txt:2: malformed phrase markup"):
        load_dataset("flickr30k_entities", root)
    (root / "Sentences" / "200.txt").write_text("[/EN#30/animals Two dogs] play .\n... !\n")
    with pytest.warns(DataWarning, match=r"200.txt: line 2: empty sentence"):
        recs = {r.id: r for r in load_dataset("flickr30k_entities", root)}
    assert len(recs["200"].sentences) == 1
    with pytest.raises(DataError, match="'Sentences' folder not found"):
        load_dataset("flickr30k_entities", tmp_path)
