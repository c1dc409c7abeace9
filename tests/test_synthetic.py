import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dvsa.data import synthetic
from dvsa.data.catalog import load_dataset
from dvsa.data.records import DataError
from dvsa.data.synthetic import (
    PALETTE,
    SynthConfig,
    iter_scenes,
    make_scene,
    write_synthetic,
)
from dvsa.data.synthetic_text import (
    COLOUR_WORDS,
    CONTENT_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    content_word_targets,
    uncovered_content_words,
)
from dvsa.data.text import tokenize
from dvsa.scripts import cli
from dvsa.scripts.synth import main
from PIL import Image

SMALL = dict(n_train=8, n_val=3, n_test=3, size=128, seed=3)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth") / "a", **SMALL)


@pytest.fixture(scope="module")
def records(synth_dir):
    return load_dataset("synthetic", str(synth_dir))


@pytest.fixture(scope="module")
def groundtruth(synth_dir):
    return json.loads((synth_dir / "groundtruth.json").read_text())


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((folder / "images").glob("*.png"))}


def test_same_seed_same_bytes_and_pixels(tmp_path, synth_dir):
    again = write_synthetic(tmp_path / "b", **SMALL)
    for name in ("dataset_synthetic.json", "groundtruth.json"):
        assert (again / name).read_bytes() == (synth_dir / name).read_bytes()
    a, b = _pixels(synth_dir), _pixels(again)
    assert list(a) == list(b) and len(a) == 14
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = write_synthetic(tmp_path / "c", **{**SMALL, "seed": 4})
    assert (other / "dataset_synthetic.json").read_bytes() != (synth_dir / "dataset_synthetic.json").read_bytes()
    assert not np.array_equal(_pixels(other)["train_00000.png"], a["train_00000.png"])


def test_worker_processes_write_the_same_files(tmp_path, monkeypatch):
    # a set small enough to be quick, large enough for the pool; one process is the slow twin
    monkeypatch.setattr(synthetic, "POOL_MIN_SCENES", 4)
    cfg = {**SMALL, "n_train": 40, "size": 64}
    one = write_synthetic(tmp_path / "one", workers=1, progress=False, **cfg)
    two = write_synthetic(tmp_path / "two", workers=2, progress=False, **cfg)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 48 and files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_val_and_test_do_not_depend_on_train_size():
    small, big = SynthConfig(**SMALL), SynthConfig(**{**SMALL, "n_train": 20})
    s1, r1 = make_scene(small, "val", 1)
    s2, r2 = make_scene(big, "val", 1)
    assert np.array_equal(s1.pixels, s2.pixels) and s1.objects == s2.objects
    # layout and text streams do not depend on whether the pixels were painted
    s3, _ = make_scene(small, "val", 1, render=False)
    assert s3.pixels is None and s3.objects == s1.objects and s3.background == s1.background


def test_counts_splits_and_sentences(synth_dir, records):
    assert Counter(r.split for r in records) == {"train": 8, "val": 3, "test": 3}
    assert len(load_dataset("synthetic", str(synth_dir), split="val")) == 3
    ds = json.loads((synth_dir / "dataset_synthetic.json").read_text())
    assert ds["dataset"] == "synthetic"
    sentids = [sid for e in ds["images"] for sid in e["sentids"]]
    assert sentids == list(range(len(sentids)))
    for e in ds["images"]:
        assert e["filepath"] == "images" and (synth_dir / "images" / e["filename"]).is_file()
        assert [s["sentid"] for s in e["sentences"]] == e["sentids"]
        assert all(s["imgid"] == e["imgid"] for s in e["sentences"])
        assert all(s["tokens"] == tokenize(s["raw"]) for s in e["sentences"])
    for r in records:
        assert len(r.sentences) == 5 and len({s.raw for s in r.sentences}) == 5
        with Image.open(r.path) as im:
            assert im.size == (r.width, r.height) == (128, 128) and im.mode == "RGB"


def _nearest_colour(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into PALETTE of the nearest palette colour per pixel [H, W], and the distance to it."""
    pal = np.array(list(PALETTE.values()), np.float32)
    d = np.linalg.norm(pixels[..., None, :].astype(np.float32) - pal, axis=-1)
    return d.argmin(-1), d.min(-1)


def test_boxes_match_drawn_pixels():
    """Each object's colour dominates its box, and the box is tight around the pixels of that colour."""
    cfg = SynthConfig(n_train=30, n_val=0, n_test=0, size=160, seed=11)
    names = list(PALETTE)
    checked_tight = 0
    for _, _, scene, _ in iter_scenes(cfg):
        near, dist = _nearest_colour(scene.pixels)
        for o in scene.objects:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
            assert min(x2 - x1, y2 - y1) >= 0.14 * scene.width  # ~27 px at 192
            k = names.index(o.colour)
            match = (near == k) & (dist < 60)
            inside = match[y1:y2, x1:x2]
            counts = np.bincount(near[y1:y2, x1:x2][dist[y1:y2, x1:x2] < 60], minlength=len(names))
            assert counts.argmax() == k, (o, counts)
            assert inside.mean() > 0.25, (o, inside.mean())
            # tightness, where no other object of the same colour is near
            pad = [x1 - 4, y1 - 4, x2 + 4, y2 + 4]
            if any(q.colour == o.colour and q.id != o.id and q.box[0] < pad[2] and pad[0] < q.box[2]
                   and q.box[1] < pad[3] and pad[1] < q.box[3] for q in scene.objects):
                continue
            occluded = any(q.id > o.id and q.box[0] < x2 and x1 < q.box[2] and q.box[1] < y2 and y1 < q.box[3]
                           for q in scene.objects)
            if occluded:
                continue
            win = match[max(0, pad[1]):pad[3], max(0, pad[0]):pad[2]]
            ys, xs = np.nonzero(win)
            got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) + [max(0, pad[0]), max(0, pad[1])] * 2
            assert np.abs(got - np.array(o.box)).max() <= 2, (o, got)
            checked_tight += 1
        for d in scene.distractors:
            assert all(not (d["box"][0] < o.box[2] and o.box[0] < d["box"][2] and d["box"][1] < o.box[3]
                            and o.box[1] < d["box"][3]) for o in scene.objects)
    assert checked_tight > 40


def test_phrases_point_at_their_object(records, groundtruth):
    n_targets = 0
    for r in records:
        g = groundtruth["images"][r.id]
        objs = {str(o["id"]): o for o in g["objects"]}
        tokens = {s.id: s.tokens for s in r.sentences}
        assert [reg.id for reg in r.regions] == list(objs)
        for reg in r.regions:
            o = objs[reg.id]
            assert reg.label == o["shape"] and reg.box == [float(v) for v in o["box"]]
            assert reg.text == o["description"] and reg.text.split()[-3:] == [o["size"], o["colour"], o["shape"]]
        named = set()
        for p in r.phrases:
            (rid,) = p.region_ids
            o = objs[rid]
            words = tokens[p.sentence_id][p.start:p.end]
            assert p.text == " ".join(words)
            assert words[0] in ("a", "an", "the") and words[-1] in SHAPE_WORDS[o["shape"]]
            for w in words[1:-1]:
                assert w in COLOUR_WORDS[o["colour"]] or w in SIZE_WORDS[o["size"]], (w, o)
            named.add(rid)
        assert named == {k for k, o in objs.items() if o["mentioned"]}
        assert uncovered_content_words(r) == []
        for sid, t, rid in content_word_targets(r):
            w = tokens[sid][t]
            o = objs[rid]
            assert w in CONTENT_WORDS
            assert w in SHAPE_WORDS[o["shape"]] + COLOUR_WORDS[o["colour"]] + SIZE_WORDS[o["size"]]
            n_targets += 1
    assert n_targets > 5 * len(records)


def test_default_vocabulary_is_rich_and_frequent():
    """At the default config every train word is seen >= 5 times, and all content words are used."""
    words = Counter()
    unmentioned = blobs = 0
    for _, split, scene, sents in iter_scenes(SynthConfig(), render=False):
        unmentioned += any(not o.mentioned for o in scene.objects)
        blobs += bool(scene.distractors)
        if split == "train":
            words.update(t for s in sents for t in s.tokens)
    assert min(words.values()) >= 5, [w for w, c in words.items() if c < 5]
    assert CONTENT_WORDS <= set(words) and len(words) > 80
    assert unmentioned > 20 and blobs > 50


def test_reader_errors_name_the_file(tmp_path, synth_dir):
    with pytest.raises(DataError, match="dataset_synthetic.json"):
        load_dataset("synthetic", str(tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset_synthetic.json").write_bytes((synth_dir / "dataset_synthetic.json").read_bytes())
    (bad / "groundtruth.json").write_text('{"images":\n {,}')
    with pytest.raises(DataError, match=r"groundtruth.json:2"):
        load_dataset("synthetic", str(bad))


def test_cli_writes_folder_and_preview(tmp_path, capsys):

    out = tmp_path / "cli"
    assert main(["--out", str(out), "--train", "4", "--val", "1", "--test", "1", "--size", "96", "--seed", "2",
                 "--preview", "4"]) == 0
    assert "6 images" in capsys.readouterr().out
    assert len(list((out / "images").glob("*.png"))) == 6 and (out / "preview.png").is_file()
    gt = json.loads((out / "groundtruth.json").read_text())
    assert gt["config"]["n_train"] == 4 and gt["config"]["size"] == 96 and len(gt["images"]) == 6
    before = (out / "images" / "train_00000.png").stat().st_mtime_ns
    assert main(["--out", str(out), "--train", "4", "--val", "1", "--test", "1", "--size", "96", "--seed", "2"]) == 0
    assert (out / "images" / "train_00000.png").stat().st_mtime_ns == before  # complete folder is kept
    assert main(["--out", str(out), "--train", "2", "--val", "1", "--test", "0", "--size", "96"]) == 0
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == ["train_00000", "train_00001", "val_00000"]
    assert cli.main(["synth", "--out", str(out), "--size", "10"]) == 2  # one line, exit 2 (a usage fault)
    assert "size must be >= 64 px" in capsys.readouterr().err
